/**
 * Throwaway PostgreSQL clusters for tests and benchmarks: initdb from the installed binaries
 * (once per machine, then copied), a free port on 127.0.0.1, wal_level=logical, trust auth.
 * Never touches the machine's shared server. When running as root the server runs as the
 * `postgres` user, as initdb demands.
 */
import { execFileSync, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { existsSync, mkdtempSync, renameSync, rmSync, appendFileSync, cpSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

const BIN = process.env.PG_BIN ?? findPgBin();
const TEMPLATE = join(tmpdir(), 'tributary-pg-template-15-v1');

function findPgBin(): string {
  for (const v of ['17', '16', '15', '14']) {
    const dir = `/usr/lib/postgresql/${v}/bin`;
    if (existsSync(join(dir, 'initdb'))) return dir;
  }
  throw new Error('PostgreSQL server binaries not found: install postgresql (apt-get install -y postgresql) or set PG_BIN');
}

function pgUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  return { uid, gid };
}

function run(cmd: string, args: string[], options: SpawnSyncOptions = {}): string {
  const user = pgUser();
  const res = spawnSync(join(BIN, cmd), args, { ...options, ...(user ?? {}), encoding: 'utf8' });
  if (res.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${res.status}): ${res.stderr || res.stdout}`);
  }
  return String(res.stdout);
}

function chownToPostgres(path: string): void {
  const user = pgUser();
  if (user) execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, path]);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function ensureTemplate(): void {
  if (existsSync(join(TEMPLATE, 'PG_VERSION'))) return;
  const building = mkdtempSync(join(tmpdir(), 'tributary-pg-build-'));
  chownToPostgres(building);
  const data = join(building, 'data');
  run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync', '--locale=C']);
  try {
    renameSync(data, TEMPLATE);
  } catch {
    // another test process won the race; its template is as good as ours
  }
  rmSync(building, { recursive: true, force: true });
}

export interface TestPostgres {
  port: number;
  dataDir: string;
  /** Superuser URL of database `name` (default `postgres`). */
  url(name?: string): string;
  /** Creates a fresh database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** One-shot query on database URL `url`. */
  query<T extends pg.QueryResultRow = any>(url: string, sql: string, params?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}

export interface PostgresOptions {
  /** Extra postgresql.conf settings, e.g. `{ wal_level: 'replica' }`. */
  settings?: Record<string, string | number>;
}

const running = new Set<string>();
process.on('exit', () => {
  for (const dir of running) spawnSync(join(BIN, 'pg_ctl'), ['-D', dir, 'stop', '-m', 'immediate'], { ...(pgUser() ?? {}) });
});

export async function startPostgres(options: PostgresOptions = {}): Promise<TestPostgres> {
  ensureTemplate();
  const base = mkdtempSync(join(tmpdir(), 'tributary-pg-'));
  const dataDir = join(base, 'data');
  cpSync(TEMPLATE, dataDir, { recursive: true });
  chownToPostgres(base);
  const port = await freePort();
  const settings: Record<string, string | number> = {
    port,
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: `'${dataDir}'`,
    wal_level: 'logical',
    max_replication_slots: 20,
    max_wal_senders: 20,
    fsync: 'off',
    full_page_writes: 'off',
    synchronous_commit: 'off',
    shared_buffers: "'64MB'",
    logging_collector: 'off',
    ...options.settings,
  };
  appendFileSync(
    join(dataDir, 'postgresql.conf'),
    '\n' + Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n',
  );
  run('pg_ctl', ['-D', dataDir, '-l', join(dataDir, 'server.log'), '-w', '-t', '60', 'start']);
  running.add(dataDir);
  const url = (name = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${name}`;
  const query = async (target: string, sql: string, params?: unknown[]) => {
    const client = new pg.Client({ connectionString: target });
    await client.connect();
    try {
      return (await client.query(sql, params)).rows;
    } finally {
      await client.end();
    }
  };
  return {
    port,
    dataDir,
    url,
    query,
    async createDatabase(name) {
      await query(url(), `CREATE DATABASE "${name}"`);
      return url(name);
    },
    async stop() {
      if (!running.delete(dataDir)) return;
      try {
        run('pg_ctl', ['-D', dataDir, 'stop', '-m', 'immediate']);
      } finally {
        rmSync(base, { recursive: true, force: true });
      }
    },
  };
}


/** A database name unique to a test, from a hash of its title (pg-boss style). */
export function databaseName(title: string): string {
  let h = 2166136261;
  for (const ch of title) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return `t_${h.toString(36)}`;
}

