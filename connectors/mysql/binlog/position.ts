/**
 * Binlog positions as Position text: `mysql-bin.000003:1234`, or `mysql-bin.000003:1234@0-1-17`
 * with the GTID state there. `file:pos` always (the place after the last whole transaction);
 * `@gtid` when the server has GTIDs and resuming by GTID is on (a MariaDB domain-server-sequence
 * list like `0-1-17,1-2-5`, or a MySQL set like `3E11FA47-71CA-11E1-9E33-C80AA9429562:1-77`).
 */
import type { Position } from '../../../src/types.js';

export interface BinlogPosition {
  file: string;
  pos: number;
  gtid?: string;
}

export function formatPosition(p: BinlogPosition): Position {
  return `${p.file}:${p.pos}${p.gtid === undefined ? '' : `@${p.gtid}`}`;
}

export function parsePosition(text: Position): BinlogPosition {
  const at = text.indexOf('@');
  const place = at < 0 ? text : text.slice(0, at);
  const m = /^(.+):(\d+)$/.exec(place);
  if (!m) throw new RangeError(`not a binlog position (file:pos[@gtid]): ${JSON.stringify(text)}`);
  return { file: m[1], pos: Number(m[2]), ...(at < 0 ? {} : { gtid: text.slice(at + 1) }) };
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
