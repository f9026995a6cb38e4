/**
 * `format: tributary`: the change bus another Tributary's kafka sink writes (src/bus.ts).
 * Lenses are matched by name; messages of lenses this source does not have are skipped.
 */
import { decodeBusMessage } from '../../src/bus.js';
import { describeError } from '../../src/errors.js';
import { UndecodableMessage, type Decoded, type Decoder } from './decoder.js';

export function tributaryDecoder(lenses: ReadonlySet<string>): Decoder {
  return (message): Decoded => {
    let m;
    try {
      m = decodeBusMessage(message.value);
    } catch (err) {
      const lens = message.key?.toString('utf8').split('/')[0];
      throw new UndecodableMessage(`not a Tributary bus message: ${describeError(err)}`, lens !== undefined && lenses.has(lens) ? [lens] : []);
    }
    if (!lenses.has(m.lens)) return { changes: [] };
    if ('sync' in m) return { changes: [], resyncs: m.sync === 'full' ? [{ lens: m.lens, reason: 'a full sync requested on the bus' }] : [] };
    return { changes: [{ lens: m.lens, id: m.id, action: m.action, committedAt: m.committedAt, ...(m.row ? { row: m.row } : {}) }] };
  };
}
