/**
 * The worker's durable queue of one lens: every accepted request is appended to a journal and
 * fsynced before it is acknowledged, so a request answered 202 survives a crash. Requests that
 * arrive while a job is still queued merge into it (last action per id wins; a full sweep
 * absorbs an incremental one). The journal is emptied once everything in it was processed.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Action } from '../types.js';
import type { IngestMode } from './types.js';

export type Sweep = 'full' | 'incremental';

/** The work one job does. */
export interface Work {
  changes: Map<string, Action>;
  sweep?: Sweep;
}

interface Entry {
  seq: number;
  jobId: string;
  mode: IngestMode;
  changes?: Array<{ id: string; action: Action }>;
}

export class LensQueue {
  private readonly file: string;
  private fd: number;
  private seq = 0;
  /** The job waiting to run, and the last journal entry merged into it. */
  queued: { jobId: string; work: Work; lastSeq: number } | undefined;

  constructor(dir: string, readonly lens: string) {
    mkdirSync(dir, { recursive: true });
    this.file = join(dir, `${lens}.jsonl`);
    this.fd = openSync(this.file, 'a+');
    this.replay();
  }

  /** Re-queues whatever the journal holds (the previous run did not finish it). */
  private replay(): void {
    const text = readFileSync(this.file, 'utf8');
    for (const line of text.split('\n')) {
      if (!line) continue;
      let entry: Entry;
      try {
        entry = JSON.parse(line);
      } catch {
        continue; // a torn last line: its request was never acknowledged
      }
      this.merge(entry);
    }
  }

  private merge(entry: Entry): boolean {
    this.seq = Math.max(this.seq, entry.seq);
    const deduplicated = this.queued !== undefined;
    this.queued ??= { jobId: entry.jobId, work: { changes: new Map() }, lastSeq: entry.seq };
    const work = this.queued.work;
    for (const c of entry.changes ?? []) {
      work.changes.delete(c.id); // keep insertion order = order of the last action
      work.changes.set(c.id, c.action);
    }
    if (entry.mode === 'full') work.sweep = 'full';
    else if (entry.mode === 'incremental' && work.sweep !== 'full') work.sweep = 'incremental';
    this.queued.lastSeq = entry.seq;
    return deduplicated;
  }

  get pendingChanges(): number {
    return this.queued?.work.changes.size ?? 0;
  }

  /** Appends and fsyncs a request, then merges it into the queued job. */
  add(jobId: string, mode: IngestMode, changes?: Array<{ id: string; action: Action }>): { jobId: string; deduplicated: boolean } {
    const entry: Entry = { seq: this.seq + 1, jobId: this.queued?.jobId ?? jobId, mode, changes };
    writeSync(this.fd, JSON.stringify(entry) + '\n');
    fsyncSync(this.fd);
    const deduplicated = this.merge(entry);
    return { jobId: this.queued!.jobId, deduplicated };
  }

  /** Takes the queued job to run it. */
  take(): { jobId: string; work: Work; lastSeq: number } | undefined {
    const job = this.queued;
    this.queued = undefined;
    return job;
  }

  /**
   * Everything up to `lastSeq` is processed: rewrites the journal to hold only what is still
   * queued (nothing, when idle), so it stays as small as the pending work.
   */
  done(lastSeq: number): void {
    if (lastSeq < this.seq && !this.queued) return; // cannot happen: newer entries are always queued
    const lines: string[] = [];
    if (this.queued) {
      const { jobId, work, lastSeq: seq } = this.queued;
      const changes = [...work.changes].map(([id, action]) => ({ id, action }));
      if (changes.length) lines.push(JSON.stringify({ seq, jobId, mode: 'records', changes } satisfies Entry));
      if (work.sweep) lines.push(JSON.stringify({ seq, jobId, mode: work.sweep } satisfies Entry));
    }
    const tmp = `${this.file}.tmp`;
    const fd = openSync(tmp, 'w');
    if (lines.length) writeSync(fd, lines.join('\n') + '\n');
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, this.file);
    closeSync(this.fd);
    this.fd = openSync(this.file, 'a+');
  }

  close(): void {
    closeSync(this.fd);
  }
}
