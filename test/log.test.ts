import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { createLogger, redactUrl } from '../src/log.js';

/** A logger writing into an array of parsed lines. */
function capture(level = 'debug') {
  const text: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      text.push(String(chunk));
      done();
    },
  });
  const log = createLogger({ level, name: 'test', destination });
  const lines = () => text.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, text, lines };
}

test('redactUrl masks the password and keeps everything else', () => {
  const cases: Array<[string, string]> = [
    ['postgres://app:s3cret@db:5432/shop', 'postgres://app:***@db:5432/shop'],
    ['postgresql://app:s3cret@db/shop?sslmode=require', 'postgresql://app:***@db/shop?sslmode=require'],
    ['mysql://root:p%40ss%3Aw0rd@10.0.0.1:3306', 'mysql://root:***@10.0.0.1:3306'],
    ['https://:token@api.example.com/v1', 'https://:***@api.example.com/v1'],
    ['postgres://app:pw@h1:5432,h2:5432/db', 'postgres://app:***@h1:5432,h2:5432/db'],
    ['postgres://db/shop?user=app&password=s3cret&sslmode=require', 'postgres://db/shop?user=app&password=***&sslmode=require'],
    // Percent-encoded URL-special characters, and the same characters left raw (an invalid URL, still fully hidden).
    ['postgres://app:p%40ss%3Aw%2Fo%23rd@db/shop?sslmode=verify-full&sslrootcert=/etc/ca.pem', 'postgres://app:***@db/shop?sslmode=verify-full&sslrootcert=/etc/ca.pem'],
    ['postgres://app:p@ss:w/o#rd@db:5432/shop', 'postgres://app:***@db:5432/shop'],
    ['mysql://app:a/b?c@db/shop?ssl-mode=REQUIRED', 'mysql://app:***@db/shop?ssl-mode=REQUIRED'],
    ['postgres://app@db/shop?sslkey=/k.pem&sslpassword=s3cret', 'postgres://app@db/shop?sslkey=/k.pem&sslpassword=***'],
  ];
  for (const [input, expected] of cases) assert.equal(redactUrl(input), expected, input);
});

test('redactUrl leaves URLs without a password, and non-URLs, alone', () => {
  for (const input of [
    'postgres://app@db:5432/shop',
    'postgres://db:5432/shop',
    'https://api.semilayer.com',
    'https://host/path?email=a@b.c',
    'not a url',
    '',
    'db:5432',
  ]) {
    assert.equal(redactUrl(input), input);
  }
  assert.equal(redactUrl('host=db user=app password=s3cret dbname=shop'), 'host=db user=app password=*** dbname=shop');
  assert.equal(redactUrl("host=db password='s3 cret' dbname=shop"), 'host=db password=*** dbname=shop');
});

test('the logger writes one JSON object a line with level, time, name and fields', () => {
  const { log, lines } = capture('info');
  log.debug({ hidden: true }, 'below the level');
  log.info({ lens: 'products', pending: 2 }, 'flushed');
  log.child({ source: 'app' }).warn({ lagBytes: 10 }, 'lagging');
  const [first, second, ...rest] = lines();
  assert.equal(rest.length, 0);
  assert.equal(first.level, 'info');
  assert.equal(first.name, 'test');
  assert.equal(first.msg, 'flushed');
  assert.equal(first.lens, 'products');
  assert.equal(first.pending, 2);
  assert.ok(!Number.isNaN(Date.parse(String(first.time))));
  assert.equal(second.level, 'warn');
  assert.equal(second.source, 'app');
  assert.equal(second.lagBytes, 10);
});

test('secrets in logged objects never reach the output', () => {
  const { log, text, lines } = capture();
  log.info({ key: 'ik_secret' }, 'sink configured');
  log.info({ sink: { type: 'semilayer', key: 'ik_secret' } }, 'nested');
  log.child({ lens: 'products' }).error({ request: { headers: { authorization: 'Bearer ik_secret' } } }, 'deep');
  log.warn({ password: 'ik_secret', token: 'ik_secret' }, 'others');
  log.info({ url: redactUrl('postgres://app:ik_secret@db/shop') }, 'url');
  const output = text.join('');
  assert.doesNotMatch(output, /ik_secret/);
  const [first, second, third] = lines();
  assert.equal(first.key, '[redacted]');
  assert.deepEqual(second.sink, { type: 'semilayer', key: '[redacted]' });
  assert.deepEqual(third.request, { headers: { authorization: '[redacted]' } });
});
