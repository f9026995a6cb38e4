/**
 * The shards of a stream and their lineage. After a split or merge the parent shards close
 * (they get an ending sequence number) and new child shards take their hash range; one key
 * keeps its order only if a child is read after its parents were read to their end.
 */
import { ListShardsCommand, type KinesisClient } from '@aws-sdk/client-kinesis';

export interface ShardInfo {
  id: string;
  /** The parent (split) or parents (merge) it continues. */
  parents: string[];
}

/** Every shard of the stream, open and closed (ListShards, all pages). */
export async function listShards(client: KinesisClient, stream: string, signal: AbortSignal): Promise<ShardInfo[]> {
  const shards: ShardInfo[] = [];
  let nextToken: string | undefined;
  do {
    const out = await client.send(new ListShardsCommand(nextToken ? { NextToken: nextToken } : { StreamName: stream }), { abortSignal: signal });
    for (const s of out.Shards ?? []) {
      shards.push({ id: s.ShardId!, parents: [s.ParentShardId, s.AdjacentParentShardId].filter((p): p is string => !!p) });
    }
    nextToken = out.NextToken;
  } while (nextToken);
  return shards;
}

/** Shards to start reading now: not done, not being read, and each parent done or gone from the stream. */
export function readyShards(shards: ShardInfo[], done: ReadonlySet<string>, reading: ReadonlySet<string>): ShardInfo[] {
  const existing = new Set(shards.map((s) => s.id));
  return shards.filter((s) => !done.has(s.id) && !reading.has(s.id) && s.parents.every((p) => done.has(p) || !existing.has(p)));
}
