/**
 * Binlog positions as Position text: JSON `{"file":"mysql-bin.000003","pos":1234,"gtid":"0-1-17"}`.
 * `file`/`pos` always (the place after the last whole transaction); `gtid` when the server has
 * GTIDs and resuming by GTID is on (MariaDB domain-server-sequence list, or MySQL uuid:interval set).
 */
import type { Position } from '../../src/types.js';

export interface BinlogPosition {
  file: string;
  pos: number;
  gtid?: string;
}

export function formatPosition(p: BinlogPosition): Position {
  return JSON.stringify(p.gtid === undefined ? { file: p.file, pos: p.pos } : { file: p.file, pos: p.pos, gtid: p.gtid });
}

export function parsePosition(text: Position): BinlogPosition {
  let p: Partial<BinlogPosition> | undefined;
  try {
    p = JSON.parse(text);
  } catch {
    // reported below
  }
  if (!p || typeof p.file !== 'string' || typeof p.pos !== 'number' || (p.gtid !== undefined && typeof p.gtid !== 'string')) {
    throw new RangeError(`not a binlog position: ${JSON.stringify(text)}`);
  }
  return { file: p.file, pos: p.pos, ...(p.gtid !== undefined ? { gtid: p.gtid } : {}) };
}

/** Orders positions by binlog file sequence number, then offset. */
export function comparePositions(a: BinlogPosition, b: BinlogPosition): number {
  const seq = (file: string) => Number(/\.(\d+)$/.exec(file)?.[1] ?? 0);
  return seq(a.file) - seq(b.file) || a.pos - b.pos;
}

/** `mysql-bin.000003:1234 (GTID 0-1-17)`, for messages. */
export function describePosition(p: BinlogPosition): string {
  return `${p.file}:${p.pos}${p.gtid ? ` (GTID ${p.gtid})` : ''}`;
}
