/**
 * The Kafka sink: each batch is one produce request of the idempotent producer with
 * `acks: all` (https://kafka.apache.org/documentation/#producerconfigs_enable.idempotence),
 * so a batch counts as delivered only once every in-sync replica has it, and a retried send
 * does not duplicate. Messages are in the bus format (src/bus.ts); sync requests travel as
 * messages too, for the consumers to act on.
 *
 * A lens with `payload` sends each upsert's row, shaped as the payload sinks shape it (columns
 * picked or renamed, values typed: src/payload.ts), from the change when the source carried
 * it, else read by id; a row gone when read is sent as a delete. Other lenses send ids only.
 *
 * Failures are SinkErrors (docs/architecture.md, "Stages"): retriable kafkajs errors (a broker
 * down, a leader moving) `transient`; records the broker refuses (too large, invalid)
 * `rejected`; anything else (authorization, SASL) `fatal`. See src/kafka.ts.
 */
import { Partitioners, type Producer } from 'kafkajs';
import { encodeChange, encodeSync } from '../../bus.js';
import { SinkError, describeError } from '../../errors.js';
import { describeKafkaError, kafkaClient, kafkaRecordRefused, kafkaRetriable } from '../../kafka.js';
import { PayloadStage } from '../../payload.js';
import type { SinkContext } from '../../plugins.js';
import type { RecordChange, Sink } from '../../types.js';
import type { KafkaSinkConfig } from './spec.js';

export async function createKafkaSink(config: KafkaSinkConfig, ctx: Pick<SinkContext, 'name' | 'lenses' | 'openReader' | 'state' | 'log'>): Promise<Sink> {
  const log = ctx.log;
  const client = kafkaClient(config);
  const withRows = Object.fromEntries(Object.entries(ctx.lenses).filter(([, lens]) => lens.payload !== undefined));
  const stage = Object.keys(withRows).length > 0 ? new PayloadStage({ ...ctx, lenses: withRows }) : undefined;
  await stage?.open();
  let producer: Promise<Producer> | undefined;
  let closed = false;

  /** The connected producer; a failed connect is forgotten so the next batch tries again. */
  function connected(): Promise<Producer> {
    producer ??= (async () => {
      const p = client.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
      await p.connect();
      return p;
    })();
    producer.catch(() => (producer = undefined));
    return producer;
  }

  async function send(lens: string, messages: Array<{ key: string; value: string }>): Promise<void> {
    const where = `kafka sink, lens "${lens}", topic ${config.topic}`;
    if (closed) throw new SinkError(`${where}: the sink is closed`, 'fatal');
    try {
      await (await connected()).send({ topic: config.topic, acks: -1, timeout: config.timeoutMs, messages });
    } catch (err) {
      const kind = kafkaRetriable(err) ? 'transient' : kafkaRecordRefused(err) ? 'rejected' : 'fatal';
      log.debug({ lens, kind, err: describeError(err) }, 'kafka send failed');
      throw new SinkError(`${where}: ${describeKafkaError(err)}`, kind, {}, err);
    }
  }

  /** The messages of a batch: with each row's payload for lenses with `payload`. */
  async function messages(lens: string, changes: RecordChange[]): Promise<Array<{ key: string; value: string }>> {
    if (!stage || !withRows[lens]) return changes.map((c) => encodeChange(lens, c));
    const out: Array<{ key: string; value: string }> = [];
    for await (const records of stage.records(lens, changes)) {
      for (const { change, json } of records) out.push(json === undefined ? encodeChange(lens, { ...change, action: 'delete', row: undefined }) : encodeChange(lens, change, json));
    }
    return out;
  }

  return {
    write: async (lens, changes) => send(lens, await messages(lens, changes)),
    // A sink of ids alone has nothing to read ahead: the pipeline takes its batches as before.
    prepare: stage && ((lens, changes) => withRows[lens] && stage.prepare(lens, changes)),
    requestFullSync: (lens) => send(lens, [encodeSync(lens, 'full')]),
    requestIncrementalSync: (lens) => send(lens, [encodeSync(lens, 'incremental')]),
    async close() {
      if (closed) return;
      closed = true;
      const p = await producer?.catch(() => undefined);
      await p?.disconnect().catch(() => undefined);
      await stage?.close();
    },
  };
}
