/** The sink contract (test/helpers/sink-contract.ts) run against every sink with a remote API. */
import { after, before } from 'node:test';
import type { Action } from '../src/types.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { startPsykheServer, type PsykheServer } from './helpers/psykhe-server.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { SEYN_SOURCE_ID, startSeynServer, type SeynServer } from './helpers/seyn-server.js';
import { sinkContract, type Refusal } from './helpers/sink-contract.js';

let cluster: TestPostgres;
let semilayer: SemilayerServer;
let seyn: SeynServer;
let psykhe: PsykheServer;

before(async () => {
  [cluster, semilayer, seyn, psykhe] = await Promise.all([startPostgres(), startSemilayerServer(), startSeynServer(), startPsykheServer()]);
});
after(async () => {
  await Promise.all([semilayer?.close(), seyn?.close(), psykhe?.close()]);
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

/** Seyn: a lens's records carry its name as entityType; deletes are tombstones. */
const seynLens = (req: { records: Array<{ entityType?: string }> }) => req.records[0]?.entityType ?? '';
sinkContract(
  {
    type: 'seyn',
    config: () => ({ type: 'seyn', url: seyn.url, key: 'sk_live_test', sourceId: SEYN_SOURCE_ID, onDelete: 'tombstone', timeoutMs: 5000 }),
    refuse(fn) {
      seyn.respondWith(fn && ((req) => fn(seynLens(req), req.records.map((r) => r.recordId))));
    },
    accepted: (lens) => new Map([...seyn.latest(lens)].map(([id, r]): [string, Action] => [id, r.payload._deleted === true ? 'delete' : 'upsert'])),
    answered: (lens) => seyn.requests.filter((r) => seynLens(r) === lens && r.status !== undefined).map((r) => ({ status: r.status!, at: r.receivedAt })),
    rejection: { status: 400, body: { success: false, error: { code: 'VALIDATION_ERROR', message: 'records[0].payload is invalid' } } },
    authFailure: { status: 401, body: { success: false, error: { code: 'UNAUTHORIZED', message: 'Missing or invalid API key' } } },
  },
  () => cluster,
);

/** Psykhe: one catalog (key) per lens; a deleted product is an inactive one. */
const psykheKey = (lens: string) => `sk_test_${lens}`;
sinkContract(
  {
    type: 'psykhe',
    config: (lens) => ({ type: 'psykhe', url: psykhe.url, key: psykheKey(lens), resyncAfter: '1s', gzip: true, maxRequestBytes: 8 << 20, timeoutMs: 5000 }),
    lens: { payload: { product_identifier: 'id', title: 'note' } },
    refuse(fn) {
      psykhe.respondWith(fn && ((req) => fn(req.key.slice('sk_test_'.length), req.ids)));
    },
    accepted: (lens) => new Map([...psykhe.catalog(psykheKey(lens))].map(([id, p]): [string, Action] => [id, p.active ? 'upsert' : 'delete'])),
    answered: (lens) => psykhe.requests.filter((r) => r.key === psykheKey(lens) && r.status !== undefined).map((r) => ({ status: r.status!, at: r.receivedAt })),
    rejection: { status: 400, body: { errors: [{ code: 'invalid_line', message: 'Line 1: product_data is invalid', context: { ingestion_id: 1 } }], meta: null, data: null } },
    authFailure: { status: 401 },
  },
  () => cluster,
);
