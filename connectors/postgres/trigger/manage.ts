/** `tributary triggers install|uninstall --lens NAME`: trigger capture DDL run by hand. */
import pg from 'pg';
import type { Config } from '../../../src/config/types.js';
import { TributaryError } from '../../../src/errors.js';
import { classifyPgError, pgConnection } from '../../../src/postgres.js';
import { installTriggers, resolveTables, uninstallTriggers } from './setup.js';

/** Installs or removes the capture of lens `lensName`'s table; returns lines for the user. */
export async function manageTriggers(action: 'install' | 'uninstall', config: Config, lensName: string): Promise<string[]> {
  const lens = config.lenses[lensName];
  const source = config.sources[lens.source];
  if (source.type !== 'postgres') throw new TributaryError(`lens ${lensName} reads source ${lens.source}, a ${source.type} database: capture triggers are for postgres sources`);
  const where = `source "${lens.source}"`;
  // Every lens of the source on this table: the trigger records the key columns of them all.
  const sharing = Object.entries(config.lenses)
    .filter(([, l]) => l.source === lens.source && l.table === lens.table)
    .map(([name, l]) => ({ name, table: l.table, primaryKey: l.primaryKey }));
  const client = new pg.Client(pgConnection(source.url, { application_name: `tributary:triggers:${lens.source}` }));
  client.on('error', () => {});
  try {
    await client.connect();
    if (action === 'install') {
      const created = await installTriggers(client, where, source.triggerSchema, lens.source, await resolveTables(client, where, sharing));
      return [
        created.length
          ? `installed capture triggers on ${lens.table} for source ${lens.source} (changelog: ${source.triggerSchema}.changelog)`
          : `capture triggers on ${lens.table} for source ${lens.source} were already installed (function brought up to date)`,
      ];
    }
    const removed = await uninstallTriggers(client, source.triggerSchema, lens.source, lens.table);
    const others = sharing.filter((l) => l.name !== lensName).map((l) => l.name);
    return [
      removed.length ? `removed ${removed.join(', ')}` : `no capture triggers of source ${lens.source} on ${lens.table}: nothing to remove`,
      ...(others.length ? [`note: lens(es) ${others.join(', ')} read the same table and are no longer captured either`] : []),
    ];
  } catch (err) {
    throw classifyPgError(err, where);
  } finally {
    await client.end().catch(() => {});
  }
}
