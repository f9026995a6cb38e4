/** The connection supervisor (src/supervisor.ts), with scripted sessions: no database. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { SourceSetupError, SourceUnavailableError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { supervise, type Session } from '../src/supervisor.js';
import type { SourceState } from '../src/types.js';

const log = createLogger({ level: 'fatal' });
const fast = { initialDelayMs: 10, maxDelayMs: 40, standbyDelayMs: 30, log };

/** A supervisor whose sessions run `script[n]` in turn (the last one repeats); records states and attempts. */
function scripted(script: Array<(s: Session) => Promise<void>>) {
  const states: Array<[SourceState, string | undefined]> = [];
  const attempts: number[] = [];
  let n = 0;
  const supervisor = supervise({
    ...fast,
    state: (state, detail) => void states.push([state, detail]),
    session: (s) => {
      attempts.push(s.attempt);
      return script[Math.min(n++, script.length - 1)](s);
    },
  });
  return { supervisor, states, attempts, sessions: () => n };
}

const lost = () => Promise.reject(new SourceUnavailableError('connection lost'));
const untilStopped = (s: Session) => new Promise<void>((resolve) => s.signal.addEventListener('abort', () => resolve()));
const streamThen = (end: () => Promise<void>) => async (s: Session) => {
  s.streaming();
  await sleep(5);
  return end();
};

test('retriable failures are retried with backoff; the first stream resolves started; stop ends the session', async () => {
  const { supervisor, states, attempts } = scripted([lost, lost, async (s) => (s.streaming(), untilStopped(s))]);
  await supervisor.started;
  assert.deepEqual(attempts, [0, 1, 2]);
  assert.deepEqual(states.map(([s]) => s), ['connecting', 'reconnecting', 'reconnecting', 'streaming']);
  assert.equal(states[1][1], 'connection lost');
  await supervisor.stop();
  assert.equal(await supervisor.stopped, undefined);
});

test('a permanent failure before the first stream rejects started (the daemon start fails)', async () => {
  const { supervisor, states } = scripted([lost, () => Promise.reject(new SourceSetupError('wal_level is replica'))]);
  await assert.rejects(supervisor.started, /wal_level is replica/);
  assert.match((await supervisor.stopped)?.message ?? '', /wal_level/);
  assert.ok(!states.some(([s]) => s === 'error'), 'the start failure is the report');
});

test('a permanent failure after the start puts the source in error and stops for good, visibly', async () => {
  const { supervisor, states, sessions } = scripted([streamThen(() => Promise.reject(new SourceSetupError('slot dropped by hand')))]);
  await supervisor.started;
  const error = await supervisor.stopped;
  assert.match(error?.message ?? '', /slot dropped/);
  assert.deepEqual(states.at(-1), ['error', 'slot dropped by hand']);
  await sleep(50);
  assert.equal(sessions(), 1, 'no new session after a permanent failure');
});

test('a session that streamed resets the backoff; a non-Tributary error is permanent by default', async () => {
  const { supervisor, attempts } = scripted([lost, lost, streamThen(lost), lost, async () => Promise.reject(new TypeError('bug'))]);
  await supervisor.started;
  assert.match((await supervisor.stopped)?.message ?? '', /bug/);
  assert.deepEqual(attempts, [0, 1, 2, 1, 2], 'the count starts over after a stream');
});

test('standby: state standby, retried at the fixed interval until the source is free', async () => {
  const standby = () => Promise.reject(new SourceUnavailableError('slot in use', { standby: true }));
  const { supervisor, states } = scripted([standby, standby, async (s) => (s.streaming(), untilStopped(s))]);
  const t0 = Date.now();
  await supervisor.started;
  assert.ok(Date.now() - t0 >= 2 * fast.standbyDelayMs - 5);
  assert.deepEqual(states.map(([s]) => s), ['connecting', 'standby', 'standby', 'streaming']);
  await supervisor.stop();
});

test('stop during a backoff wait ends it at once and rejects a pending start', async () => {
  const supervisor = supervise({ log, initialDelayMs: 60_000, maxDelayMs: 60_000, state: () => {}, session: lost });
  await sleep(20);
  const t0 = Date.now();
  await supervisor.stop();
  assert.ok(Date.now() - t0 < 1000);
  await assert.rejects(supervisor.started, /stopped before/);
});
