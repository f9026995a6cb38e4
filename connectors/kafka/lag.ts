/**
 * Consumer-group lag of the partitions a consumer owns: per partition, the messages between the
 * group's committed offset and the partition's end (high watermark), read with the admin API
 * (https://kafka.js.org/docs/admin#a-name-fetch-offsets-a-fetch-consumer-group-offsets). A
 * partition the group never committed counts from its first message (its low watermark).
 */
import type { Admin } from 'kafkajs';

export async function partitionLag(admin: Admin, groupId: string, owned: Array<{ topic: string; partition: number }>): Promise<Record<string, number>> {
  const topics = [...new Set(owned.map((p) => p.topic))].sort();
  const committed = await admin.fetchOffsets({ groupId, topics });
  const lag: Record<string, number> = {};
  for (const topic of topics) {
    const done = new Map((committed.find((c) => c.topic === topic)?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
    for (const { partition, high, low } of await admin.fetchTopicOffsets(topic)) {
      if (!owned.some((p) => p.topic === topic && p.partition === partition)) continue;
      const from = done.get(partition) ?? -1;
      lag[`${topic}:${partition}`] = Math.max(0, Number(high) - (from >= 0 ? from : Number(low)));
    }
  }
  return lag;
}
