/**
 * MySQL/MariaDB over TLS (connectors/mysql/connection.ts): a throwaway MariaDB that requires TLS
 * (require_secure_transport, a certificate for `localhost` signed by a throwaway CA) and one
 * without TLS; each ssl-mode, and a daemon whose binlog and worker reader run over VERIFY_IDENTITY
 * with a password full of URL-special characters and no secret in its output. Every failure's
 * message is checked.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import { mysqlConnection } from '../connectors/mysql/connection.js';
import { classifyMysqlError } from '../connectors/mysql/errors.js';
import { killChildren, spawnCli, stopDaemon, topHit } from './helpers/cli.js';
import { startMariadb, type TestMariadb } from './helpers/mariadb.js';
import { freePort } from './helpers/postgres.js';

const PASSWORD = "p@ss:w/o#rd%?&='x";
const ENCODED = encodeURIComponent(PASSWORD);

let tlsOnly: TestMariadb;
let plain: TestMariadb;

before(async () => {
  [tlsOnly, plain] = await Promise.all([startMariadb({ tls: true }), startMariadb()]);
  for (const server of [tlsOnly, plain]) {
    await server.query(
      `CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY ?; GRANT ALL PRIVILEGES ON *.* TO 'app'@'127.0.0.1'; CREATE DATABASE shop;`,
      [PASSWORD],
    );
  }
});
after(async () => {
  killChildren();
  await Promise.all([tlsOnly?.stop(), plain?.stop()]);
});

function url(server: TestMariadb, params: string, host = '127.0.0.1', password = ENCODED): string {
  return `mysql://app:${password}@${host}:${server.port}/shop${params ? `?${params}` : ''}`;
}

/** Connects with `u`; resolves with the session's TLS cipher ('' without TLS). */
async function cipher(u: string): Promise<string> {
  const conn = await mysql.createConnection(mysqlConnection(u, {}));
  try {
    const [rows] = await conn.query(`SHOW SESSION STATUS LIKE 'Ssl_cipher'`);
    return (rows as Array<{ Value: string }>)[0].Value;
  } finally {
    await conn.end();
  }
}

/** The classified message of connecting with `u`, which must fail; it must hold no secret. */
async function failure(u: string): Promise<string> {
  let message: string | undefined;
  try {
    await cipher(u);
  } catch (err) {
    const error = classifyMysqlError(err, 'source "app"');
    assert.equal(error.retriable, false, `${error.name}: ${error.message}`);
    message = error.message;
  }
  assert.ok(message !== undefined, `connected with ${u}`);
  assert.ok(!message.includes(PASSWORD) && !message.includes(ENCODED), message);
  return message;
}

describe('MariaDB that requires TLS', () => {
  test('REQUIRED and PREFERRED encrypt; VERIFY_CA and VERIFY_IDENTITY verify with ssl-ca', async () => {
    const ca = `ssl-ca=${encodeURIComponent(tlsOnly.caFile!)}`;
    for (const params of ['ssl-mode=REQUIRED', 'ssl-mode=PREFERRED', `ssl-mode=VERIFY_CA&${ca}`, ca]) {
      assert.notEqual(await cipher(url(tlsOnly, params)), '', params);
    }
    assert.notEqual(await cipher(url(tlsOnly, `ssl-mode=VERIFY_IDENTITY&${ca}`, 'localhost')), '');
  });

  test('without TLS the server refuses, and the message names ssl-mode=REQUIRED', async () => {
    for (const params of ['', 'ssl-mode=DISABLED']) {
      // MariaDB answers an insecure connection with access denied (MySQL has its own errno, 3159).
      assert.match(await failure(url(tlsOnly, params)), /^source "app": authentication failed \(Access denied .*\)\. .*A server with require_secure_transport=ON .* also needs ssl-mode=REQUIRED in the url\.$/);
    }
  });

  test('an untrusted certificate names ssl-ca and ssl-mode=REQUIRED; a missing file and a bad mode are named', async () => {
    const message = await failure(url(tlsOnly, 'ssl-mode=VERIFY_IDENTITY', 'localhost'));
    assert.match(message, /^source "app": the server's TLS certificate is not trusted \(self-signed certificate in certificate chain\)\. Add ssl-ca=\/path\/to\/ca\.pem .* or use ssl-mode=REQUIRED to encrypt without verifying/);
    const system = '/etc/ssl/certs/ca-certificates.crt';
    if (existsSync(system)) assert.match(await failure(url(tlsOnly, `ssl-ca=${system}`)), /not trusted \(self-signed certificate in certificate chain\)/);
    assert.equal(await failure(url(tlsOnly, 'ssl-mode=VERIFY_CA&ssl-ca=/nonexistent/ca.pem')), 'ssl-ca=/nonexistent/ca.pem in the MySQL url: cannot read the file (ENOENT)');
    assert.equal(await failure(url(tlsOnly, 'ssl-mode=sometimes')), 'ssl-mode=sometimes in the MySQL url: expected one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY');
  });

  test('a wrong password: the message says to check and percent-encode it', async () => {
    const message = await failure(url(tlsOnly, 'ssl-mode=REQUIRED', '127.0.0.1', 'wrong%40'));
    assert.match(message, /^source "app": authentication failed \(Access denied for user 'app'@'127\.0\.0\.1' \(using password: YES\)\)\. Check the user and password in the source url \(percent-encode/);
  });
});

describe('MariaDB without TLS', () => {
  test('no ssl-mode and DISABLED connect in plain text; REQUIRED fails naming ssl-mode', async () => {
    assert.equal(await cipher(url(plain, '')), '');
    assert.equal(await cipher(url(plain, 'ssl-mode=DISABLED')), '');
    const message = await failure(url(plain, 'ssl-mode=REQUIRED'));
    assert.match(message, /^source "app": the server does not accept TLS connections \(.*\)\. Turn TLS on in the server .*or remove ssl-mode from the url/);
  });
});

describe('the daemon over TLS', () => {
  test('the binlog and the worker reader over VERIFY_IDENTITY, with no secret in its output', async () => {
    const db = url(tlsOnly, `ssl-mode=VERIFY_IDENTITY&ssl-ca=${encodeURIComponent(tlsOnly.caFile!)}`, 'localhost');
    await tlsOnly.query(`CREATE TABLE products (id int PRIMARY KEY, name text); INSERT INTO products VALUES (1, 'Cast Iron Skillet'), (2, 'Chef Knife')`, [], 'shop');
    const apiPort = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'tributary-mysql-tls-'));
    const file = join(dir, 'tributary.yaml');
    writeFileSync(
      file,
      `
sources:
  app: { type: mysql, url: "${db}", heartbeatMs: 1000 }
lenses:
  products: { source: app, table: products, sink: local, fields: [name], metadata: [id, name], maxWaitMs: 10 }
sinks:
  local: { type: worker }
worker:
  listen: 127.0.0.1:${apiPort}
  embedder: { type: hash, dimensions: 64 }
  index: { type: embedded, path: ${join(dir, 'index')} }
  keys: [{ key: sk_search_key, scope: admin }]
state: { type: embedded, path: ${join(dir, 'state')} }
metrics: false
log: { level: debug }
`,
    );
    const daemon = spawnCli(['run', '--config', file]);
    const found = topHit(apiPort, 'sk_search_key', daemon);
    await found('skillet', '1', 'the full sync read over TLS');
    await tlsOnly.query(`INSERT INTO products VALUES (3, 'Espresso Grinder')`, [], 'shop');
    await found('espresso grinder', '3', 'the inserted row from the binlog over TLS');
    const [sessions] = [await tlsOnly.query(`SELECT count(*) AS n FROM information_schema.PROCESSLIST WHERE USER = 'app'`)];
    assert.ok(Number(sessions[0].n) >= 1, 'the daemon is connected (and the server admits only TLS)');
    await stopDaemon(daemon);
    for (const secret of [PASSWORD, ENCODED, 'w/o#rd', 'w%2Fo%23rd']) assert.ok(!daemon.output().includes(secret), `the output holds the password:\n${daemon.output()}`);
  });
});
