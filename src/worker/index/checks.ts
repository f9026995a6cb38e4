/** Checks both index implementations share: lens names and the records of an upsert. */
import { describeError, TributaryError } from '../../errors.js';
import type { IndexRecord } from '../types.js';

/** Lens names are file and table names: letters, digits, `_` and `-`. */
export const LENS_NAME = /^[A-Za-z0-9_-]+$/;

export function checkLensName(lens: string): void {
  if (typeof lens !== 'string' || !LENS_NAME.test(lens)) {
    throw new TributaryError(`Invalid lens name ${JSON.stringify(lens)}: use letters, digits, '_' and '-' only`);
  }
}

/** Checks one record of an upsert (`dims` is the batch's dimension count); returns its metadata as JSON. */
function checkRecord(lens: string, r: IndexRecord, dims: number): string {
  if (typeof r.id !== 'string' || typeof r.content !== 'string' || typeof r.contentHash !== 'string') {
    throw new TypeError(`Record of lens ${lens}: id, content and contentHash must be strings`);
  }
  if (!(r.vector instanceof Float32Array)) throw new TypeError(`Record ${r.id} of lens ${lens}: vector must be a Float32Array`);
  if (r.vector.length === 0) throw new TributaryError(`Record ${r.id} of lens ${lens} has an empty vector`);
  if (r.vector.length !== dims) {
    throw new TributaryError(`Record ${r.id} of lens ${lens} has a ${r.vector.length}-dimensional vector; the batch's first has ${dims}`);
  }
  if (!allFinite(r.vector)) {
    throw new TributaryError(`Record ${r.id} of lens ${lens}: its vector holds ${r.vector.find((x) => !Number.isFinite(x))}`);
  }
  return metadataJson(lens, r.id, r.metadata);
}

/** Whether every value is finite, in one tight loop (NaN and ±Infinity times 0 are NaN, any other value ±0). */
function allFinite(vector: Float32Array): boolean {
  let zero = 0;
  for (let i = 0; i < vector.length; i++) zero += vector[i] * 0;
  return zero === 0;
}

/** Metadata must be a JSON object; returns it as JSON. */
function metadataJson(lens: string, id: string, metadata: unknown): string {
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
    throw new TypeError(`Record ${id} of lens ${lens}: metadata must be an object`);
  }
  try {
    return JSON.stringify(metadata);
  } catch (err) {
    throw new TributaryError(`Record ${id} of lens ${lens}: metadata is not JSON-serialisable (${describeError(err)})`, { cause: err });
  }
}

/** Checks the lens name and every record of an upsert; returns the batch's vector length and each record's metadata as JSON. */
export function checkUpsert(lens: string, records: IndexRecord[]): { dims: number; metadataJson: string[] } {
  checkLensName(lens);
  const first = records[0]?.vector;
  const dims = first instanceof Float32Array ? first.length : 0;
  return { dims, metadataJson: records.map((r) => checkRecord(lens, r, dims)) };
}

/** Checks the lens name and every record of an updateMetadata; returns each record's metadata as JSON. */
export function checkMetadataUpdate(lens: string, records: Array<{ id: string; metadata: Record<string, unknown> }>): string[] {
  checkLensName(lens);
  return records.map((r) => {
    if (typeof r.id !== 'string') throw new TypeError(`Record of lens ${lens}: id must be a string`);
    return metadataJson(lens, r.id, r.metadata);
  });
}
