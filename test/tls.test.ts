/**
 * Postgres over TLS with libpq's sslmode meanings (src/postgres.ts pgConnection, src/pg-socket.ts):
 * a throwaway server that only accepts TLS (hostssl, a certificate for `localhost` signed by a
 * throwaway CA) and one that refuses it (ssl off, hostnossl); every sslmode against both, the
 * verify modes with and without the CA and with the wrong host name, scram and md5 roles whose
 * password is full of URL-special characters, sslnegotiation=direct on PostgreSQL 17, the state
 * store, and a daemon whose replication connection and worker reader run over TLS without a
 * secret in its output. Every failure's message is checked.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { classifyPgError, pgConnection } from '../src/postgres.js';
import { PostgresStateStore } from '../src/state/postgres.js';
import { eventually, runCli, spawnCli, stopDaemon, topHit } from './helpers/cli.js';
import { freePort, startPostgres, testCertificates, type TestPostgres } from './helpers/postgres.js';

const PASSWORD = "p@ss:w/o#rd%?&='x";
const ENCODED = encodeURIComponent(PASSWORD);
const sqlString = (s: string) => `'${s.replace(/'/g, "''")}'`;

let tlsOnly: TestPostgres;
let plainOnly: TestPostgres;

before(async () => {
  [tlsOnly, plainOnly] = await Promise.all([
    startPostgres({
      tls: true,
      hba: [
        'hostssl all app_md5 127.0.0.1/32 md5',
        'hostssl all app_cert 127.0.0.1/32 cert',
        'hostssl all all 127.0.0.1/32 scram-sha-256',
        'hostssl replication all 127.0.0.1/32 scram-sha-256',
      ],
    }),
    startPostgres({ hba: ['hostnossl all app_md5 127.0.0.1/32 md5', 'hostnossl all all 127.0.0.1/32 scram-sha-256'] }),
  ]);
  for (const server of [tlsOnly, plainOnly]) {
    await server.query(
      server.url(),
      `SET password_encryption = 'scram-sha-256'; CREATE ROLE app_scram LOGIN REPLICATION PASSWORD ${sqlString(PASSWORD)};
       SET password_encryption = 'md5'; CREATE ROLE app_md5 LOGIN PASSWORD ${sqlString(PASSWORD)}; CREATE ROLE app_cert LOGIN;`,
    );
  }
});
after(async () => {
  await Promise.all([tlsOnly?.stop(), plainOnly?.stop()]);
});

interface Target {
  role?: string;
  host?: string;
  password?: string;
}

function url(server: TestPostgres, params: string, { role = 'app_scram', host = '127.0.0.1', password = ENCODED }: Target = {}): string {
  return `postgres://${role}:${password}@${host}:${server.port}/postgres${params ? `?${params}` : ''}`;
}

/** Connects with `u`; resolves with whether the session is encrypted (pg_stat_ssl). */
async function encrypted(u: string): Promise<boolean> {
  const client = new pg.Client(pgConnection(u));
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0].ssl as boolean;
  } finally {
    await client.end().catch(() => {});
  }
}

/** The classified message of connecting with `u`, which must fail; it must hold no secret. */
async function failure(u: string): Promise<string> {
  let message: string | undefined;
  try {
    await encrypted(u);
  } catch (err) {
    const error = classifyPgError(err, 'source "app"');
    assert.equal(error.retriable, false, `${error.name}: ${error.message}`);
    message = error.message;
  }
  assert.ok(message !== undefined, `connected with ${u}`);
  assert.ok(!message.includes(PASSWORD) && !message.includes(ENCODED) && !message.includes('BEGIN'), message);
  return message;
}

/** Runs `fn` with the environment variables `env` set (undefined: unset). */
async function withEnv<T>(env: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  };
  apply(env);
  try {
    return await fn();
  } finally {
    apply(saved);
  }
}

describe('a server that only accepts TLS', () => {
  test('prefer (the default), allow and require encrypt without verifying', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.message);
    process.on('warning', onWarning);
    for (const params of ['', 'sslmode=prefer', 'sslmode=allow', 'sslmode=require', 'sslmode=require&uselibpqcompat=true']) {
      assert.equal(await encrypted(url(tlsOnly, params)), true, params);
    }
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', onWarning);
    assert.deepEqual(warnings, [], "node-postgres's own sslmode warning is not printed: it never sees sslmode");
  });

  test('disable is refused by pg_hba.conf, and the message names sslmode=require', async () => {
    const message = await failure(url(tlsOnly, 'sslmode=disable'));
    assert.match(message, /^source "app": the server refused the connection \(no pg_hba\.conf entry for host "127\.0\.0\.1", user "app_scram", database "postgres", (no encryption|SSL off)\)/);
    assert.match(message, /connect with sslmode=require/);
  });

  test('verify-ca checks the chain but not the host name; verify-full checks both', async () => {
    const ca = `sslrootcert=${encodeURIComponent(tlsOnly.caFile!)}`;
    assert.equal(await encrypted(url(tlsOnly, `sslmode=verify-ca&${ca}`)), true);
    assert.equal(await encrypted(url(tlsOnly, `sslmode=verify-full&${ca}`, { host: 'localhost' })), true);
    const wrongHost = await failure(url(tlsOnly, `sslmode=verify-full&${ca}`));
    assert.match(wrongHost, /^source "app": the server's TLS certificate is not valid for host "127\.0\.0\.1" \(.*altnames.*\)\. Connect with a host name the certificate lists, or use sslmode=verify-ca/);
  });

  test('require with a root certificate verifies the chain, as with libpq', async () => {
    assert.equal(await encrypted(url(tlsOnly, `sslmode=require&sslrootcert=${tlsOnly.caFile}`)), true);
    const system = '/etc/ssl/certs/ca-certificates.crt';
    if (existsSync(system)) {
      const message = await failure(url(tlsOnly, `sslmode=require&sslrootcert=${system}`));
      assert.match(message, /^source "app": the server's TLS certificate is not trusted \((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE): [^)]*\)\. Add sslrootcert=\/path\/to\/ca\.pem .* or use sslmode=require to encrypt without verifying/);
    }
  });

  test('an untrusted certificate names sslrootcert and sslmode=require', async () => {
    const message = await failure(url(tlsOnly, 'sslrootcert=system', { host: 'localhost' }));
    assert.match(message, /the server's TLS certificate is not trusted \(SELF_SIGNED_CERT_IN_CHAIN: self-signed certificate in certificate chain\)\. Add sslrootcert=.*sslmode=require/);
  });

  test('the verify modes need a CA file: none given, none at ~/.postgresql/root.crt, or an unreadable one', async () => {
    const home = mkdtempSync(join(tmpdir(), 'tributary-home-'));
    const none = await withEnv({ HOME: home }, () => failure(url(tlsOnly, 'sslmode=verify-full', { host: 'localhost' })));
    assert.equal(
      none,
      `sslmode=verify-full in the Postgres url verifies the server's certificate, but no CA file was given and ${home}/.postgresql/root.crt does not exist: ` +
        "add sslrootcert=/path/to/ca.pem (your provider's CA bundle), or sslrootcert=system for a publicly trusted certificate, or use sslmode=require to encrypt without verifying.",
    );
    const missing = await failure(url(tlsOnly, 'sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem'));
    assert.equal(missing, 'sslrootcert=/nonexistent/ca.pem in the Postgres url: cannot read the file (ENOENT)');
    assert.equal(await failure(url(tlsOnly, 'sslmode=sometimes')), 'sslmode=sometimes in the Postgres url: expected one of disable, allow, prefer, require, verify-ca, verify-full');
    assert.match(await failure(url(tlsOnly, 'sslmode=require&sslrootcert=system')), /^sslrootcert=system in the Postgres url needs sslmode=verify-full \(it is require\)/);
  });

  test('a client certificate: sslcert and sslkey, an encrypted key with sslpassword', async () => {
    const files = testCertificates();
    const base = `sslmode=verify-full&sslrootcert=${files.ca}&sslcert=${files.clientCert}`;
    assert.equal(await encrypted(url(tlsOnly, `${base}&sslkey=${files.clientKey}`, { role: 'app_cert', password: '', host: 'localhost' })), true);
    assert.equal(await encrypted(url(tlsOnly, `${base}&sslkey=${files.clientKeyEncrypted}&sslpassword=clientpass`, { role: 'app_cert', password: '', host: 'localhost' })), true);
    const noCert = await failure(url(tlsOnly, `sslmode=verify-full&sslrootcert=${files.ca}`, { role: 'app_cert', password: '', host: 'localhost' }));
    assert.match(noCert, /^source "app": the server refused the connection \(connection requires a valid client certificate\)/);
    assert.equal(await failure(url(tlsOnly, `${base}&sslkey=/nonexistent/client.key`, { role: 'app_cert', password: '' })), 'sslkey=/nonexistent/client.key in the Postgres url: cannot read the file (ENOENT)');
  });

  test('PGSSLMODE and PGSSLROOTCERT apply when the url has no sslmode', async () => {
    const refused = await withEnv({ PGSSLMODE: 'disable' }, () => failure(url(tlsOnly, '')));
    assert.match(refused, /no pg_hba\.conf entry.*connect with sslmode=require/);
    const verified = await withEnv({ PGSSLMODE: 'verify-full', PGSSLROOTCERT: tlsOnly.caFile }, () => encrypted(url(tlsOnly, '', { host: 'localhost' })));
    assert.equal(verified, true);
  });

  test('scram and md5 roles with URL-special characters in the password; a wrong one names the role and the method', async () => {
    assert.equal(await encrypted(url(tlsOnly, 'sslmode=require')), true);
    assert.equal(await encrypted(url(tlsOnly, 'sslmode=require', { role: 'app_md5' })), true);
    const scram = await failure(url(tlsOnly, 'sslmode=require', { password: 'wrong%40' }));
    assert.match(scram, /^source "app": password authentication failed for role "app_scram" \(the server asked for SCRAM-SHA-256\)\. Check the user and password in the url; percent-encode special characters in the password \(@ as %40/);
    const md5 = await failure(url(tlsOnly, 'sslmode=require', { role: 'app_md5', password: 'wrong' }));
    assert.match(md5, /^source "app": password authentication failed for role "app_md5" \(the server asked for md5\)\./);
  });
});

describe('direct TLS negotiation', () => {
  test('sslnegotiation=direct on PostgreSQL 17; it needs sslmode=require or stronger', async () => {
    const pg17 = await startPostgres({ version: '17', tls: true, hba: ['hostssl all all 127.0.0.1/32 scram-sha-256'] });
    try {
      await pg17.query(pg17.url(), `CREATE ROLE app_scram LOGIN PASSWORD ${sqlString(PASSWORD)}`);
      assert.equal(await encrypted(url(pg17, `sslmode=verify-full&sslnegotiation=direct&sslrootcert=${pg17.caFile}`, { host: 'localhost' })), true);
      assert.equal(
        await failure(url(pg17, 'sslnegotiation=direct')),
        'sslnegotiation=direct in the Postgres url needs sslmode=require, verify-ca or verify-full (it is prefer)',
      );
    } finally {
      await pg17.stop();
    }
  });
});

describe('a server that refuses TLS', () => {
  test('disable, allow, prefer and the default connect in plain text', async () => {
    for (const params of ['', 'sslmode=disable', 'sslmode=allow', 'sslmode=prefer']) {
      assert.equal(await encrypted(url(plainOnly, params)), false, params);
    }
    assert.equal(await encrypted(url(plainOnly, '', { role: 'app_md5' })), false);
    const socket = `postgres://postgres@localhost/postgres?host=${encodeURIComponent(plainOnly.dataDir)}&port=${plainOnly.port}&sslmode=prefer`;
    assert.equal(await encrypted(socket), false, 'a Unix-domain socket, never TLS');
  });

  test('require and the verify modes fail, naming sslmode=prefer and disable', async () => {
    for (const mode of ['require', 'verify-ca', 'verify-full']) {
      const message = await failure(url(plainOnly, `sslmode=${mode}&sslrootcert=${tlsOnly.caFile}`));
      assert.equal(
        message,
        `source "app": the server does not accept TLS connections (ssl is off), and sslmode=${mode} demands TLS. ` +
          'Turn ssl on in the server, or connect with sslmode=prefer (TLS when the server offers it) or sslmode=disable.',
      );
    }
  });
});

describe('the Postgres state store over TLS', () => {
  test('opens and leases over verify-full; an untrusted certificate and a wrong password are explained', async () => {
    await tlsOnly.query(tlsOnly.url(), 'CREATE DATABASE state OWNER app_scram');
    const base = (password: string) => `postgres://app_scram:${password}@localhost:${tlsOnly.port}/state`;
    const store = await PostgresStateStore.open({ url: `${base(ENCODED)}?sslmode=verify-full&sslrootcert=${tlsOnly.caFile}` });
    await store.put('k', { v: 1 });
    assert.deepEqual(await store.get('k'), { v: 1 });
    const lease = await store.lease('source/app');
    await lease.release();
    await store.close();
    await assert.rejects(PostgresStateStore.open({ url: `${base(ENCODED)}?sslrootcert=system` }), (err: Error) => {
      assert.match(err.message, /^PostgreSQL state store at postgres:\/\/app_scram:\*\*\*@localhost:\d+\/state\?sslrootcert=system: the server's TLS certificate is not trusted .*Add sslrootcert=/);
      return true;
    });
    await assert.rejects(PostgresStateStore.open({ url: `${base('nope')}?sslmode=require` }), (err: Error) => {
      assert.match(err.message, /^PostgreSQL state store at postgres:\/\/app_scram:\*\*\*@.*: password authentication failed for role "app_scram" \(the server asked for SCRAM-SHA-256\)/);
      return true;
    });
  });
});

describe('the daemon over TLS', () => {
  test('replication and the worker reader over verify-full, with no secret in its output, status or metrics', async () => {
    await tlsOnly.query(tlsOnly.url(), 'CREATE DATABASE shop OWNER app_scram');
    const db = `postgres://app_scram:${ENCODED}@localhost:${tlsOnly.port}/shop?sslmode=verify-full&sslrootcert=${encodeURIComponent(tlsOnly.caFile!)}`;
    await tlsOnly.query(db, `CREATE TABLE products (id int PRIMARY KEY, name text); INSERT INTO products VALUES (1, 'Cast Iron Skillet'), (2, 'Chef Knife')`);
    const [apiPort, metricsPort] = [await freePort(), await freePort()];
    const dir = mkdtempSync(join(tmpdir(), 'tributary-tls-'));
    const yaml = `
sources:
  app: { type: postgres, url: "${db}", capture: logical, slot: shop, publication: shop }
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
metrics: { listen: "127.0.0.1:${metricsPort}" }
log: { level: debug }
`;
    const file = join(dir, 'tributary.yaml');
    writeFileSync(file, yaml);
    const daemon = spawnCli(['run', '--config', file]);
    const found = topHit(apiPort, 'sk_search_key', daemon);
    await found('skillet', '1', 'the full sync read over TLS');
    await tlsOnly.query(db, `INSERT INTO products VALUES (3, 'Espresso Grinder')`);
    await found('espresso grinder', '3', 'the inserted row streamed over TLS');
    const sessions = await tlsOnly.query(tlsOnly.url(), `SELECT count(*)::int AS n FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE usename = 'app_scram' AND NOT ssl`);
    assert.equal(sessions[0].n, 0, 'every session of the daemon is encrypted');
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    let status = { code: null as number | null, output: '' };
    await eventually(async () => (status = await runCli(['status', '--config', file])).code === 0, 'a status');
    assert.match(status.output, /products/, status.output);
    await stopDaemon(daemon);
    for (const [what, text] of [['output', daemon.output()], ['metrics', metrics], ['status', status.output]]) {
      for (const secret of [PASSWORD, ENCODED, 'w/o#rd', 'w%2Fo%23rd']) assert.ok(!text.includes(secret), `${what} holds the password:\n${text}`);
      assert.ok(!text.includes('BEGIN '), `${what} holds a certificate`);
    }
  });
});
