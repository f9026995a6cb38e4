/**
 * `npm run docs:config`: renders every key of the configuration schema (src/config/schema.ts):
 * path, type, default, allowed values and description, into README.md between
 * `<!-- config-reference:start -->` and `<!-- config-reference:end -->`.
 * test/deploy.test.ts fails when README.md is not what this script would write.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { configSchema } from '../src/config/schema.js';

export const START = '<!-- config-reference:start -->';
export const END = '<!-- config-reference:end -->';
export const README = resolve(import.meta.dirname, '../../README.md');

type Schema = Record<string, any>;

/** Map keys that are names the user chooses, shown as placeholders. */
const NAMED: Record<string, string> = { sources: '<source>', lenses: '<lens>', sinks: '<sink>' };

const code = (value: unknown) => '`' + (typeof value === 'string' ? value : JSON.stringify(value)).replace(/\|/g, '\\|') + '`';
const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function typeOf(s: Schema): string {
  if (s.const !== undefined) return code(s.const);
  if (s.oneOf) return 'object';
  return [s.type ?? 'any'].flat().join(' or ') + (s.type === 'array' && s.items?.type && s.items.type !== 'object' ? ` of ${s.items.type}` : '');
}

function allowed(s: Schema): string {
  const values: string[] = [];
  if (s.enum) values.push(...s.enum.map(code));
  if (s.oneOf && s.discriminator) values.push(...s.oneOf.map((v: Schema) => code(v.properties[s.discriminator.propertyName].const)));
  const planned = s['x-notYetAvailable']?.length ? ` (planned: ${s['x-notYetAvailable'].join(', ')})` : '';
  const range = [s.minimum !== undefined ? `≥ ${s.minimum}` : '', s.maximum !== undefined ? `≤ ${s.maximum}` : ''].filter(Boolean).join(', ');
  return values.join(', ') + planned || range || (s['x-expected'] ? cell(s['x-expected']) : '');
}

/** One table row per key, depth first, in schema order. */
function rows(s: Schema, path: string, out: string[][], variant = ''): void {
  // Array items are described by their array's row; their keys get rows of their own.
  if (path && !path.endsWith('[]')) out.push([code(path), typeOf(s), s.default !== undefined ? code(s.default) : '', allowed(s), cell((variant ? `(${variant}) ` : '') + (s.description ?? ''))]);
  if (s.oneOf && s.discriminator) {
    const key = s.discriminator.propertyName;
    out.push([code(`${path}.${key}`), 'string', s.properties?.[key]?.default !== undefined ? code(s.properties[key].default) : '', allowed(s), 'Decides the other keys.']);
    for (const v of s.oneOf) {
      const name = `${key}: ${v.properties[key].const}`;
      for (const [prop, child] of Object.entries<Schema>(v.properties)) if (prop !== key) rows(child, `${path}.${prop}`, out, name);
    }
    return;
  }
  for (const [prop, child] of Object.entries<Schema>(s.properties ?? {})) rows(child, path ? `${path}.${prop}` : prop, out, variant);
  if (typeof s.additionalProperties === 'object') rows(s.additionalProperties, `${path}.${NAMED[path] ?? '<name>'}`, out, variant);
  if (s.items?.properties) rows(s.items, `${path}[]`, out, variant);
}

/** The generated section, markers included. */
export function renderConfigReference(): string {
  const out: string[][] = [];
  rows(configSchema as Schema, '', out);
  const table = [['key', 'type', 'default', 'allowed', 'description'], ['---', '---', '---', '---', '---'], ...out].map((r) => `| ${r.join(' | ')} |`);
  return [START, '<!-- generated from src/config/schema.ts by `npm run docs:config`; do not edit by hand -->', '', ...table, '', END].join('\n');
}

/** `readme` with its generated section replaced. */
export function withConfigReference(readme: string): string {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) throw new Error(`README.md has no ${START} … ${END} section`);
  return readme.slice(0, start) + renderConfigReference() + readme.slice(end + END.length);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  writeFileSync(README, withConfigReference(readFileSync(README, 'utf8')));
  console.log(`${README}: configuration reference updated`);
}
