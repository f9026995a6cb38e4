/**
 * `npm run demo`: runs the real `tributary run --config config/quickstart.yaml` against a
 * throwaway Postgres (started from the installed binaries with wal_level=logical) and a
 * local SemiLayer-compatible ingest API, makes a few changes, shows what arrives and what
 * `tributary status` says, then drains and stops. Needs nothing but this repository and
 * the PostgreSQL server binaries.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startPostgres, freePort } from '../test/helpers/postgres.js';
import { startSemilayerServer } from '../test/helpers/semilayer-server.js';
import { eventually, runCli, spawnCli } from '../test/helpers/daemon.js';

const config = resolve(import.meta.dirname, '../../config/quickstart.yaml');

async function main() {
  console.log('starting a throwaway PostgreSQL (wal_level=logical) and a local SemiLayer-compatible ingest API…');
  const [pg, api] = await Promise.all([startPostgres(), startSemilayerServer({ keys: ['ik_demo'] })]);
  const shop = await pg.createDatabase('shop');
  await pg.query(shop, `CREATE TABLE products (id text PRIMARY KEY, name text, price numeric);
    INSERT INTO products VALUES ('p_0451', 'Trail sock', 12), ('p_7712', 'Air Glide 3', 89.99)`);
  const env = {
    DATABASE_URL: shop,
    SEMILAYER_URL: api.url,
    SEMILAYER_INGEST_KEY: 'ik_demo',
    TRIBUTARY_DATA: mkdtempSync(join(tmpdir(), 'tributary-demo-')),
    TRIBUTARY_METRICS: `127.0.0.1:${await freePort()}`,
  };
  let shown = 0;
  const showRequests = () => {
    for (const r of api.requests.slice(shown)) {
      console.log(`  ← POST /v1/ingest/${r.lens} ${JSON.stringify(r.body)}  → ${r.status}`);
    }
    shown = api.requests.length;
  };

  console.log(`\n$ tributary run --config config/quickstart.yaml`);
  const daemon = spawnCli(['run', '--config', config], env);
  try {
    await eventually(() => api.requests.some((r) => r.mode === 'full'), 'the initial full sync', 30_000);
    console.log('first start: the slot is created, then the API is asked for a full sync of what already exists');
    showRequests();

    console.log('\nwriting: two inserts, 100 price updates of one row, a delete, a key change');
    await pg.query(shop, `INSERT INTO products VALUES ('p_1001', 'Rain shell', 140), ('p_1002', 'Day pack', 60)`);
    await pg.query(shop, `DO $$ BEGIN FOR i IN 1..100 LOOP UPDATE products SET price = price + 1 WHERE id = 'p_7712'; END LOOP; END $$`);
    await pg.query(shop, `DELETE FROM products WHERE id = 'p_0451'`);
    await pg.query(shop, `UPDATE products SET id = 'p_1003' WHERE id = 'p_1002'`);
    await eventually(() => api.lastAction('products').get('p_1003') === 'upsert', 'the changes to arrive');
    showRequests();
    console.log('  (104 row changes arrived as one change per id: the last action per id wins)');

    await new Promise((r) => setTimeout(r, 1200)); // the daemon saves its status once a second
    console.log(`\n$ tributary status --config config/quickstart.yaml`);
    console.log((await runCli(['status', '--config', config], env)).output.trimEnd());
  } finally {
    console.log('\nSIGTERM: the daemon drains, acknowledges and exits');
    daemon.child.kill('SIGTERM');
    const code = await daemon.exited;
    console.log(`tributary exited with code ${code}`);
    await api.close();
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
