/** The sink contract (test/helpers/sink-contract.ts) run against every sink with a remote API. */
import { after, before } from 'node:test';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { sinkContract, type Refusal } from './helpers/sink-contract.js';

let cluster: TestPostgres;
let semilayer: SemilayerServer;

before(async () => {
  [cluster, semilayer] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  await semilayer?.close();
  await cluster?.stop();
});

sinkContract(
  {
    type: 'semilayer',
    config: () => ({ type: 'semilayer', url: semilayer.url, key: 'ik_test', timeoutMs: 5000 }),
    refuse(fn) {
      semilayer.respondWith(fn && ((req) => fn(req.lens, (req.changes ?? []).map((c) => c.id)) as Refusal | undefined));
    },
    accepted: (lens) => semilayer.lastAction(lens),
    answered: (lens) => semilayer.requests.filter((r) => r.lens === lens && r.status !== undefined).map((r) => ({ status: r.status!, at: r.receivedAt })),
    rejection: { status: 400, body: { error: 'Invalid record id 7' } },
    authFailure: { status: 401, body: { error: 'Invalid ingest key' } },
  },
  () => cluster,
);
