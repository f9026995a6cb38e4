/**
 * `npm run test:pg-versions`: the Postgres-facing test files (POSTGRES_TESTS) on each of
 * PostgreSQL 16, 17 and 18 (VERSIONS; `npm test` runs the whole suite on the default, 15), one
 * version after the other, with TRIBUTARY_PG_VERSION set. Prints each version's time and counts,
 * then one closing `N passed, N failed` line; exits 1 when anything failed.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

const VERSIONS = (process.env.TRIBUTARY_PG_VERSIONS ?? '16 17 18').split(/\s+/).filter(Boolean);

/** Test files (under test/, without .test.ts) run on every version; a file not there yet is skipped. */
const POSTGRES_TESTS = [
  'postgres-logical',
  'postgres-setup',
  'postgres-trigger',
  'poll',
  'capture-auto',
  'smart-sync',
  'state',
  'worker',
  'connector-contract',
  'postgres-payload-json',
];

const TEST_DIR = resolve(import.meta.dirname, '../test');

interface Counts {
  pass: number;
  fail: number;
  seconds: number;
  code: number | null;
}

/** Runs `files` on `version` with the TAP reporter, echoing its output; returns its summary. */
function runVersion(version: string, files: string[]): Promise<Counts> {
  const started = Date.now();
  const args = ['--test', '--test-concurrency=2', '--test-reporter=tap', ...files];
  const child = spawn(process.execPath, args, { env: { ...process.env, TRIBUTARY_PG_VERSION: version }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d;
    process.stdout.write(d);
  });
  return new Promise((done) =>
    child.on('close', (code) => {
      const count = (name: string) => Number(out.match(new RegExp(`^# ${name} (\\d+)$`, 'm'))?.[1] ?? 0);
      done({ pass: count('pass'), fail: count('fail') + (code !== 0 && count('fail') === 0 ? 1 : 0), seconds: (Date.now() - started) / 1000, code });
    }),
  );
}

async function main() {
  const files = POSTGRES_TESTS.map((name) => join(TEST_DIR, `${name}.test.js`)).filter((file) => existsSync(file));
  const results: Array<[string, Counts]> = [];
  for (const version of VERSIONS) {
    console.log(`\n# PostgreSQL ${version}: ${files.length} test files`);
    results.push([version, await runVersion(version, files)]);
  }
  console.log('');
  for (const [version, r] of results) {
    console.log(`# PostgreSQL ${version}: ${r.pass} passed, ${r.fail} failed in ${r.seconds.toFixed(0)} s`);
  }
  const pass = results.reduce((n, [, r]) => n + r.pass, 0);
  const fail = results.reduce((n, [, r]) => n + r.fail, 0);
  console.log(`pg-versions: ${pass} passed, ${fail} failed`);
  process.exitCode = fail > 0 || pass === 0 ? 1 : 0;
}

void main();
