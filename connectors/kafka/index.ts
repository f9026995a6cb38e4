/**
 * The kafka source connector: a kafkajs consumer in the source's consumer group, run under the
 * connection supervisor (src/supervisor.ts), each message decoded by the source's `format`
 * (./decoder.ts).
 *
 * - After each fetched batch (one partition), its changes go to the pipeline, then a checkpoint
 *   whose position covers every partition read so far (./offsets.ts).
 * - `acknowledge(position)` commits those offsets to the group (only partitions still owned):
 *   offsets are committed only up to what the pipeline delivered; kafkajs's auto-commit is off.
 * - A message the format cannot decode is dead-lettered with its topic, partition and offset
 *   (`SourceHandler.reject`) and the partition goes on.
 * - `pause()`/`resume()` pause and resume fetching of the owned topics (kafkajs consumer
 *   pause/resume: https://kafka.js.org/docs/consuming#pause-resume).
 * - `lag()` reads the group's lag over the partitions this consumer owns (./lag.ts) with an admin
 *   client of its own: `tributary_consumer_lag_messages`, and `behind=` per partition in status.
 * - A consumer crash is not restarted by kafkajs (`restartOnFailure` false): the supervisor
 *   classifies it (src/kafka.ts) and reconnects, or stops for good (authorization, SASL).
 */
import type { Admin, Consumer, EachBatchPayload } from 'kafkajs';
import { describeError } from '../../src/errors.js';
import { classifyKafkaError, kafkaClient } from '../../src/kafka.js';
import { supervise, type Session, type Supervisor } from '../../src/supervisor.js';
import type { ConnectorContext, SourceConnector, SourceHandler } from '../../src/types.js';
import { UndecodableMessage, type Decoder, type KafkaMessage } from './decoder.js';
import { partitionLag } from './lag.js';
import { Offsets } from './offsets.js';
import type { KafkaSourceConfig } from './spec.js';

/** How much of an undecodable message's key and value goes into its dead letter. */
const MAX_LETTER_CONTENT = 4096;

export function createKafkaConnector(config: KafkaSourceConfig, ctx: ConnectorContext, decode: Decoder): SourceConnector {
  const where = `source "${ctx.sourceName}"`;
  const log = ctx.log;
  const client = kafkaClient(config);
  const offsets = new Offsets();
  let handler: SourceHandler;
  let supervisor: Supervisor | undefined;
  let consumer: Consumer | undefined;
  let paused = false;
  /** Commits go one at a time, in order. */
  let commits: Promise<void> = Promise.resolve();
  /** For lag(): connected on first use, forgotten when a call fails (the next one reconnects). */
  let admin: Promise<Admin> | undefined;
  let behind: Record<string, number> = {};

  async function adminClient(): Promise<Admin> {
    admin ??= (async () => {
      const a = client.admin();
      await a.connect();
      return a;
    })();
    return admin;
  }

  function batch({ batch }: EachBatchPayload): void {
    for (const m of batch.messages) {
      const message: KafkaMessage = { topic: batch.topic, partition: batch.partition, offset: m.offset, key: m.key, value: m.value, timestamp: Number(m.timestamp) };
      try {
        const decoded = decode(message);
        for (const change of decoded.changes) handler.change(change);
        for (const { lens, reason } of decoded.resyncs ?? []) handler.resync(lens, reason);
        for (const { lens, reason } of decoded.rejects ?? []) reject(message, new UndecodableMessage(reason, [lens]));
      } catch (err) {
        if (!(err instanceof UndecodableMessage)) throw err;
        reject(message, err);
      }
    }
    if (batch.messages.length === 0) return;
    offsets.read(batch.topic, batch.partition, batch.lastOffset());
    handler.checkpoint(offsets.position());
  }

  function reject(message: KafkaMessage, err: UndecodableMessage): void {
    const where = `kafka topic ${message.topic} partition ${message.partition} offset ${message.offset}`;
    const raw = `key: ${message.key?.toString('utf8') ?? 'null'}\nvalue: ${message.value?.toString('utf8') ?? 'null'}`.slice(0, MAX_LETTER_CONTENT);
    for (const lens of err.lenses.length > 0 ? err.lenses : [undefined]) handler.reject({ ...(lens !== undefined ? { lens } : {}), reason: err.message, raw, where });
  }

  function pauseTopics(c: Consumer | undefined, pause: boolean): void {
    const topics = offsets.topics().map((topic) => ({ topic }));
    if (c && topics.length > 0) (pause ? c.pause(topics) : c.resume(topics));
  }

  /** One consumer from connect to its crash or the stop. */
  async function session(s: Session): Promise<void> {
    const c = client.consumer({
      groupId: config.groupId,
      sessionTimeout: config.sessionTimeoutMs,
      heartbeatInterval: Math.max(500, Math.floor(config.sessionTimeoutMs / 10)),
      allowAutoTopicCreation: false,
      // A fetch waits at most this long for data: stop() waits for the fetch in flight.
      maxWaitTimeInMs: 1000,
      retry: { retries: 5, restartOnFailure: async () => false },
    });
    consumer = c;
    try {
      const crashed = new Promise<never>((_, fail) => c.on(c.events.CRASH, ({ payload }) => fail(payload.error)));
      crashed.catch(() => {});
      c.on(c.events.GROUP_JOIN, ({ payload }) => {
        offsets.assigned(payload.memberAssignment);
        log.info({ assignment: payload.memberAssignment }, 'joined the consumer group');
        if (paused) pauseTopics(c, true);
        s.streaming();
      });
      await c.connect();
      await c.subscribe({ topics: config.topics ?? [new RegExp(config.topicPattern!)], fromBeginning: config.fromBeginning });
      await c.run({ autoCommit: false, eachBatch: async (payload) => batch(payload) });
      const stopped = new Promise<void>((done) => s.signal.addEventListener('abort', () => done(), { once: true }));
      await Promise.race([crashed, stopped]);
    } finally {
      consumer = undefined;
      await commits;
      await c.disconnect().catch((err) => log.debug({ err: describeError(err) }, 'kafka consumer disconnect failed'));
    }
  }

  return {
    async start(h) {
      handler = h;
      supervisor = supervise({ state: (state, detail) => handler.state(state, detail), log, classify: (err) => classifyKafkaError(err, where), session });
      await supervisor.started;
      // The group's committed offsets are the position (the broker keeps them): never "fresh".
      return { fresh: false };
    },

    get stopped() {
      return supervisor?.stopped;
    },

    acknowledge(position) {
      const c = consumer;
      if (!c) return; // between consumers: the next one re-reads from the last commit
      const toCommit = offsets.commits(position);
      if (toCommit.length === 0) return;
      commits = commits.then(() =>
        c.commitOffsets(toCommit).catch((err) => log.warn({ err: describeError(err), offsets: toCommit }, 'kafka offset commit failed; those messages may be read again')),
      );
    },

    async lag() {
      const owned = offsets.ownedPartitions();
      try {
        behind = owned.length === 0 ? {} : await partitionLag(await adminClient(), config.groupId, owned);
      } catch (err) {
        const failed = admin;
        admin = undefined;
        void failed?.then((a) => a.disconnect()).catch(() => undefined);
        throw classifyKafkaError(err, where);
      }
      return { lagMessages: Object.values(behind).reduce((a, b) => a + b, 0) };
    },

    partMessagesBehind() {
      return behind;
    },

    pause() {
      paused = true;
      pauseTopics(consumer, true);
    },

    resume() {
      paused = false;
      pauseTopics(consumer, false);
    },

    async stop() {
      await supervisor?.stop();
      await admin?.then((a) => a.disconnect()).catch(() => undefined);
    },
  };
}
