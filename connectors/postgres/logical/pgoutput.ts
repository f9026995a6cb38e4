/**
 * A lean pgoutput (protocol version 1) decoder. It decodes only what a change of a lens
 * needs: transaction boundaries, relations, and the key columns of each row; every other
 * column is skipped by its length. The library's own decoder builds a full object per row,
 * which is most of the cost of reading WAL.
 * https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
 */
import type { Client } from 'pg';
import { encodeId } from '../../../src/ids.js';
import { pgTableName } from '../../../src/postgres.js';
import { readLsn } from './lsn.js';

/** A lens reading a table: the names of its key columns, in key order. */
export interface LensKey {
  lens: string;
  keyColumns: string[];
}

/** What the decoder reports; `lsn` values are text LSNs. */
export interface DecodeHandler {
  begin(commitTimeMs: number): void;
  commit(endLsn: string): void;
  /** A row change of a lens; `oldId` is set when an update changed the key. */
  row(lens: string, action: 'upsert' | 'delete', id: string, oldId?: string): void;
  truncate(lens: string): void;
  /** A row whose key could not be read (an unchanged TOASTed key column). */
  unreadableKey(lens: string, table: string): void;
  /**
   * The table's new definition lacks key column `column` of `lens` (renamed or dropped): the
   * lens's changes cannot be keyed until it is back. Reported once per Relation message.
   */
  keyGone(lens: string, table: string, column: string): void;
  /** The first change of `lens` skipped because its key is gone (later ones are only counted). */
  skippedUnkeyed(lens: string): void;
  /** A row change of `table`, a relation in the publication that no lens table claims. */
  unmatched(table: string): void;
  /** True while the decoder waits for a relation's route (the connector pauses the socket), false after. */
  waiting(on: boolean): void;
  /** Looking up a relation's route failed: the stream must start again (nothing after it was reported). */
  failed(err: unknown): void;
}

/**
 * Which lens table a relation's changes belong to: the relation itself when it is a lens table,
 * its nearest lens-table ancestor when it is a partition or inheritance child of one (pgoutput
 * names the leaf unless the publication publishes via the partition root), null when none.
 * A promise when the answer needs the server; the decoder holds later messages meanwhile.
 */
export type RelationRouter = (relId: number, table: string) => string | null | Promise<string | null>;

interface LensDecoder {
  lens: string;
  /** Column positions of the key, in key order; undefined when a key column is gone from the table. */
  positions?: number[];
}

interface Relation {
  /** The relation's own name (a leaf partition, a child, or the lens table). */
  table: string;
  /** No lens table claims it: its changes are reported as unmatched. */
  unmatched: boolean;
  /** Undefined when no lens reads this table: its rows are skipped undecoded. */
  lenses?: LensDecoder[];
  /** Type OID per column, for id encoding. */
  types: number[];
  /** Columns any lens needs decoded. */
  wanted: boolean[];
}

const PG_EPOCH_MS = 946_684_800_000;
/** A pg-logical-replication output plugin (same shape as its AbstractPlugin). */
export class LeanPgoutputPlugin {
  readonly options: { publicationNames: string[] };
  private readonly relations = new Map<number, Relation>();
  /** Decoded key column values of the tuple just read, by column position. */
  private values: (string | undefined)[] = [];
  private offset = 0;
  /** Changes skipped per lens because its key column is gone. */
  readonly skipped = new Map<string, number>();
  /** Messages received while a relation's route is looked up, decoded in order once it is known. */
  private held: Buffer[] | undefined;
  /** Bumped by `reset`: a lookup of an ended stream is ignored. */
  private generation = 0;

  constructor(
    publicationNames: string[],
    /** Lenses by lens table (canonical name, src/table-name.ts). */
    private readonly lensesByTable: Map<string, LensKey[]>,
    private readonly handler: DecodeHandler,
    private readonly route: RelationRouter = (_relId, table) => (lensesByTable.has(table) ? table : null),
  ) {
    this.options = { publicationNames };
  }

  /** True while messages are held for a route lookup: nothing after them may be confirmed. */
  get busy(): boolean {
    return this.held !== undefined;
  }

  /** A new stream starts: forget held messages and pending lookups of the last one. */
  reset(): void {
    this.generation++;
    this.held = undefined;
    this.relations.clear();
  }

  get name(): string {
    return 'pgoutput';
  }

  start(client: Client, slotName: string, lastLsn: string): Promise<unknown> {
    const pubs = this.options.publicationNames.map((p) => p.replace(/'/g, "''")).join(',');
    return client.query(
      `START_REPLICATION SLOT "${slotName}" LOGICAL ${lastLsn} (proto_version '1', publication_names '${pubs}')`,
    );
  }

  /** Decodes one XLogData payload and reports it (or holds it while a route is looked up). */
  parse(buf: Buffer): undefined {
    if (this.held) this.held.push(Buffer.from(buf));
    else this.decode(buf);
    return undefined;
  }

  private decode(buf: Buffer): void {
    switch (buf[0]) {
      case 0x42 /* B */:
        this.handler.begin(readTimestamp(buf, 9));
        break;
      case 0x43 /* C */:
        this.handler.commit(readLsn(buf, 10));
        break;
      case 0x52 /* R */:
        this.relation(buf);
        break;
      case 0x49 /* I */:
        this.insert(buf);
        break;
      case 0x55 /* U */:
        this.update(buf);
        break;
      case 0x44 /* D */:
        this.delete(buf);
        break;
      case 0x54 /* T */:
        this.truncate(buf);
        break;
      default: // origin, type, logical message: nothing a lens needs
    }
  }

  /** Decodes the held messages until they are done or another lookup starts. */
  private release(): void {
    const held = this.held!;
    this.held = undefined;
    while (held.length) {
      this.decode(held.shift()!);
      const again = this.held as Buffer[] | undefined; // set again by a relation that needs a lookup
      if (again) {
        again.push(...held);
        return;
      }
    }
    this.handler.waiting(false);
  }

  private relation(buf: Buffer): void {
    const relId = buf.readUInt32BE(1);
    let off = 5;
    const nsEnd = buf.indexOf(0, off);
    const schema = buf.toString('utf8', off, nsEnd);
    off = nsEnd + 1;
    const nameEnd = buf.indexOf(0, off);
    const name = buf.toString('utf8', off, nameEnd);
    off = nameEnd + 1 + 1; // replica identity setting
    const ncols = buf.readUInt16BE(off);
    off += 2;
    const names: string[] = [];
    const types: number[] = [];
    for (let i = 0; i < ncols; i++) {
      off += 1; // flags
      const end = buf.indexOf(0, off);
      names.push(buf.toString('utf8', off, end));
      off = end + 1;
      types.push(buf.readUInt32BE(off));
      off += 8; // type oid, type modifier
    }
    const table = pgTableName(schema, name);
    const routed = this.route(relId, table);
    if (!(routed instanceof Promise)) return this.addRelation(relId, table, names, types, routed);
    const generation = this.generation;
    this.held = [];
    this.handler.waiting(true);
    routed.then(
      (root) => {
        if (generation !== this.generation) return;
        this.addRelation(relId, table, names, types, root);
        this.release();
      },
      (err) => generation === this.generation && this.handler.failed(err),
    );
  }

  /** Records a relation and, for each lens of its lens table `root`, where its key columns are. */
  private addRelation(relId: number, table: string, names: string[], types: number[], root: string | null): void {
    const lensKeys = root === null ? undefined : this.lensesByTable.get(root);
    const wanted = new Array<boolean>(names.length).fill(false);
    const lenses = lensKeys?.map(({ lens, keyColumns }): LensDecoder => {
      const gone = keyColumns.find((col) => !names.includes(col));
      if (gone !== undefined) {
        this.handler.keyGone(lens, table, gone);
        return { lens };
      }
      const positions = keyColumns.map((col) => names.indexOf(col));
      for (const at of positions) wanted[at] = true;
      return { lens, positions };
    });
    this.relations.set(relId, { table, unmatched: !lensKeys, lenses, types, wanted });
  }

  /** Reads a TupleData at `this.offset`, keeping wanted columns in `this.values`. */
  private readTuple(buf: Buffer, rel: Relation): void {
    let off = this.offset;
    const ncols = buf.readUInt16BE(off);
    off += 2;
    const values = this.values;
    values.length = ncols;
    for (let i = 0; i < ncols; i++) {
      const kind = buf[off++];
      if (kind === 0x74 /* t */ || kind === 0x62 /* b */) {
        const len = buf.readUInt32BE(off);
        off += 4;
        values[i] = rel.wanted[i] ? buf.toString('utf8', off, off + len) : undefined;
        off += len;
      } else {
        values[i] = undefined; // n: null, u: unchanged TOAST
      }
    }
    this.offset = off;
  }

  private idOf(rel: Relation, lens: LensDecoder): string | undefined {
    const positions = lens.positions;
    if (!positions) return undefined;
    if (positions.length === 1) return this.values[positions[0]];
    const keyValues: string[] = [];
    const keyTypes: number[] = [];
    for (const at of positions) {
      const v = this.values[at];
      if (v === undefined) return undefined;
      keyValues.push(v);
      keyTypes.push(rel.types[at]);
    }
    return encodeId(keyValues, keyTypes);
  }

  /** Reports the tuple just read to every lens of `rel`; `oldIds` are the ids before an update. */
  private emit(rel: Relation, action: 'upsert' | 'delete', oldIds?: (string | undefined)[]): void {
    const lenses = rel.lenses!;
    for (let i = 0; i < lenses.length; i++) {
      if (!lenses[i].positions) {
        this.skip(lenses[i].lens);
        continue;
      }
      const oldId = oldIds?.[i];
      // An unchanged TOASTed key is absent from the new tuple but present in the old one.
      const id = this.idOf(rel, lenses[i]) ?? oldId;
      if (id === undefined) this.handler.unreadableKey(lenses[i].lens, rel.table);
      else this.handler.row(lenses[i].lens, action, id, oldId !== undefined && oldId !== id ? oldId : undefined);
    }
  }

  /** Counts a change of a lens whose key is gone; reports the first. */
  private skip(lens: string): void {
    const n = (this.skipped.get(lens) ?? 0) + 1;
    this.skipped.set(lens, n);
    if (n === 1) this.handler.skippedUnkeyed(lens);
  }

  /** The relation of a row change if lenses read it; an unmatched one is reported. */
  private lensRelation(relId: number): (Relation & { lenses: LensDecoder[] }) | undefined {
    const rel = this.relations.get(relId);
    if (rel?.unmatched) this.handler.unmatched(rel.table);
    return rel?.lenses ? (rel as Relation & { lenses: LensDecoder[] }) : undefined;
  }

  private insert(buf: Buffer): void {
    const rel = this.lensRelation(buf.readUInt32BE(1));
    if (!rel) return;
    this.offset = 6; // tag, relid, 'N'
    this.readTuple(buf, rel);
    this.emit(rel, 'upsert');
  }

  private update(buf: Buffer): void {
    const rel = this.lensRelation(buf.readUInt32BE(1));
    if (!rel) return;
    this.offset = 5;
    let oldIds: (string | undefined)[] | undefined;
    const marker = buf[this.offset++];
    if (marker === 0x4b /* K */ || marker === 0x4f /* O */) {
      this.readTuple(buf, rel);
      oldIds = rel.lenses.map((lens) => this.idOf(rel, lens));
      this.offset++; // 'N'
    }
    this.readTuple(buf, rel);
    this.emit(rel, 'upsert', oldIds);
  }

  private delete(buf: Buffer): void {
    const rel = this.lensRelation(buf.readUInt32BE(1));
    if (!rel) return;
    this.offset = 6; // tag, relid, 'K' or 'O'
    this.readTuple(buf, rel);
    this.emit(rel, 'delete');
  }

  private truncate(buf: Buffer): void {
    const count = buf.readUInt32BE(1);
    for (let i = 0; i < count; i++) {
      const rel = this.relations.get(buf.readUInt32BE(6 + i * 4));
      for (const lens of rel?.lenses ?? []) this.handler.truncate(lens.lens);
    }
  }
}

/** A pgoutput timestamp (µs since 2000-01-01) at `offset`, as ms since the Unix epoch. */
function readTimestamp(buf: Buffer, offset: number): number {
  return Number(buf.readBigInt64BE(offset) / 1000n) + PG_EPOCH_MS;
}
