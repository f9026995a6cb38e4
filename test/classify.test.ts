/** Error classification of the Postgres helpers (src/postgres.ts) and the MySQL binlog connector: by codes, not message text. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { PurgedPositionError, classifyMysqlError } from '../connectors/mysql/errors.js';
import { SourceSetupError, SourceUnavailableError } from '../src/errors.js';
import { classifyPgError, isRetriablePgError, pgErrorKind, quoteIdent, quoteTable } from '../src/postgres.js';

function dbError(code: string, message = 'server says no'): pg.DatabaseError {
  const err = new pg.DatabaseError(message, message.length, 'error');
  err.code = code;
  return err;
}
const withCode = (message: string, props: object) => Object.assign(new Error(message), props);

test('Postgres errors are classified by SQLSTATE, Node codes and the driver error class', () => {
  assert.equal(pgErrorKind(dbError('08006')), 'retriable');
  assert.equal(pgErrorKind(dbError('57P01')), 'retriable');
  assert.equal(pgErrorKind(dbError('40P01')), 'retriable');
  assert.equal(pgErrorKind(dbError('42P01')), 'permanent');
  assert.equal(pgErrorKind(withCode('connect ECONNREFUSED 127.0.0.1:1', { code: 'ECONNREFUSED' })), 'connection');
  assert.equal(pgErrorKind(withCode('write EPIPE', { code: 'EPIPE' })), 'connection', 'EPIPE is not a SQLSTATE although it has five letters');
  assert.equal(pgErrorKind(new Error('Connection terminated unexpectedly')), 'connection');
  assert.equal(pgErrorKind(new TypeError('x is not a function')), 'unknown');
  assert.equal(isRetriablePgError(dbError('42703')), false);
  assert.equal(isRetriablePgError(withCode('getaddrinfo EAI_AGAIN db', { code: 'EAI_AGAIN' })), true);
});

test('classifyPgError: standby, setup problems with what to do, and retriable losses', () => {
  const standby = classifyPgError(dbError('55006', 'replication slot "s" is active for PID 7'), 'source "app"');
  assert.ok(standby instanceof SourceUnavailableError && standby.standby);
  const auth = classifyPgError(dbError('28P01', 'password authentication failed'), 'source "app"');
  assert.ok(auth instanceof SourceSetupError && !auth.retriable);
  assert.match(auth.message, /Check the user and password/);
  assert.ok(classifyPgError(new Error('Connection terminated unexpectedly'), 'source "app"').retriable);
  // The message text alone decides nothing: a server error that mentions ECONNRESET is still permanent.
  assert.equal(classifyPgError(dbError('42601', 'syntax error near ECONNRESET'), 'source "app"').retriable, false);
  assert.equal(classifyPgError(new TypeError('Connection terminated'), 'source "app"').retriable, false);
});

test('TLS failures are setup errors, never retried, whatever the store or connector', () => {
  const expired = withCode('certificate has expired', { code: 'CERT_HAS_EXPIRED' });
  assert.equal(pgErrorKind(expired), 'permanent');
  assert.equal(isRetriablePgError(expired), false);
  assert.equal(
    classifyPgError(expired, 'source "app"').message,
    `source "app": the server's TLS certificate is not valid now (CERT_HAS_EXPIRED: certificate has expired). Renew the server's certificate.`,
  );
  const selfSigned = withCode('self-signed certificate', { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
  assert.match(classifyPgError(selfSigned, 'source "app"').message, /not trusted \(DEPTH_ZERO_SELF_SIGNED_CERT: self-signed certificate\)\. Add sslrootcert=.*sslmode=require/);
  const mysqlExpired = withCode('certificate has expired', { code: 'HANDSHAKE_SSL_ERROR', fatal: true });
  const mysql = classifyMysqlError(mysqlExpired, 'source "app"');
  assert.equal(mysql.retriable, false);
  assert.match(mysql.message, /not valid now \(certificate has expired\)/);
  const mysqlHost = classifyMysqlError(withCode("Hostname/IP does not match certificate's altnames", { code: 'HANDSHAKE_SSL_ERROR', fatal: true, host: 'db', cert: {} }), 'source "app"');
  assert.match(mysqlHost.message, /not valid for host "db" .*ssl-mode=VERIFY_CA/);
  // Any other handshake failure is a lost connection, as before.
  assert.equal(classifyMysqlError(withCode('socket hang up', { code: 'HANDSHAKE_SSL_ERROR', fatal: true }), 'source "app"').retriable, true);
});

test('quoting', () => {
  assert.equal(quoteIdent('my "odd" name'), '"my ""odd"" name"');
  assert.equal(quoteTable('public.products'), '"public"."products"');
});

test('MySQL errors are classified by errno, code and the fatal flag', () => {
  const c = (err: unknown) => classifyMysqlError(err, 'source "app"', 7);
  assert.match(c(withCode('Access denied', { errno: 1045 })).message, /Check the user and password/);
  assert.ok(c(withCode("Can't add new command when connection is in closed state", { fatal: true })) instanceof SourceUnavailableError);
  assert.ok(c(withCode('Connection lost: The server closed the connection.', { code: 'PROTOCOL_CONNECTION_LOST', fatal: true })).retriable);
  assert.ok(c(withCode('read ECONNRESET', { code: 'ECONNRESET', errno: -104 })).retriable);
  assert.ok(c(withCode('Server shutdown in progress', { errno: 1053 })).retriable);
  assert.ok(c(withCode('Could not find first log file name in binary log index file', { errno: 1236 })) instanceof PurgedPositionError);
  assert.match(c(withCode('A slave with the same server_uuid/server_id as this slave has connected to the master', { errno: 1236 })).message, /serverId/);
  const mariadbClash = c(withCode('A slave with the same server_uuid/server_id is already connected', { errno: 4052, code: 'ER_INVALID_MFA_PLUGIN_SPECIFIED', fatal: true }));
  assert.equal(mariadbClash.retriable, false, 'MariaDB: errno 4052, although mysql2 marks it fatal');
  assert.match(mariadbClash.message, /set serverId:/);
  assert.equal(c(withCode("Table 'app.items' doesn't exist", { errno: 1146 })).retriable, false);
  assert.equal(c(withCode('Connection lost', {})).retriable, false, 'no code, no fatal flag: the text alone decides nothing');
});
