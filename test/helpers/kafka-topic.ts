/** Reads a whole topic from the start in the background, for assertions on what was published. */
import type { Kafka } from 'kafkajs';
import { randomUUID } from 'node:crypto';

export interface TopicMessage {
  key: string;
  value: Record<string, any>;
  partition: number;
  offset: string;
}

export interface TopicReader {
  /** Every message so far, in the order read (per partition: offset order). */
  all(): TopicMessage[];
  /** The last value of each key. */
  last(): Map<string, Record<string, any>>;
  stop(): Promise<void>;
}

/** Starts a consumer (its own group) reading `topic` from the beginning. */
export async function readTopic(client: Kafka, topic: string): Promise<TopicReader> {
  const messages: TopicMessage[] = [];
  const consumer = client.consumer({ groupId: `test-reader-${randomUUID()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message, partition }) => {
      messages.push({ key: message.key?.toString() ?? '', value: message.value ? JSON.parse(message.value.toString()) : null, partition, offset: message.offset });
    },
  });
  return {
    all: () => messages,
    last: () => new Map(messages.filter((m) => m.value && 'action' in m.value).map((m) => [m.key, m.value])),
    stop: () => consumer.disconnect(),
  };
}
