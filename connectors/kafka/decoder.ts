/**
 * What a kafka source's `format` does: turns one Kafka message into changes for the source's
 * lenses (./tributary.ts for the bus, ./debezium.ts for Debezium change events).
 */
import type { SourceChange } from '../../src/types.js';

export interface KafkaMessage {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  /** The message's timestamp, ms since the epoch. */
  timestamp: number;
}

/** What one message means. */
export interface Decoded {
  changes: SourceChange[];
  /** Lenses whose sink needs a full sync (a truncate, a bus sync request). */
  resyncs?: Array<{ lens: string; reason: string }>;
  /** Lenses that cannot take the message (no key for them): it is dead-lettered under each. */
  rejects?: Array<{ lens: string; reason: string }>;
}

/** A message that cannot be decoded, and the lenses it belongs to when that much is known (else none). */
export class UndecodableMessage extends Error {
  constructor(
    message: string,
    readonly lenses: string[] = [],
  ) {
    super(message);
  }
}

/** Decodes one message; throws UndecodableMessage for one it cannot read (it is dead-lettered). */
export type Decoder = (message: KafkaMessage) => Decoded;
