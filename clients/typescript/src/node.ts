// Node-only adapters: a file-backed cache and a `node:http` listener for deliveries.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CacheStorage } from './storage.js';
import { createDeliveryHandler, type DeliveryHandlerOptions, type RawRequest, type RawResponse } from './provider.js';

let tmpCounter = 0;

/**
 * Keeps the cache as one JSON file. Every change rewrites the file through a temporary
 * file and a rename, so a crash leaves either the old or the new content. A fresh
 * instance on the same path sees everything committed before.
 */
export class FileStorage implements CacheStorage {
  readonly file: string;
  private data: Map<string, string> | null = null;
  private chain: Promise<void> = Promise.resolve();

  constructor(file: string) {
    this.file = path.resolve(file);
  }

  private async load(): Promise<Map<string, string>> {
    if (this.data) return this.data;
    let parsed: Record<string, string> = {};
    try {
      parsed = JSON.parse(await fsp.readFile(this.file, 'utf8')) as Record<string, string>;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    // Another call may have loaded it while this one waited for the read.
    if (!this.data) this.data = new Map(Object.entries(parsed));
    return this.data;
  }

  private persist(): Promise<void> {
    const run = async () => {
      const data = await this.load();
      await fsp.mkdir(path.dirname(this.file), { recursive: true });
      const tmp = `${this.file}.${process.pid}.${++tmpCounter}.tmp`;
      await fsp.writeFile(tmp, JSON.stringify(Object.fromEntries(data)), { mode: 0o600 });
      await fsp.rename(tmp, this.file);
    };
    const next = this.chain.then(run, run);
    this.chain = next.catch(() => undefined);
    return next;
  }

  async get(key: string): Promise<string | null> {
    const data = await this.load();
    return data.has(key) ? (data.get(key) as string) : null;
  }
  async set(key: string, value: string): Promise<void> {
    (await this.load()).set(key, value);
    await this.persist();
  }
  async delete(key: string): Promise<void> {
    const data = await this.load();
    if (!data.delete(key)) return;
    await this.persist();
  }
  async keys(): Promise<string[]> {
    return [...(await this.load()).keys()];
  }
}

/** Reads a Node request's body as raw bytes, refusing more than `limit` bytes. */
export async function readRawBody(req: IncomingMessage, limit = 1024 * 1024): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > limit) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(buf);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

/** Writes a framework-neutral response to a Node response. */
export function writeRawResponse(res: ServerResponse, response: RawResponse): void {
  res.writeHead(response.status, response.headers);
  res.end(response.body);
}

/**
 * A `node:http` request listener for a provider's refresh_url: it reads the raw body,
 * verifies the signature and answers what `options.answer` returns.
 * `http.createServer(nodeDeliveryListener({ secret, answer }))`.
 */
export function nodeDeliveryListener(options: DeliveryHandlerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const handle = createDeliveryHandler(options);
  return (req, res) => {
    if (req.method !== 'POST') {
      writeRawResponse(res, { status: 405, headers: { allow: 'POST' }, body: '' });
      return;
    }
    readRawBody(req)
      .then((rawBody) => handle({ headers: req.headers as RawRequest['headers'], rawBody }))
      .then(
        (response) => writeRawResponse(res, response),
        (error: { status?: number }) => writeRawResponse(res, { status: error.status ?? 500, headers: {}, body: '' }),
      );
  };
}

