/**
 * Throwaway MariaDB servers for tests and benchmarks: `mariadb-install-db` once per machine
 * (then the data directory is copied), a free port on 127.0.0.1, a ROW binlog, and a
 * password user `root@127.0.0.1` created by an init file. Never touches the machine's shared
 * server. When running as root the server runs as the `mysql` user. `tls: true` serves TLS with
 * the certificate of test/helpers/postgres.ts (`localhost`, signed by `caFile`) and refuses
 * connections without it (require_secure_transport); the helper's own connections use TLS then.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { mysqlConnection } from '../../connectors/mysql/connection.js';
import { freePort, testCertificates } from './postgres.js';

const TEMPLATE = join(tmpdir(), 'tributary-mariadb-template-v1');
export const ROOT_PASSWORD = 'root-pw';

function mysqlUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  return {
    uid: Number(execFileSync('id', ['-u', 'mysql']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'mysql']).toString().trim()),
  };
}

function chownToMysql(path: string): void {
  const user = mysqlUser();
  if (user) execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, path]);
}

function ensureTemplate(): void {
  if (existsSync(join(TEMPLATE, 'mysql'))) return;
  if (spawnSync('which', ['mariadbd']).status !== 0) {
    throw new Error('mariadbd not found: install mariadb-server (apt-get install -y mariadb-server)');
  }
  const building = mkdtempSync(join(tmpdir(), 'tributary-mariadb-build-'));
  chownToMysql(building);
  const data = join(building, 'data');
  const user = mysqlUser();
  const res = spawnSync('mariadb-install-db', [`--datadir=${data}`, '--auth-root-authentication-method=normal', '--skip-test-db', ...(user ? ['--user=mysql'] : [])], {
    encoding: 'utf8',
  });
  if (res.status !== 0) throw new Error(`mariadb-install-db failed (${res.status}): ${res.stderr || res.stdout}`);
  try {
    renameSync(data, TEMPLATE);
  } catch {
    // another test process won the race; its template is as good as ours
  }
  rmSync(building, { recursive: true, force: true });
}

export interface MariadbOptions {
  /** Extra [mariadbd] settings, e.g. `{ binlog_format: 'STATEMENT' }`. */
  settings?: Record<string, string | number>;
  /** Serve TLS and require it (require_secure_transport=ON). */
  tls?: boolean;
}

export interface TestMariadb {
  port: number;
  dir: string;
  /** With `tls`: the CA file that signed the server's certificate. */
  caFile?: string;
  /** URL of database `db` as `user` (default root). */
  url(db?: string, user?: string, password?: string): string;
  /** Creates a fresh database and returns its URL (as root). */
  createDatabase(name: string): Promise<string>;
  /** Runs statements as root (multiple statements allowed); returns the last result's rows. */
  query<T = any>(sql: string, params?: unknown[], db?: string): Promise<T[]>;
  /** Stops the server (SIGKILL when `hard`), keeping its data for `start`. */
  halt(hard?: boolean): Promise<void>;
  /** Starts the server again on the same port and data. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export async function startMariadb(options: MariadbOptions = {}): Promise<TestMariadb> {
  ensureTemplate();
  const dir = mkdtempSync(join(tmpdir(), 'tributary-mariadb-'));
  const dataDir = join(dir, 'data');
  cpSync(TEMPLATE, dataDir, { recursive: true });
  const port = await freePort();
  const settings: Record<string, string | number> = {
    datadir: dataDir,
    socket: join(dir, 'mysqld.sock'),
    'pid-file': join(dir, 'mysqld.pid'),
    port,
    'bind-address': '127.0.0.1',
    'skip-name-resolve': 'ON',
    log_bin: 'mysql-bin',
    binlog_format: 'ROW',
    binlog_row_image: 'FULL',
    server_id: 1,
    'log-error': join(dir, 'error.log'),
    'init-file': join(dir, 'init.sql'),
    innodb_buffer_pool_size: '64M',
    innodb_flush_log_at_trx_commit: 2,
    sync_binlog: 0,
    innodb_doublewrite: 0,
    performance_schema: 'OFF',
    'character-set-server': 'utf8mb4',
    'collation-server': 'utf8mb4_unicode_ci',
    // Not UTC, so tests notice TIMESTAMP values printed in a session's zone.
    'default-time-zone': "'+02:00'",
    ...options.settings,
  };
  const caFile = options.tls ? serveTls(dir, settings) : undefined;
  writeFileSync(
    join(dir, 'init.sql'),
    `CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n` +
      `ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '${ROOT_PASSWORD}';\n` +
      `GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n`,
  );
  const cnf = join(dir, 'my.cnf');
  writeFileSync(cnf, '[mariadbd]\n' + Object.entries(settings).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
  chownToMysql(dir);

  let child: ChildProcess | undefined;
  /** The helper's own connections: over TLS when the server demands it. */
  const connection = (u: string, extra: mysql.ConnectionOptions) => mysqlConnection(caFile ? `${u}?ssl-mode=REQUIRED` : u, extra);
  const url = (db = '', user = 'root', password = ROOT_PASSWORD) =>
    `mysql://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${db}`;

  async function start(): Promise<void> {
    const user = mysqlUser();
    const proc = spawn('mariadbd', [`--defaults-file=${cnf}`, ...(user ? ['--user=mysql'] : [])], { stdio: 'ignore' });
    child = proc;
    running.add(proc);
    let exited = false;
    proc.on('exit', () => {
      exited = true;
      running.delete(proc);
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (exited) throw new Error(`mariadbd exited at start: ${tail(join(dir, 'error.log'))}`);
      try {
        const conn = await mysql.createConnection(connection(url(), {}));
        await conn.end();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`mariadbd did not accept connections: ${(err as Error).message}; ${tail(join(dir, 'error.log'))}`);
        await sleep(50);
      }
    }
  }

  async function halt(hard = false): Promise<void> {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null) return;
    const gone = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill(hard ? 'SIGKILL' : 'SIGTERM');
    await gone;
  }

  async function query(sql: string, params?: unknown[], db = ''): Promise<any[]> {
    const conn = await mysql.createConnection(connection(url(db), { multipleStatements: true, dateStrings: true, supportBigNumbers: true, bigNumberStrings: true }));
    try {
      const [rows] = await conn.query(sql, params);
      return rows as any[];
    } finally {
      await conn.end();
    }
  }

  await start();
  return {
    port,
    dir,
    caFile,
    url,
    query,
    async createDatabase(name) {
      await query(`CREATE DATABASE \`${name}\``);
      return url(name);
    },
    halt,
    start,
    async stop() {
      await halt(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Copies the test certificate into `dir` and sets the TLS settings; returns the CA file. */
function serveTls(dir: string, settings: Record<string, string | number>): string {
  const files = testCertificates();
  copyFileSync(files.cert, join(dir, 'server.crt'));
  copyFileSync(files.key, join(dir, 'server.key'));
  Object.assign(settings, { 'ssl-ca': files.ca, 'ssl-cert': join(dir, 'server.crt'), 'ssl-key': join(dir, 'server.key'), require_secure_transport: 'ON' });
  return files.ca;
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no error log)';
  }
}
