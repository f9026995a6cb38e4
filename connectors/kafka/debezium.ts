/** `format: debezium`: Debezium change events (placeholder until the shared decoder lands). */
import type { ConnectorContext } from '../../src/types.js';
import { UndecodableMessage, type Decoder } from './decoder.js';

export function debeziumDecoder(_lenses: ConnectorContext['lenses']): Decoder {
  return () => {
    throw new UndecodableMessage('format: debezium is not decoded yet');
  };
}
