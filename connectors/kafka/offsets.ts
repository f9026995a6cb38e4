/**
 * The kafka source's position (docs/architecture.md, "Delivery guarantees"): the next offset of
 * every partition read so far in this consumer's current ownership, as JSON,
 * `{"g":<assignment generation>,"o":{"<topic>:<partition>":"<next offset>"}}`. Each checkpoint
 * carries every partition (the pipeline acknowledges only the newest safe checkpoint and skips
 * older ones), and the broker keeps the committed offsets: the group's committed offsets are
 * where a restart, or another member after a rebalance, goes on from.
 *
 * A rebalance may take partitions away while their changes are still in the pipeline. What is
 * acknowledged afterwards is committed only for partitions this consumer still owns and has
 * owned since the generation the position was read in: a partition that moved is re-read by its
 * new owner from the last commit (at-least-once), and never committed from here.
 */

/** `topic:partition`. */
export type PartitionKey = string;

export interface OffsetCommit {
  topic: string;
  partition: number;
  offset: string;
}

export class Offsets {
  /** The assignment generation: +1 on every group join. */
  private generation = 0;
  /** Partitions owned now, with the generation since which they have been owned without a break. */
  private readonly owned = new Map<PartitionKey, number>();
  /** The next offset of each partition read in this generation. */
  private fetched = new Map<PartitionKey, bigint>();
  /** The newest offset committed (or found committed) per partition. */
  private readonly committed = new Map<PartitionKey, bigint>();

  /** A new assignment (kafkajs GROUP_JOIN's `memberAssignment`): reading restarts from the committed offsets. */
  assigned(assignment: Record<string, number[]>): void {
    this.generation++;
    const now = new Set(Object.entries(assignment).flatMap(([topic, partitions]) => partitions.map((p) => `${topic}:${p}`)));
    for (const key of [...this.owned.keys()]) if (!now.has(key)) this.owned.delete(key);
    for (const key of now) {
      if (this.owned.has(key)) continue;
      this.owned.set(key, this.generation);
      this.committed.delete(key); // another member may have committed meanwhile
    }
    this.fetched = new Map();
  }

  /** The partitions owned now. */
  ownedPartitions(): Array<{ topic: string; partition: number }> {
    return [...this.owned.keys()].map(splitKey);
  }

  /** The topics owned now (for pause and resume). */
  topics(): string[] {
    return [...new Set([...this.owned.keys()].map((key) => splitKey(key).topic))];
  }

  /** A batch of `topic`/`partition` was read up to `lastOffset`. */
  read(topic: string, partition: number, lastOffset: string): void {
    this.fetched.set(`${topic}:${partition}`, BigInt(lastOffset) + 1n);
  }

  /** The position covering everything read so far in this generation. */
  position(): string {
    return JSON.stringify({ g: this.generation, o: Object.fromEntries([...this.fetched].map(([k, v]) => [k, v.toString()])) });
  }

  /**
   * What acknowledging `position` may commit: its partitions still owned since its generation,
   * past what was committed. Marks them committed (a failed commit is only re-read later).
   */
  commits(position: string): OffsetCommit[] {
    const { g, o } = JSON.parse(position) as { g: number; o: Record<PartitionKey, string> };
    const out: OffsetCommit[] = [];
    for (const [key, text] of Object.entries(o)) {
      const since = this.owned.get(key);
      const offset = BigInt(text);
      if (since === undefined || since > g || offset <= (this.committed.get(key) ?? -1n)) continue;
      this.committed.set(key, offset);
      out.push({ ...splitKey(key), offset: text });
    }
    return out;
  }
}

function splitKey(key: PartitionKey): { topic: string; partition: number } {
  const at = key.lastIndexOf(':');
  return { topic: key.slice(0, at), partition: Number(key.slice(at + 1)) };
}
