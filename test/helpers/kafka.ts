/**
 * A throwaway single-node Apache Kafka 3.9 broker for tests and benchmarks: KRaft combined mode
 * (broker and controller in one JVM, https://kafka.apache.org/39/documentation.html#kraft_config)
 * on free 127.0.0.1 ports, from the Maven Central jars test/kafka/pom.xml lists. `.ci/run`
 * copies them to test/kafka/lib; `kafkaLib()` does it on first use when they are missing
 * (~/.m2 caches them). One broker per test file: separate topics and groups per test.
 *
 * The JVM gets -Xmx512m (the machine is shared); `stop()` kills it and removes its log dir,
 * `restart()` stops and starts it on the same ports and data (a broker restart).
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
  /** Kills the broker (SIGKILL) and starts it again on the same ports and data. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** Every broker still running, killed at exit so a failed test leaves no JVM behind. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const jvm of running) jvm.kill('SIGKILL');
});

/** Formats a log dir and starts the broker; resolves once it answers metadata requests. */
export async function startKafka(): Promise<TestKafka> {
  const lib = kafkaLib();
  const dir = mkdtempSync(join(tmpdir(), 'tributary-kafka-'));
  const [port, controllerPort] = [await freePort(), await freePort()];
  const properties = join(dir, 'server.properties');
  writeFileSync(properties, serverProperties(port, controllerPort, join(dir, 'logs')));
  writeFileSync(join(dir, 'log4j.properties'), LOG4J);
  const classpath = `${lib}/*`;
  execFileSync('java', ['-cp', classpath, 'kafka.tools.StorageTool', 'format', '-t', clusterId(), '-c', properties], { stdio: 'ignore' });
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

function serverProperties(port: number, controllerPort: number, logDir: string): string {
  return [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=PLAINTEXT',
    'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
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

/** Warnings and errors only, to stdout (kept in memory, shown if the broker exits). */
const LOG4J = [
  'log4j.rootLogger=WARN, stdout',
  'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
  'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
  'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
  '',
].join('\n');
