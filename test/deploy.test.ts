/**
 * Deployment files, checked without Docker or a cluster: the Dockerfile's steps performed in a
 * temporary directory, the Kubernetes overlays rendered and validated against the Kubernetes
 * schemas (kubernetes-models), the compose trial and the Grafana dashboard.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1';
import { ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { README, renderConfigReference, withConfigReference } from '../scripts/config-reference.js';
import { parseConfig } from '../src/config/load.js';
import { parseListen } from '../src/http.js';
import { eventually } from './helpers/daemon.js';
import { renderKustomization, type K8sObject } from './helpers/kustomize.js';
import { startPostgres, freePort, type TestPostgres } from './helpers/postgres.js';

const ROOT = resolve(import.meta.dirname, '../..');
const K8S = join(ROOT, 'deploy/kubernetes');

let pg: TestPostgres;
const children = new Set<ChildProcess>();
before(async () => {
  pg = await startPostgres();
});
after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await pg?.stop();
});

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  op: string;
  args: string;
}

/** The Dockerfile's stages by name, with ARG defaults substituted. */
function parseDockerfile(text: string): Map<string, Instruction[]> {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const args = new Map<string, string>();
  const stages = new Map<string, Instruction[]>();
  let current: Instruction[] | undefined;
  for (const line of lines) {
    const [, op, rest] = /^(\S+)\s+(.*)$/.exec(line)!;
    const value = rest.replace(/\$\{(\w+)\}/g, (m, name) => args.get(name) ?? m);
    if (op === 'ARG' && !current) {
      const [name, def = ''] = value.split('=');
      args.set(name, def);
    } else if (op === 'FROM') {
      const name = / AS (\S+)$/i.exec(value)?.[1] ?? String(stages.size);
      stages.set(name, (current = [{ op, args: value }]));
    } else {
      current!.push({ op, args: value });
    }
  }
  return stages;
}

/** The .dockerignore patterns as one test of a context-relative path. */
function dockerignore(): (path: string) => boolean {
  const patterns = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((p) => new RegExp('^' + p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*\//g, '(.*/)?').replace(/\*/g, '[^/]*') + '$'));
  return (path) => {
    const parts = path.split('/');
    return parts.some((_, i) => patterns.some((re) => re.test(parts.slice(0, i + 1).join('/'))));
  };
}

/**
 * Performs a stage's instructions in `dirs['/app']`, absolute image paths mapped to temporary
 * directories. Returns what the image records: env, entrypoint, cmd, healthcheck, user, volumes.
 */
function performStage(instructions: Instruction[], dirs: Record<string, string>, stageDirs: Map<string, Record<string, string>>) {
  const map = (text: string, paths = dirs) => {
    for (const [root, dir] of Object.entries(paths)) text = text.replace(new RegExp(`(^|[\\s"'=:,[])${root}(?=[/\\s"',\\]]|$)`, 'g'), (_, pre) => pre + dir);
    return text;
  };
  const env: Record<string, string> = {};
  const image = { env, entrypoint: [] as string[], cmd: [] as string[], healthcheck: [] as string[], user: '', volumes: [] as string[] };
  const ignored = dockerignore();
  let cwd = ROOT;
  for (const { op, args } of instructions) {
    switch (op) {
      case 'FROM':
      case 'EXPOSE':
      case 'STOPSIGNAL':
        break;
      case 'WORKDIR':
        cwd = map(args);
        mkdirSync(cwd, { recursive: true });
        break;
      case 'ENV':
        for (const m of args.matchAll(/(\w+)=(\S+)/g)) env[m[1]] = map(m[2]);
        break;
      case 'COPY': {
        const words = args.split(/\s+/);
        const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
        const [dest, ...sources] = words.filter((w) => !w.startsWith('--')).reverse();
        const target = isAbsolute(dest) ? map(dest) : resolve(cwd, dest);
        for (const source of sources.reverse()) {
          const src = from ? map(source, stageDirs.get(from)) : join(ROOT, source);
          const into = dest.endsWith('/') || sources.length > 1 ? join(target, source.split('/').pop()!) : target;
          cpSync(src, source === '.' ? target : into, {
            recursive: true,
            filter: (path) => from !== undefined || !ignored(relative(ROOT, path)) || path === ROOT,
          });
        }
        break;
      }
      case 'RUN': {
        // --mount=type=cache only speeds up image builds; here npm uses its own cache, offline first.
        let command = map(args.replace(/--mount=\S+\s+/g, ''));
        if (process.getuid?.() !== 0) command = command.replace(/chown \S+ \S+/g, 'true'); // only root may give files away
        const res = spawnSync('sh', ['-c', command], { cwd, env: { ...process.env, npm_config_prefer_offline: 'true' }, encoding: 'utf8' });
        assert.equal(res.status, 0, `RUN ${command}\n${res.stdout}\n${res.stderr}`);
        break;
      }
      case 'USER':
        image.user = args;
        break;
      case 'VOLUME':
        image.volumes.push(args);
        break;
      case 'HEALTHCHECK':
        image.healthcheck = JSON.parse(/CMD\s+(\[.*\])$/.exec(args)![1]);
        break;
      case 'ENTRYPOINT':
        image.entrypoint = JSON.parse(map(args));
        break;
      case 'CMD':
        image.cmd = JSON.parse(map(args));
        break;
      default:
        assert.fail(`the test does not know the Dockerfile instruction ${op}`);
    }
  }
  return image;
}

/** Metric series names a /metrics text exports (histograms with their _bucket, _sum and _count). */
function exportedMetrics(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1]);
    if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m[1] + s);
  }
  return names;
}

describe('Dockerfile', () => {
  test('the runtime stage installs, starts on its default command, answers its HEALTHCHECK, finds rows and exits 0 on SIGTERM', async (t) => {
    const stages = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
    assert.deepEqual([...stages.keys()], ['build', 'runtime']);
    const base = mkdtempSync(join(tmpdir(), 'tributary-image-'));
    t.after(() => rmSync(base, { recursive: true, force: true }));
    const dirs = (app: string) => ({ '/app': join(base, app), '/data': join(base, 'data'), '/etc/tributary': join(base, 'etc') });
    const stageDirs = new Map([['build', dirs('build')], ['runtime', dirs('runtime')]]);
    performStage(stages.get('build')!, stageDirs.get('build')!, stageDirs);
    const image = performStage(stages.get('runtime')!, stageDirs.get('runtime')!, stageDirs);

    assert.match(stages.get('runtime')![0].args, /^node:\d+-\S*slim AS runtime$/, 'a slim Node image');
    assert.equal(image.user, '1000:1000', 'runs as the unprivileged node user');
    assert.deepEqual(image.volumes, ['/data']);
    assert.ok(!existsSync(join(base, 'runtime', 'node_modules', 'typescript')), 'no dev dependencies in the runtime image');
    // The entrypoint runs node with the bin's #! flags.
    const shebang = readFileSync(join(ROOT, 'src/cli.ts'), 'utf8').split('\n')[0];
    assert.equal(image.entrypoint[0], 'node');
    assert.deepEqual(image.entrypoint.slice(1, -1), shebang.replace(/^.*\bnode\s+/, '').split(/\s+/));
    assert.deepEqual(image.cmd, ['run']);

    const db = await pg.createDatabase('docker_quickstart');
    await pg.query(db, `CREATE TABLE products (id int PRIMARY KEY, name text, description text, price numeric)`);
    await pg.query(db, `INSERT INTO products VALUES (1, 'Summit boot', 'waterproof hiking boots', 189), (2, 'City sneaker', 'canvas shoes', 69)`);
    const [api, metrics] = [await freePort(), await freePort()];
    // What `docker run -e ...` would pass: the database, and ports free on this machine.
    const env = {
      PATH: process.env.PATH,
      ...image.env,
      DATABASE_URL: db,
      TRIBUTARY_LISTEN: `127.0.0.1:${api}`,
      TRIBUTARY_METRICS: `127.0.0.1:${metrics}`,
      TRIBUTARY_HEALTH_URL: `http://127.0.0.1:${metrics}/healthz`,
    };
    const [, ...flags] = image.entrypoint;
    const child = spawn(process.execPath, [...flags, ...image.cmd], { cwd: join(base, 'runtime'), env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));

    await eventually(async () => (await fetch(`http://127.0.0.1:${metrics}/readyz`).catch(() => undefined))?.status === 200, `/readyz (output: ${output})`, 30_000);
    const healthcheck = () => spawnSync(process.execPath, image.healthcheck.slice(1), { env, encoding: 'utf8' }).status;
    assert.equal(image.healthcheck[0], 'node');
    assert.equal(healthcheck(), 0, 'HEALTHCHECK passes');
    const search = async () => {
      const res = await fetch(`http://127.0.0.1:${api}/v1/search/products`, {
        method: 'POST',
        headers: { authorization: 'Bearer sk_local_search' },
        body: JSON.stringify({ query: 'waterproof hiking boots', limit: 1 }),
      });
      return res.ok ? ((await res.json()) as { results: Array<{ sourceRowId: string }> }).results : [];
    };
    await eventually(async () => (await search())[0]?.sourceRowId === '1', 'a search hit for the boots', 20_000);

    // The Grafana dashboard only queries series the daemon exports.
    const exported = exportedMetrics(await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text());
    const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/tributary-dashboard.json'), 'utf8'));
    const queried = new Set<string>();
    for (const panel of dashboard.panels) for (const target of panel.targets) for (const m of target.expr.matchAll(/\btributary_[a-z0-9_]+/g)) queried.add(m[0]);
    for (const q of dashboard.templating.list) for (const m of String(q.query).matchAll(/\btributary_[a-z0-9_]+/g)) queried.add(m[0]);
    assert.ok(queried.size >= 15, 'the dashboard covers the daemon');
    assert.deepEqual([...queried].filter((name) => !exported.has(name)), [], 'dashboard metrics the daemon does not export');

    child.kill('SIGTERM');
    assert.equal(await exited, 0, output);
    assert.equal(healthcheck(), 1, 'HEALTHCHECK fails once the daemon is gone');
  });
});

// ---------------------------------------------------------------------------------------------
// Kubernetes

const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'apps/v1/Deployment': Deployment,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
};

/** Lists of named items sorted by name (kustomize puts patched items first; order does not matter there). */
function byName(value: unknown): unknown {
  if (Array.isArray(value)) {
    const items = value.map(byName);
    const named = items.every((i) => i !== null && typeof i === 'object' && typeof (i as { name?: unknown }).name === 'string');
    return named ? items.sort((a: any, b: any) => a.name.localeCompare(b.name)) : items;
  }
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, byName(v)]));
  return value;
}

function find(objects: K8sObject[], kind: string): any {
  const found = objects.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `one ${kind}`);
  return found[0];
}

describe('Kubernetes overlays', () => {
  for (const overlay of ['single', 'ha']) {
    test(`${overlay}: renders, validates against the Kubernetes schemas, and its pipeline is valid`, () => {
      const dir = join(K8S, 'overlays', overlay);
      const objects = renderKustomization(dir);
      for (const o of objects) {
        const Model = MODELS[`${o.apiVersion}/${o.kind}`];
        assert.ok(Model, `no schema for ${o.apiVersion} ${o.kind}`);
        assert.doesNotThrow(() => new Model(o).validate(), `${o.kind} ${o.metadata.name}`);
      }
      // Where kubectl is installed, its kustomize renders the same objects.
      const kubectl = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
      if (kubectl.status === 0) {
        const key = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;
        const theirs = parseAllDocuments(kubectl.stdout).map((d) => d.toJS() as K8sObject).sort((a, b) => key(a).localeCompare(key(b)));
        assert.deepEqual(byName([...objects].sort((a, b) => key(a).localeCompare(key(b)))), byName(theirs));
      }

      const deployment = find(objects, 'Deployment');
      const pod = deployment.spec.template.spec;
      const container = pod.containers[0];
      const secret = find(objects, 'Secret');
      const configMap = find(objects, 'ConfigMap');
      const config = parseConfig(configMap.data['tributary.yaml'], '/etc/tributary/tributary.yaml', secret.stringData);

      // Probes and ports are the ones the configuration serves.
      const portOf = (name: string) => container.ports.find((p: { name: string }) => p.name === name)?.containerPort;
      assert.equal(portOf('metrics'), parseListen(config.metrics!.listen).port);
      assert.deepEqual([container.livenessProbe.httpGet, container.readinessProbe.httpGet], [
        { path: '/healthz', port: 'metrics' },
        { path: '/readyz', port: 'metrics' },
      ]);
      if (config.worker?.listen) assert.equal(portOf('http'), parseListen(config.worker.listen).port);
      const service = find(objects, 'Service');
      assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
      const monitor = find(objects, 'ServiceMonitor');
      assert.ok(service.spec.ports.some((p: { name: string }) => p.name === monitor.spec.endpoints[0].port));
      assert.deepEqual(find(objects, 'PodDisruptionBudget').spec.selector, deployment.spec.selector);

      // The file comes from the ConfigMap, secrets from the Secret.
      assert.ok(container.args.includes('/etc/tributary/tributary.yaml'));
      assert.ok(container.volumeMounts.some((m: { name: string; mountPath: string }) => m.mountPath === '/etc/tributary' && pod.volumes.find((v: any) => v.name === m.name)?.configMap?.name === configMap.metadata.name));
      assert.deepEqual(container.envFrom, [{ secretRef: { name: secret.metadata.name } }]);

      // Hardened, and time enough to drain.
      assert.equal(pod.securityContext.runAsNonRoot, true);
      assert.equal(container.securityContext.readOnlyRootFilesystem, true);
      assert.ok(pod.terminationGracePeriodSeconds * 1000 > config.pipeline.drainTimeoutMs + 5000);
      assert.ok(container.resources.requests && container.resources.limits.memory);

      // Writable paths are volumes: the state directory and the worker's index.
      const mounted = (path: string) => container.volumeMounts.some((m: { mountPath: string }) => path === m.mountPath || path.startsWith(m.mountPath + '/'));
      if (config.state.type === 'embedded') assert.ok(mounted(config.state.path), `state.path ${config.state.path} is on a volume`);
      if (config.worker) assert.ok(mounted(config.worker.index.path), 'the worker index is on a volume');

      if (overlay === 'single') {
        assert.equal(deployment.spec.replicas, 1);
        assert.equal(deployment.spec.strategy.type, 'Recreate', 'never two pods on one embedded state directory');
        const data = pod.volumes.find((v: { name: string }) => v.name === 'data');
        assert.deepEqual(Object.keys(data).sort(), ['name', 'persistentVolumeClaim']);
        assert.equal(data.persistentVolumeClaim.claimName, find(objects, 'PersistentVolumeClaim').metadata.name);
      } else {
        assert.equal(deployment.spec.replicas, 2);
        assert.equal(config.state.type, 'postgres', 'replicas share the state store that holds the lease');
        assert.ok(Object.values(config.sinks).every((s) => s.type !== 'worker'), 'no local worker journal to lose');
      }
    });
  }

  test('kafka-workers: a capture Deployment into the bus and a scalable worker Deployment reading it', () => {
    const objects = renderKustomization(join(K8S, 'overlays', 'kafka-workers'));
    for (const o of objects) assert.doesNotThrow(() => new MODELS[`${o.apiVersion}/${o.kind}`](o).validate(), `${o.kind} ${o.metadata.name}`);
    const named = (kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name) as any;
    const secret = named('Secret', 'tributary');
    const env = { DATABASE_URL: 'postgres://db/shop', INGEST_KEY: 'ik_0123456789abcdef', SEARCH_KEY: 'sk_0123456789abcdef', ...secret.stringData };
    const capture = parseConfig(named('ConfigMap', 'tributary').data['tributary.yaml'], '/etc/tributary/tributary.yaml', env);
    const worker = parseConfig(named('ConfigMap', 'tributary-worker').data['tributary.yaml'], '/etc/tributary/tributary.yaml', env);
    const [bus] = Object.values(capture.sinks);
    const [source] = Object.values(worker.sources);
    assert.ok(bus.type === 'kafka' && source.type === 'kafka' && source.format === 'tributary' && source.topics?.includes(bus.topic));
    assert.equal(worker.worker?.acknowledge, 'indexed', 'offsets commit only for indexed changes');
    assert.equal(worker.worker?.index.type, 'pgvector', 'one index shared by every replica');
    assert.ok(worker.state.type === 'postgres' && capture.state.type === 'postgres', 'the replicas share a state store: one dead-letter queue, pause on all');
    assert.notEqual(worker.state.schema, capture.state.schema, "the workers' lenses are named as the capture's: their state is kept apart");
    const deployment = named('Deployment', 'tributary-worker');
    assert.ok(deployment.spec.replicas >= 2);
    assert.equal(deployment.spec.template.spec.volumes.find((v: any) => v.name === 'config').configMap.name, 'tributary-worker');
    assert.deepEqual(named('Service', 'tributary-worker').spec.selector, deployment.spec.selector.matchLabels);
    assert.notDeepEqual(named('Deployment', 'tributary').spec.selector, deployment.spec.selector, 'the capture pods are not workers');
  });
});

// ---------------------------------------------------------------------------------------------
// Compose

describe('compose trial', () => {
  test('the compose file parses, its Postgres is logical, its pipeline validates and its seed data fits the lens', async () => {
    const dir = join(ROOT, 'deploy/compose');
    const compose = parseYaml(readFileSync(join(dir, 'compose.yaml'), 'utf8'));
    const { postgres, tributary } = compose.services;
    assert.ok(postgres.command.includes('wal_level=logical'));
    assert.ok(existsSync(join(resolve(dir, tributary.build.context), tributary.build.dockerfile)));
    assert.deepEqual(tributary.depends_on, { postgres: { condition: 'service_healthy' } });

    const mounts = new Map<string, string>(tributary.volumes.map((v: string) => [v.split(':')[1], v.split(':')[0]]));
    const file = join(dir, mounts.get('/etc/tributary/tributary.yaml')!);
    // No key is committed: compose refuses to start until the user sets their own.
    for (const key of ['INGEST_KEY', 'SEARCH_KEY']) assert.match(tributary.environment[key], new RegExp(`^\\$\\{${key}:\\?`));
    const env = { ...tributary.environment, INGEST_KEY: 'ik_0123456789abcdef', SEARCH_KEY: 'sk_0123456789abcdef' };
    const config = parseConfig(readFileSync(file, 'utf8'), '/etc/tributary/tributary.yaml', env);
    assert.equal(new URL(config.sources.shop.type === 'postgres' ? config.sources.shop.url : '').hostname, 'postgres');
    assert.ok(mounts.has('/data') && config.state.type === 'embedded' && config.state.path === '/data');
    const published = tributary.ports.map((p: string) => Number(p.split(':')[1]));
    assert.deepEqual(published.sort(), [parseListen(config.worker!.listen!).port, parseListen(config.metrics!.listen).port].sort());

    // init.sql runs on a real Postgres and creates what the lens reads.
    const db = await pg.createDatabase('compose_trial');
    await pg.query(db, readFileSync(join(dir, postgres.volumes[0].split(':')[0]), 'utf8'));
    const lens = config.lenses.products;
    const columns = (await pg.query(db, `SELECT column_name FROM information_schema.columns WHERE table_schema || '.' || table_name = $1`, [lens.table])).map((r) => r.column_name);
    for (const field of [...lens.fields, ...lens.metadata]) assert.ok(columns.includes(field), `column ${field}`);
    assert.equal((await pg.query(db, `SELECT count(*)::int AS n FROM products`))[0].n, 5);
  });
});

// ---------------------------------------------------------------------------------------------
// README

describe('README', () => {
  test('its configuration reference is the one the schema generates (npm run docs:config)', () => {
    const readme = readFileSync(README, 'utf8');
    assert.equal(readme, withConfigReference(readme), 'README.md is stale: run `npm run docs:config`');
    const section = renderConfigReference();
    for (const key of ['sources.<source>.type', 'lenses.<lens>.maxWaitMs', 'worker.keys[].scope', 'state.schema', 'pipeline.drainTimeoutMs', 'log.level']) {
      assert.ok(section.includes('`' + key + '`'), key);
    }
  });
});
