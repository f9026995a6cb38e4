/**
 * The socket of every Postgres connection Tributary opens (node-postgres's `stream` option; see
 * pgConnection in src/postgres.ts): it negotiates TLS the way libpq does and hands node-postgres
 * a plain duplex stream, so node-postgres itself always runs with `ssl: false`.
 *
 * - `disable`: no TLS;
 * - `allow`, `prefer`: sends the SSLRequest; TLS (without verification) when the server answers
 *   yes, plain text on the same connection when it answers no (libpq's `allow` tries plain text
 *   first; here it behaves as `prefer`, which connects in every case `allow` does);
 * - `require`, `verify-ca`, `verify-full`: TLS with the given options, or a PgTlsRefusedError
 *   when the server answers no;
 * - `direct` (sslnegotiation=direct, PostgreSQL 17+): TLS from the first byte, ALPN `postgresql`.
 *
 * It also remembers which password method the server asked each role for (the first
 * Authentication message of the connection), so a failed password can be explained: authMethodAsked.
 * Unix-domain sockets never use TLS, as with libpq.
 */
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';

export type SslMode = 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';

export interface PgTlsPlan {
  mode: SslMode;
  /** TLS from the first byte (sslnegotiation=direct). */
  direct: boolean;
  /** Options for tls.connect (ca, cert, key, rejectUnauthorized, checkServerIdentity). */
  options: tls.ConnectionOptions;
}

/** The server answered no to the SSLRequest while the sslmode demands TLS. */
export class PgTlsRefusedError extends Error {
  readonly code = 'PG_TLS_REFUSED';
  constructor(readonly mode: SslMode) {
    super(`The server does not support SSL connections (sslmode=${mode})`);
  }
}

/** SSLRequest: length 8, code 80877103. */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/** Authentication request codes → the method's name. */
const AUTH_METHODS: Record<number, string> = { 3: 'password (cleartext)', 5: 'md5', 10: 'SCRAM-SHA-256' };

/** Role → the password method the server last asked it for, in this process. */
const asked = new Map<string, string>();

/** The password method the server last asked `role` for (`md5`, `SCRAM-SHA-256`, …), if any. */
export function authMethodAsked(role: string): string | undefined {
  return asked.get(role);
}

export class PgSocket extends Duplex {
  private readonly raw = new net.Socket();
  private inner?: net.Socket;
  private role?: string;
  private sniffing = true;
  private readonly pending: Array<{ chunk: Buffer; done: (err?: Error | null) => void }> = [];

  constructor(private readonly plan: PgTlsPlan) {
    super();
    this.raw.on('error', (err) => this.destroy(err));
    // Closed before or after the negotiation: node-postgres sees the end (and, while connecting, reports it).
    this.raw.on('close', () => this.destroy());
  }

  /** As net.Socket#connect: `(port, host)` over TCP, `(path)` for a Unix-domain socket. */
  connect(portOrPath: number | string, host?: string): this {
    if (host === undefined) {
      this.raw.connect(String(portOrPath), () => this.attach(this.raw));
    } else if (this.plan.mode === 'disable') {
      this.raw.connect(Number(portOrPath), host, () => this.attach(this.raw));
    } else if (this.plan.direct) {
      this.raw.connect(Number(portOrPath), host, () => this.upgrade(host, ['postgresql']));
    } else {
      this.raw.connect(Number(portOrPath), host, () => this.raw.write(SSL_REQUEST));
      this.raw.once('data', (answer: Buffer) => this.answered(answer, host));
    }
    return this;
  }

  private answered(answer: Buffer, host: string): void {
    if (answer[0] === 0x53 /* S */) return this.upgrade(host);
    if (answer[0] !== 0x4e /* N */) return void this.destroy(new Error('There was an error establishing an SSL connection'));
    if (this.plan.mode === 'allow' || this.plan.mode === 'prefer') return this.attach(this.raw);
    this.destroy(new PgTlsRefusedError(this.plan.mode));
  }

  private upgrade(host: string, ALPNProtocols?: string[]): void {
    const servername = net.isIP(host) === 0 ? host : undefined; // no SNI for IP addresses (RFC 6066)
    const secure = tls.connect({ ...this.plan.options, socket: this.raw, host, servername, ALPNProtocols });
    secure.on('error', (err) => this.destroy(err));
    secure.once('secureConnect', () => this.attach(secure));
  }

  /** From here on bytes flow between node-postgres and `inner` (the TLS socket or the raw one). */
  private attach(inner: net.Socket): void {
    this.inner = inner;
    inner.on('data', (chunk: Buffer) => {
      if (this.sniffing) this.sniff(chunk);
      if (!this.push(chunk)) inner.pause();
    });
    inner.on('end', () => this.push(null));
    inner.on('close', () => this.destroy());
    for (const { chunk, done } of this.pending.splice(0)) inner.write(chunk, done);
    this.emit('connect');
  }

  /** The first message from the server: an Authentication request ('R', length, code). */
  private sniff(chunk: Buffer): void {
    this.sniffing = false;
    const method = chunk[0] === 0x52 && chunk.length >= 9 ? AUTH_METHODS[chunk.readInt32BE(5)] : undefined;
    if (method && this.role) asked.set(this.role, method);
  }

  /** The role of the startup message (length, protocol, then key\0value\0 pairs). */
  private startupRole(chunk: Buffer): void {
    if (this.role !== undefined || chunk.length < 8 || chunk.readInt32BE(4) !== 196608) return;
    const fields = chunk.subarray(8).toString('utf8').split('\0');
    const at = fields.indexOf('user');
    if (at !== -1 && at % 2 === 0) this.role = fields[at + 1];
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.send(chunk, done);
  }

  /** Writes node-postgres corked together (a query's Parse, Bind, Execute, Sync) go out as one. */
  override _writev(chunks: Array<{ chunk: Buffer }>, done: (err?: Error | null) => void): void {
    this.send(chunks.length === 1 ? chunks[0].chunk : Buffer.concat(chunks.map((c) => c.chunk)), done);
  }

  private send(chunk: Buffer, done: (err?: Error | null) => void): void {
    this.startupRole(chunk);
    if (this.inner) this.inner.write(chunk, done);
    else this.pending.push({ chunk, done });
  }

  override _read(): void {
    this.inner?.resume();
  }

  override _final(done: (err?: Error | null) => void): void {
    if (this.inner) this.inner.end(done);
    else done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.inner?.destroy();
    this.raw.destroy();
    done(err);
  }

  setNoDelay(noDelay?: boolean): this {
    this.raw.setNoDelay(noDelay);
    return this;
  }

  setKeepAlive(enable?: boolean, initialDelay?: number): this {
    this.raw.setKeepAlive(enable, initialDelay);
    return this;
  }

  ref(): this {
    this.raw.ref();
    return this;
  }

  unref(): this {
    this.raw.unref();
    return this;
  }
}
