/**
 * A loopback Psykhe ingestion API for tests and benchmarks: `POST /v1/ingestion/` as Psykhe's
 * public "Create new ingestion" reference describes it, checked as strictly as the vendor would.
 * One catalog per API key.
 *
 * - any other route → 404 `not_found`
 * - `X-PSYKHE-API-KEY` missing or unknown (known: `keys`, or any key starting with
 *   `keyPrefix`) → 401 with an empty body
 * - `X-PSYKHE-PROCESSING-MODE` other than `insert` / `soft_replace` → 400 `invalid_processing_mode`
 * - `Content-Type` other than application/x-ndjson → 400 `invalid_content_type`
 * - `Content-Encoding` other than gzip, or a body that does not gunzip → 400 `invalid_encoding`
 * - an empty feed → 400 `payload_empty`; more than `maxBodyBytes` of JSONL → 413 `payload_too_large`
 * - a line that is not `{"operation":"insert","product_data":{...}}` with a string or number
 *   `product_identifier`, or has other fields → 400 `invalid_line` naming the line
 * - otherwise 200 `{ errors: null, meta: null, data: { ingestion_id } }`: `insert` upserts
 *   the products; `soft_replace` upserts them and marks every other active product inactive.
 *
 * Errors are `{ errors: [{ code, message, context: { ingestion_id } }], meta: null, data: null }`.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { send, serveLoopback, type Answer } from './loopback.js';

export interface Product {
  data: Record<string, unknown>;
  active: boolean;
}

/** One request as it arrived. */
export interface PsykheRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  key: string;
  mode: string;
  /** product_identifier of each line, as text. */
  ids: string[];
  /** Body bytes as sent (compressed when gzip). */
  bytes: number;
  receivedAt: number;
  status?: number;
  /** The ingestion_id this request got (whatever the answer). */
  ingestionId: number;
  /** soft_replace: the products it marked inactive. */
  deactivated?: string[];
}

export interface PsykheServerOptions {
  keys?: string[];
  keyPrefix?: string;
  /** Largest JSONL body accepted, bytes after gunzip (default 64 MiB). */
  maxBodyBytes?: number;
  /** Keep per-request ids (default true). */
  keepIds?: boolean;
  /** Keep each product's data in the catalog (default true); false keeps `{}` (benchmarks). */
  keepData?: boolean;
}

export interface PsykheServer {
  url: string;
  requests: PsykheRequest[];
  /** The catalog of a key, by product_identifier. */
  catalog(key: string): Map<string, Product>;
  respondWith(fn: ((req: PsykheRequest) => Answer | undefined) | undefined): void;
  setMaxBodyBytes(bytes: number): void;
  /** Answer every request this much later (a slow API; the request is applied at once). */
  setDelay(ms: number): void;
  close(): Promise<void>;
}

export async function startPsykheServer(options: PsykheServerOptions = {}): Promise<PsykheServer> {
  const keys = new Set(options.keys ?? ['sk_test']);
  const prefix = options.keyPrefix ?? 'sk_test_';
  let maxBody = options.maxBodyBytes ?? 64 * 1024 * 1024;
  const requests: PsykheRequest[] = [];
  const catalogs = new Map<string, Map<string, Product>>();
  let ingestionId = 477000;
  let responder: ((req: PsykheRequest) => Answer | undefined) | undefined;
  let delayMs = 0;

  function catalog(key: string): Map<string, Product> {
    let c = catalogs.get(key);
    if (!c) catalogs.set(key, (c = new Map()));
    return c;
  }

  /** Checks the request; returns the feed's products, or the error answer. */
  function validate(req: PsykheRequest, raw: Buffer, id: number): Answer | Array<[string, Record<string, unknown>]> {
    if (req.method !== 'POST' || req.path !== '/v1/ingestion/') return error(404, 'not_found', `No route ${req.method} ${req.path}`, id);
    if (!req.key || !(keys.has(req.key) || req.key.startsWith(prefix))) return { status: 401 };
    if (req.mode !== 'insert' && req.mode !== 'soft_replace') return error(400, 'invalid_processing_mode', 'X-PSYKHE-PROCESSING-MODE must be insert or soft_replace', id);
    if (!/^application\/x-ndjson(;|$)/.test(req.headers['content-type'] ?? '')) return error(400, 'invalid_content_type', 'Content-Type must be application/x-ndjson', id);
    const encoding = req.headers['content-encoding'];
    let body = raw;
    if (encoding !== undefined) {
      if (encoding !== 'gzip') return error(400, 'invalid_encoding', 'Content-Encoding must be gzip', id);
      try {
        body = gunzipSync(raw);
      } catch {
        return error(400, 'invalid_encoding', 'Body is not valid gzip', id);
      }
    }
    if (options.keepIds !== false) req.ids = lenientIds(body);
    if (body.length > maxBody) return error(413, 'payload_too_large', 'Payload is too large', id);
    const lines = body.toString('utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    if (lines.length === 0) return error(400, 'payload_empty', 'Payload is empty', id);
    const products: Array<[string, Record<string, unknown>]> = [];
    for (let i = 0; i < lines.length; i++) {
      const product = lineProduct(lines[i]);
      if (typeof product === 'string') return error(400, 'invalid_line', `Line ${i + 1}: ${product}`, id);
      products.push(product);
    }
    return products;
  }

  function apply(req: PsykheRequest, products: Array<[string, Record<string, unknown>]>): void {
    const c = catalog(req.key);
    for (const [pid, data] of products) c.set(pid, { data: options.keepData === false ? {} : data, active: true });
    if (req.mode === 'soft_replace') {
      const inFeed = new Set(products.map(([pid]) => pid));
      req.deactivated = [];
      for (const [pid, product] of c) {
        if (product.active && !inFeed.has(pid)) {
          product.active = false;
          req.deactivated.push(pid);
        }
      }
    }
  }

  async function handle(raw: Buffer, method: string, url: string, headers: IncomingHttpHeaders, res: ServerResponse) {
    const id = ++ingestionId;
    const req: PsykheRequest = {
      method,
      path: url,
      headers,
      key: String(headers['x-psykhe-api-key'] ?? ''),
      mode: String(headers['x-psykhe-processing-mode'] ?? 'insert'),
      ids: [],
      ingestionId: id,
      bytes: raw.length,
      receivedAt: Date.now(),
    };
    requests.push(req);
    const checked = validate(req, raw, id);
    let answer = responder?.(req);
    if (!answer) {
      if (!Array.isArray(checked)) answer = checked;
      else {
        apply(req, checked);
        answer = { status: 200, body: { errors: null, meta: null, data: { ingestion_id: id } } };
      }
    }
    // A slow API answers late; what it got it applied on receipt (a request cut short meanwhile still counts).
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    req.status = answer.status;
    send(res, answer);
  }

  const server = await serveLoopback(handle, (err) => error(500, 'internal_error', `test server failure: ${String(err)}`, 0));
  return {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    catalog,
    respondWith(fn) {
      responder = fn;
    },
    setMaxBodyBytes(bytes) {
      maxBody = bytes;
    },
    setDelay(ms) {
      delayMs = ms;
    },
    close: server.close,
  };
}

/** The product identifiers of a feed, whatever else is wrong with it (what a request carried). */
function lenientIds(body: Buffer): string[] {
  return body
    .toString('utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const product = lineProduct(line);
      return typeof product === 'string' ? '' : product[0];
    });
}

/** A line's product (identifier and data), or what is wrong with it. */
function lineProduct(line: string): [string, Record<string, unknown>] | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return 'not valid JSON';
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return 'must be a JSON object';
  const { operation, product_data: data, ...rest } = parsed as Record<string, unknown>;
  if (Object.keys(rest).length) return `unknown field ${Object.keys(rest)[0]}`;
  if (operation !== 'insert') return 'operation must be "insert"';
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return 'product_data must be an object';
  const pid = (data as Record<string, unknown>).product_identifier;
  if ((typeof pid !== 'string' || pid === '') && typeof pid !== 'number') return 'product_data.product_identifier is required';
  return [String(pid), data as Record<string, unknown>];
}

export function error(status: number, code: string, message: string, ingestionId: number): Answer {
  return { status, body: { errors: [{ code, message, context: { ingestion_id: ingestionId } }], meta: null, data: null } };
}
