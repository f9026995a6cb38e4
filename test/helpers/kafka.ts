/**
 * A throwaway single-node Apache Kafka 3.9 broker for tests and benchmarks: KRaft combined mode
 * (broker and controller in one JVM, https://kafka.apache.org/39/documentation.html#kraft_config)
 * on free 127.0.0.1 ports, from the Maven Central jars test/kafka/pom.xml lists. `.ci/run`
 * copies them to test/kafka/lib; `kafkaLib()` does it on first use when they are missing
 * (~/.m2 caches them). One broker per test file: separate topics and groups per test.
 *
 * The JVM gets -Xmx512m (the machine is shared); `stop()` kills it and removes its log dir,
 * `restart()` stops and starts it on the same ports and data (a broker restart).
 *
 * `startKafka({ secured: true })` adds two listeners: SASL_PLAINTEXT with PLAIN (user `alice`)
 * and SCRAM-SHA-256 (user `bob`, stored by the storage tool's --add-scram), and SSL with a
 * certificate for 127.0.0.1 signed by a throwaway CA, both made with openssl in the broker's
 * temp dir (`secured.caFile`, PEM).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Kafka, logLevel, type Admin } from 'kafkajs';
import { eventually } from './cli.js';
import { freePort } from './postgres.js';

const POM = resolve(import.meta.dirname, '../../../test/kafka/pom.xml');
const LIB = resolve(import.meta.dirname, '../../../test/kafka/lib');

/** The broker jars' directory, copied from Maven (~/.m2) when missing. */
export function kafkaLib(): string {
  if (!existsSync(LIB) || !readdirSync(LIB).some((f) => f.startsWith('kafka_2.13-'))) {
    execFileSync('mvn', ['-q', '-f', POM, 'dependency:copy-dependencies', `-DoutputDirectory=${LIB}`], { stdio: 'inherit' });
  }
  return LIB;
}

export interface TestKafka {
  /** `127.0.0.1:PORT` of the PLAINTEXT listener. */
  broker: string;
  /** A kafkajs client for the test's own producing, consuming and admin calls. */
  client: Kafka;
  /** Creates a topic (idempotent) with `partitions` partitions. */
  createTopic(topic: string, partitions?: number): Promise<void>;
  /** With `secured`: the SASL and SSL listeners, their users and the CA. */
  secured?: SecuredListeners;
  /** Kills the broker (SIGKILL) and starts it again on the same ports and data. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface SecuredListeners {
  /** `127.0.0.1:PORT` of the SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256). */
  sasl: string;
  /** `127.0.0.1:PORT` of the SSL listener. */
  ssl: string;
  /** The PEM CA that signed the SSL listener's certificate. */
  caFile: string;
  plain: { username: string; password: string };
  scram: { username: string; password: string };
}

const PLAIN_USER = { username: 'alice', password: 'alice-Pw-7f3a9c' };
const SCRAM_USER = { username: 'bob', password: 'bob-Pw-2d81e4' };
const KEYSTORE_PASSWORD = 'changeit';

/** Every broker still running, killed at exit so a failed test leaves no JVM behind. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const jvm of running) jvm.kill('SIGKILL');
});

/** Formats a log dir and starts the broker; resolves once it answers metadata requests. */
export async function startKafka(options: { secured?: boolean } = {}): Promise<TestKafka> {
  const lib = kafkaLib();
  const dir = mkdtempSync(join(tmpdir(), 'tributary-kafka-'));
  const [port, controllerPort] = [await freePort(), await freePort()];
  const secured = options.secured ? { sasl: `127.0.0.1:${await freePort()}`, ssl: `127.0.0.1:${await freePort()}`, caFile: brokerCertificate(dir), plain: PLAIN_USER, scram: SCRAM_USER } : undefined;
  const properties = join(dir, 'server.properties');
  writeFileSync(properties, serverProperties(port, controllerPort, join(dir, 'logs'), secured && { ...secured, keystore: join(dir, 'broker.p12') }));
  writeFileSync(join(dir, 'log4j.properties'), LOG4J);
  const classpath = `${lib}/*`;
  const scram = secured ? ['--add-scram', `SCRAM-SHA-256=[name=${SCRAM_USER.username},password=${SCRAM_USER.password}]`] : [];
  execFileSync('java', ['-cp', classpath, 'kafka.tools.StorageTool', 'format', '-t', clusterId(), '-c', properties, ...scram], { stdio: 'ignore' });
  const broker = `127.0.0.1:${port}`;
  const client = new Kafka({ clientId: 'tributary-test', brokers: [broker], logLevel: logLevel.NOTHING, retry: { retries: 8, initialRetryTime: 200 } });
  /** For readiness probes: no retries of its own, `eventually` polls. */
  const probe = new Kafka({ clientId: 'tributary-test-probe', brokers: [broker], logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 1000 });
  let jvm: ChildProcess | undefined;
  let output = '';

  async function launch(): Promise<void> {
    output = '';
    const child = spawn('java', ['-Xmx512m', '-Xms128m', '-cp', classpath, `-Dlog4j.configuration=file:${join(dir, 'log4j.properties')}`, 'kafka.Kafka', properties], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.on('data', (d) => (output = (output + d).slice(-20_000)));
    child.stderr!.on('data', (d) => (output = (output + d).slice(-20_000)));
    running.add(child);
    child.on('exit', () => running.delete(child));
    jvm = child;
    await eventually(async () => {
      if (child.exitCode !== null) throw new Error(`the Kafka broker exited ${child.exitCode}:\n${output}`);
      return ready(probe);
    }, 'the Kafka broker to answer', 60_000);
  }

  async function kill(): Promise<void> {
    const child = jvm;
    jvm = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((done) => child.once('exit', done));
    child.kill('SIGKILL');
    await exited;
  }

  await launch();
  return {
    broker,
    client,
    secured,
    async createTopic(topic, partitions = 1) {
      await withAdmin(client, (admin) => admin.createTopics({ topics: [{ topic, numPartitions: partitions, replicationFactor: 1 }], waitForLeaders: true }));
    },
    async restart() {
      await kill();
      await launch();
    },
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** True once the broker lists topics (its listener is up and the controller elected). */
async function ready(client: Kafka): Promise<boolean> {
  try {
    await withAdmin(client, (admin) => admin.listTopics());
    return true;
  } catch {
    return false;
  }
}

export async function withAdmin<T>(client: Kafka, fn: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = client.admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

/**
 * A KRaft cluster id: 16 random bytes in base64url, 22 characters (what `kafka-storage
 * random-uuid` prints), never starting with `-`, which the tool would read as an option (Kafka's
 * own Uuid.randomUuid draws again in that case too).
 */
function clusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

/** A throwaway CA and, signed by it, the broker's certificate for IP 127.0.0.1 in a PKCS12 keystore; returns the CA's PEM file. */
function brokerCertificate(dir: string): string {
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-days', '2', '-subj', '/CN=tributary kafka test CA', '-keyout', 'ca.key', '-out', 'ca.pem']);
  openssl(['req', ...ec, '-subj', '/CN=127.0.0.1', '-keyout', 'broker.key', '-out', 'broker.csr']);
  writeFileSync(join(dir, 'broker.ext'), 'subjectAltName=IP:127.0.0.1\n');
  openssl(['x509', '-req', '-in', 'broker.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'broker.ext', '-out', 'broker.crt']);
  openssl(['pkcs12', '-export', '-in', 'broker.crt', '-inkey', 'broker.key', '-name', 'broker', '-out', 'broker.p12', '-passout', `pass:${KEYSTORE_PASSWORD}`]);
  return join(dir, 'ca.pem');
}

function serverProperties(port: number, controllerPort: number, logDir: string, secured?: SecuredListeners & { keystore: string }): string {
  const extra = secured ? `,SASL_PLAINTEXT://${secured.sasl},SSL://${secured.ssl}` : '';
  return [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}${extra}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}${extra}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=PLAINTEXT',
    'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL',
    ...(secured ? securedProperties(secured) : []),
    `log.dirs=${logDir}`,
    'num.partitions=1',
    'offsets.topic.replication.factor=1',
    'offsets.topic.num.partitions=4',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'group.initial.rebalance.delay.ms=0',
    // A restarted broker re-registers once the controller fenced its old session: keep that short.
    'broker.heartbeat.interval.ms=500',
    'broker.session.timeout.ms=3000',
    'auto.create.topics.enable=true',
    'log.flush.interval.messages=1000000',
    '',
  ].join('\n');
}

/** The SASL listener's mechanisms and users, and the SSL listener's keystore. */
function securedProperties(secured: SecuredListeners & { keystore: string }): string[] {
  return [
    'sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256',
    `listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_${secured.plain.username}="${secured.plain.password}";`,
    'listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
    `ssl.keystore.location=${secured.keystore}`,
    'ssl.keystore.type=PKCS12',
    `ssl.keystore.password=${KEYSTORE_PASSWORD}`,
    `ssl.key.password=${KEYSTORE_PASSWORD}`,
  ];
}

/** Warnings and errors only, to stdout (kept in memory, shown if the broker exits). */
const LOG4J = [
  'log4j.rootLogger=WARN, stdout',
  'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
  'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
  'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
  '',
].join('\n');
