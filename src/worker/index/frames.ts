/**
 * The binary record log of the embedded vector index: one file per lens and generation
 * (`<lens>.<gen>.log`), appended to and fsynced by every write, read back by position.
 *
 * A frame is `u32 payload length | u32 CRC-32 of the payload | payload`, little-endian. The
 * payload is `u8 op | f64 seq | f64 key | id`, and for an upsert then `hash | content |
 * metadata JSON | u32 dims | dims × f32`; strings are `u32 byte length | UTF-8`. `seq` numbers
 * the lens's operations; `key` is the record's key in the HNSW graph (./hnsw.ts). A frame whose
 * length or CRC does not check out ends the readable log: a write a crash interrupted.
 */
import type { FileHandle } from 'node:fs/promises';
import { readSync } from 'node:fs';
import { crc32 } from 'node:zlib';

export const OP_UPSERT = 1;
export const OP_DELETE = 2;
const HEADER = 8;
/** Frames larger than this are not believed (a damaged length field). */
const MAX_FRAME = 256 << 20;
const SCAN_CHUNK = 8 << 20;

export interface UpsertFrame {
  op: typeof OP_UPSERT;
  seq: number;
  key: number;
  id: string;
  contentHash: string;
  content: string;
  metadataJson: string;
  vector: Float32Array;
  /** `metadataJson` parsed, when the writer has it at hand (not stored). */
  metadata?: Record<string, unknown>;
}

export interface DeleteFrame {
  op: typeof OP_DELETE;
  seq: number;
  key: number;
  id: string;
}

export type Frame = UpsertFrame | DeleteFrame;

/**
 * Encodes frames into one buffer (one write), from `alloc` (a reused buffer: a write's bytes are
 * garbage once written); returns each frame's offset within it.
 */
export function encodeFrames(frames: Frame[], alloc: (size: number) => Buffer = Buffer.allocUnsafe): { bytes: Buffer; offsets: number[] } {
  const sizes = frames.map(payloadSize);
  const bytes = alloc(sizes.reduce((sum, size) => sum + HEADER + size, 0));
  const offsets: number[] = [];
  let at = 0;
  frames.forEach((frame, i) => {
    const start = at + HEADER;
    const end = encodePayload(frame, bytes, start);
    bytes.writeUInt32LE(sizes[i], at);
    bytes.writeUInt32LE(crc32(bytes.subarray(start, end)), at + 4);
    offsets.push(at);
    at = end;
  });
  return { bytes, offsets };
}

/** A buffer reused for one write after another: `take` grows it when a write needs more. */
export class ScratchBuffer {
  private buffer = Buffer.alloc(0);

  take = (size: number): Buffer => {
    if (this.buffer.length < size) this.buffer = Buffer.allocUnsafe(Math.max(size, 2 * this.buffer.length));
    return this.buffer.subarray(0, size);
  };
}

function payloadStrings(frame: Frame): string[] {
  return frame.op === OP_UPSERT ? [frame.id, frame.contentHash, frame.content, frame.metadataJson] : [frame.id];
}

function payloadSize(frame: Frame): number {
  const strings = payloadStrings(frame).reduce((sum, s) => sum + 4 + Buffer.byteLength(s, 'utf8'), 0);
  return 17 + strings + (frame.op === OP_UPSERT ? 4 + frame.vector.length * 4 : 0);
}

/** Writes the frame's payload into `out` at `at`; returns where it ends. */
function encodePayload(frame: Frame, out: Buffer, start: number): number {
  out.writeUInt8(frame.op, start);
  out.writeDoubleLE(frame.seq, start + 1);
  out.writeDoubleLE(frame.key, start + 9);
  let at = start + 17;
  for (const s of payloadStrings(frame)) {
    const length = out.write(s, at + 4, 'utf8');
    out.writeUInt32LE(length, at);
    at += 4 + length;
  }
  if (frame.op === OP_UPSERT) {
    out.writeUInt32LE(frame.vector.length, at);
    out.set(new Uint8Array(frame.vector.buffer, frame.vector.byteOffset, frame.vector.byteLength), at + 4);
    at += 4 + frame.vector.byteLength;
  }
  return at;
}

/** Decodes a payload; throws on anything malformed. */
export function decodePayload(payload: Buffer): Frame {
  const op = payload.readUInt8(0);
  const seq = payload.readDoubleLE(1);
  const key = payload.readDoubleLE(9);
  let at = 17;
  const text = (): string => {
    const length = payload.readUInt32LE(at);
    if (at + 4 + length > payload.length) throw new RangeError('string past the end of the frame');
    const s = payload.toString('utf8', at + 4, at + 4 + length);
    at += 4 + length;
    return s;
  };
  const id = text();
  if (op === OP_DELETE) return { op, seq, key, id };
  if (op !== OP_UPSERT) throw new RangeError(`unknown operation ${op}`);
  const contentHash = text();
  const content = text();
  const metadataJson = text();
  const dims = payload.readUInt32LE(at);
  if (at + 4 + dims * 4 !== payload.length) throw new RangeError('vector length does not match the frame');
  // A copy: aligned, and independent of the read buffer.
  const vector = new Float32Array(dims);
  new Uint8Array(vector.buffer).set(payload.subarray(at + 4, at + 4 + dims * 4));
  return { op, seq, key, id, contentHash, content, metadataJson, vector };
}

/** The payload of the frame at `at` of `buf`: 'short' when `buf` ends first, 'damaged' when its length or CRC is wrong. */
function payloadAt(buf: Buffer, at: number): Buffer | 'short' | 'damaged' {
  if (at + HEADER > buf.length) return 'short';
  const length = buf.readUInt32LE(at);
  if (length > MAX_FRAME || length < 17) return 'damaged';
  if (at + HEADER + length > buf.length) return 'short';
  const payload = buf.subarray(at + HEADER, at + HEADER + length);
  return crc32(payload) === buf.readUInt32LE(at + 4) ? payload : 'damaged';
}

/** The id of an encoded frame, without decoding the rest. */
export function payloadId(payload: Buffer): string {
  return payload.toString('utf8', 21, 21 + payload.readUInt32LE(17));
}

/** Copies the vector of an encoded upsert frame (the payload's last `dims` floats) into `out`. */
export function payloadVector(payload: Buffer, out: Float32Array): Float32Array {
  const bytes = out.length * 4;
  new Uint8Array(out.buffer, out.byteOffset, bytes).set(payload.subarray(payload.length - bytes));
  return out;
}

/**
 * Reads the frames of `file` from byte `from`, calling `onFrame` with each frame's payload
 * (decode it with `decodePayload`, or only what is needed) and its offset. Returns the offset just past the last intact frame: the file's end, or where a
 * write torn by a crash starts. A damaged frame with more bytes after it is `damaged` (thrown).
 */
export async function scanFrames(file: FileHandle, from: number, onFrame: (payload: Buffer, offset: number) => void): Promise<number> {
  const size = (await file.stat()).size;
  let pos = from; // File offset of buf[0].
  let buf = Buffer.alloc(0);
  for (;;) {
    let at = 0;
    let next = payloadAt(buf, at);
    for (; next instanceof Buffer; next = payloadAt(buf, at)) {
      onFrame(next, pos + at);
      at += HEADER + next.length;
    }
    pos += at;
    buf = buf.subarray(at);
    if (next === 'damaged') {
      const end = buf.length >= 4 ? pos + HEADER + buf.readUInt32LE(0) : size;
      if (end < size) throw new RangeError(`damaged frame at byte ${pos} of ${size}`);
      return pos;
    }
    if (pos + buf.length >= size) return pos;
    const need = buf.length >= HEADER ? HEADER + buf.readUInt32LE(0) - buf.length : HEADER;
    const chunk = Buffer.alloc(Math.min(size - pos - buf.length, Math.max(SCAN_CHUNK, need)));
    const { bytesRead } = await file.read(chunk, 0, chunk.length, pos + buf.length);
    if (bytesRead === 0) return pos;
    buf = Buffer.concat([buf, chunk.subarray(0, bytesRead)]);
  }
}

/** The header (payload length, CRC) of the frame at `offset` of `fd`. */
function readHeaderSync(fd: number, offset: number): Buffer {
  const header = Buffer.alloc(HEADER);
  if (readSync(fd, header, 0, HEADER, offset) !== HEADER) throw new RangeError(`no frame at ${offset}`);
  return header;
}

/**
 * Reads only the vector of the upsert frame at `offset` of `fd` (the payload's last `dims`
 * floats) into `out`, synchronously: two page-cached reads, nothing decoded. For rescoring
 * search candidates; the frame's checksum was checked when it was written or replayed.
 */
export function readVectorSync(fd: number, offset: number, out: Float32Array): Float32Array {
  const bytes = new Uint8Array(out.buffer, out.byteOffset, out.length * 4);
  const at = offset + HEADER + readHeaderSync(fd, offset).readUInt32LE(0) - bytes.length;
  if (readSync(fd, bytes, 0, bytes.length, at) !== bytes.length) throw new RangeError(`frame at ${offset} is cut short`);
  return out;
}

/**
 * Reads the one frame at `offset` of the file descriptor `fd`, synchronously: a page-cached
 * read of a few kilobytes, done between two awaits so the offset cannot go stale.
 */
export function readFrameSync(fd: number, offset: number): Frame {
  const header = readHeaderSync(fd, offset);
  const payload = Buffer.alloc(header.readUInt32LE(0));
  if (readSync(fd, payload, 0, payload.length, offset + HEADER) !== payload.length) throw new RangeError(`frame at ${offset} is cut short`);
  if (crc32(payload) !== header.readUInt32LE(4)) throw new RangeError(`frame at ${offset} fails its checksum`);
  return decodePayload(payload);
}
