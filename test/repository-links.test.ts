/**
 * The repository stands alone: every relative Markdown link and every repository path cited in
 * a code comment names a file or folder that exists in the repository, and nothing cites the
 * design notes the repository does not ship (DESIGN.md, ../shared).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' })
  .split('\n')
  .filter((f) => f && existsSync(join(ROOT, f)));

/** Top-level folders a cited path may start with. */
const TOP = ['src', 'connectors', 'test', 'docs', 'config', 'deploy', 'bench', 'scripts'];
const CITED_PATH = new RegExp(`(?<![\\w./-])(?:\\.{1,2}/)?(?:${TOP.join('|')})/[\\w./-]*[\\w/]`, 'g');
const COMMENT = /^\s*(?:\/\/|\/\*|\*|#)|\s\/\/\s|\/\*/;
const CODE = /\.(ts|js|mjs|sh|ya?ml|json)$|Dockerfile$|\.ci\/run$/;

/** A placeholder (`connectors/<name>/`, `src/sinks/*`) names no one file. */
const isPattern = (path: string) => /[<>*{}$]/.test(path);

function exists(from: string, path: string): boolean {
  const clean = path.replace(/[#?].*$/, '').replace(/\/$/, '');
  const target = clean.startsWith('.') ? resolve(ROOT, dirname(from), clean) : resolve(ROOT, clean);
  // Compiled paths (dist/…/x.js) are cited by their TypeScript source.
  return existsSync(target) || existsSync(target.replace(/\.js$/, '.ts'));
}

test('relative Markdown links name files in the repository', () => {
  const broken: string[] = [];
  for (const file of files.filter((f) => f.endsWith('.md'))) {
    for (const [, target] of readFileSync(join(ROOT, file), 'utf8').matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^(?:[a-z]+:|#)/i.test(target) || isPattern(target)) continue;
      if (!existsSync(resolve(ROOT, dirname(file), target.replace(/#.*$/, '')))) broken.push(`${file}: (${target})`);
    }
  }
  assert.deepEqual(broken, []);
});

test('paths cited in code comments name files in the repository', () => {
  const broken: string[] = [];
  for (const file of files.filter((f) => CODE.test(f))) {
    readFileSync(join(ROOT, file), 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (!COMMENT.test(line)) return;
        for (const [path] of line.matchAll(CITED_PATH)) {
          if (!isPattern(path) && !exists(file, path)) broken.push(`${file}:${i + 1}: ${path}`);
        }
      });
  }
  assert.deepEqual(broken, []);
});

test('nothing cites documents outside the repository', () => {
  const outside = /DESIGN\.md|\.\.\/shared\b|LIBRARY-NOTES/;
  const citing = files.filter((f) => (f.endsWith('.md') || CODE.test(f)) && f !== 'test/repository-links.test.ts' && outside.test(readFileSync(join(ROOT, f), 'utf8')));
  assert.deepEqual(citing, []);
});
