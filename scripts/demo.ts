/**
 * `npm run demo`: runs the real `tributary run --config config/quickstart.yaml` (embedded
 * defaults: the bundled worker with the offline hash embedder and the embedded index) against
 * a throwaway Postgres with wal_level=logical: the system's PostgreSQL 15 when installed, else the
 * npm package's PostgreSQL 17 (devDependency pg17; TRIBUTARY_PG_VERSION picks another). It makes
 * a few changes, searches through the worker's SemiLayer-compatible API, shows what
 * `tributary status` says, then drains and stops. Needs nothing but this repository after npm ci.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startPostgres, freePort } from '../test/helpers/postgres.js';
import { eventually, runCli, spawnCli } from '../test/helpers/cli.js';

const config = resolve(import.meta.dirname, '../../config/quickstart.yaml');

async function main() {
  const pg = await startPostgres();
  console.log(`started a throwaway PostgreSQL ${pg.server.version} (${pg.server.from === 'npm' ? 'from npm' : pg.server.bin}, wal_level=logical)`);
  const shop = await pg.createDatabase('shop');
  await pg.query(shop, `CREATE TABLE products (id text PRIMARY KEY, name text, description text, price numeric);
    INSERT INTO products VALUES
      ('p_0451', 'Trail sock', 'Merino wool hiking sock', 12),
      ('p_7712', 'Air Glide 3', 'Lightweight running shoe with responsive foam', 89.99),
      ('p_2210', 'Cast iron skillet', 'Pre-seasoned pan for searing', 39.5)`);
  const listen = `127.0.0.1:${await freePort()}`;
  const env = {
    DATABASE_URL: shop,
    TRIBUTARY_LISTEN: listen,
    TRIBUTARY_DATA: mkdtempSync(join(tmpdir(), 'tributary-demo-')),
    TRIBUTARY_METRICS: `127.0.0.1:${await freePort()}`,
  };
  const search = async (query: string) => {
    const res = await fetch(`http://${listen}/v1/search/products`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk_local_search', 'content-type': 'application/json' },
      body: JSON.stringify({ query, limit: 2, mode: 'hybrid' }),
    });
    return (await res.json()) as { results: Array<{ sourceRowId: string; content: string; score: number }> };
  };
  const show = async (query: string) => {
    console.log(`\n$ curl -d '{"query":"${query}","limit":2,"mode":"hybrid"}' http://${listen}/v1/search/products`);
    for (const r of (await search(query)).results) console.log(`  ${r.sourceRowId}  score=${r.score.toFixed(2)}  ${JSON.stringify(r.content)}`);
  };

  console.log(`\n$ tributary run --config config/quickstart.yaml`);
  const daemon = spawnCli(['run', '--config', config], env);
  try {
    await eventually(async () => (await search('skillet').catch(() => ({ results: [] }))).results.length > 0, 'the initial full sync', 30_000);
    console.log('first start: the slot is created, then the worker indexes what already exists (full sync)');
    await show('running shoe');

    console.log('\nwriting: an insert, 100 price updates of one row (no new embedding: the text is unchanged), a delete');
    await pg.query(shop, `INSERT INTO products VALUES ('p_1001', 'Rain shell', 'Waterproof breathable hiking jacket', 140)`);
    await pg.query(shop, `DO $$ BEGIN FOR i IN 1..100 LOOP UPDATE products SET price = price + 1 WHERE id = 'p_7712'; END LOOP; END $$`);
    await pg.query(shop, `DELETE FROM products WHERE id = 'p_0451'`);
    await eventually(async () => (await search('waterproof jacket')).results[0]?.sourceRowId === 'p_1001', 'the new row searchable');
    await eventually(async () => !(await search('merino hiking sock')).results.some((r) => r.sourceRowId === 'p_0451'), 'the deleted row gone');
    await show('waterproof jacket');
    await show('hiking sock');

    await new Promise((r) => setTimeout(r, 1200)); // the daemon saves its status once a second
    console.log(`\n$ tributary status --config config/quickstart.yaml`);
    console.log((await runCli(['status', '--config', config], env)).output.trimEnd());
  } finally {
    console.log('\nSIGTERM: the daemon drains, acknowledges and exits');
    daemon.child.kill('SIGTERM');
    const code = await daemon.exited;
    console.log(`tributary exited with code ${code}`);
    await pg.stop();
    if (code !== 0) {
      console.log(daemon.output());
      process.exitCode = 1;
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
