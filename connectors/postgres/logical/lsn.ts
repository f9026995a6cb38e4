/** Postgres LSNs as text (`16/B3748`, the form Postgres prints) and as bigint. */

export function parseLsn(text: string): bigint {
  const [hi, lo] = text.split('/');
  if (hi === undefined || lo === undefined) throw new RangeError(`not an LSN: ${text}`);
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

export function formatLsn(value: bigint): string {
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Reads an 8-byte LSN at `offset` without BigInt arithmetic. */
export function readLsn(buf: Buffer, offset: number): string {
  return `${buf.readUInt32BE(offset).toString(16).toUpperCase()}/${buf.readUInt32BE(offset + 4).toString(16).toUpperCase()}`;
}
