// Test support: starts the real refreshd binary and small node:http servers on 127.0.0.1.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { RefreshdDevice } from '../src/index.js';
import { createInterface } from 'node:readline';

export const ADMIN_KEY = 'rfdo_' + 'typescript0client0test0suite0key0000';

/** Rejects with `what` when `promise` has not settled within `ms`; the timer never outlives the race. */
export async function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`deadline of ${ms} ms passed: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The binary under test: $REFRESHD_BIN, which must be set and exist. */
export function refreshdBin(): string {
  const bin = process.env.REFRESHD_BIN;
  if (!bin) throw new Error('REFRESHD_BIN is not set: point it at a refreshd binary (e.g. target/release/refreshd) to run these tests');
  if (!existsSync(bin)) throw new Error(`REFRESHD_BIN=${bin} does not exist: build refreshd or fix the path`);
  return bin;
}

export function tempDir(prefix = 'refreshd-ts-'): { dir: string; remove: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface Refreshd {
  url: string;
  process: ChildProcess;
  /** Everything the process printed so far (stdout and stderr), for failure messages. */
  output: () => string;
  /** SIGTERM, then waits for the exit (with a deadline); answers the exit code. */
  stop: () => Promise<number | null>;
}

/** Starts `refreshd serve` on a data dir and waits for its `listening on http://…` line. */
export async function startRefreshd(dataDir: string, extraArgs: string[] = []): Promise<Refreshd> {
  const bin = refreshdBin();
  const child = spawn(
    bin,
    [
      'serve',
      '--data-dir', dataDir,
      '--listen', '127.0.0.1:0',
      '--metrics-listen', '127.0.0.1:0',
      '--allow-destination', '127.0.0.0/8',
      '--rate-limit-per-second', '10000',
      '--rate-limit-burst', '10000',
      ...extraArgs,
    ],
    { env: { ...process.env, REFRESHD_ADMIN_KEY: ADMIN_KEY }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // Never leave a server behind, whatever happens to the test process.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  let log = '';
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      process.removeListener('exit', reap);
      resolve(code);
    }),
  );
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const lines = createInterface({ input: child.stdout! });
  const ready = new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => {
      log += line + '\n';
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) resolve(m[1].replace(/\/$/, ''));
    });
    child.once('error', reject);
    void exited.then((code) => reject(new Error(`refreshd exited with ${code} before listening:\n${log}`)));
  });
  let url: string;
  try {
    url = await deadline(ready, 20_000, `refreshd printing "listening on"; output so far:\n${log}`);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    url,
    process: child,
    output: () => log,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return deadline(exited, 20_000, 'refreshd exiting after SIGTERM');
    },
  };
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

export interface TestServer {
  url: string;
  requests: RecordedRequest[];
  /** Resolves with the next request that arrives (after the call). */
  nextRequest: () => Promise<RecordedRequest>;
  close: () => Promise<void>;
}

/**
 * A node:http server on 127.0.0.1 that records each request and answers with `handler`
 * (which sees the request with its whole body read).
 */
export async function startServer(
  handler: (req: RecordedRequest, res: ServerResponse) => void | Promise<void>,
): Promise<TestServer> {
  const requests: RecordedRequest[] = [];
  let waiters: ((r: RecordedRequest) => void)[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
      requests.push(rec);
      const w = waiters;
      waiters = [];
      Promise.resolve(handler(rec, res)).then(
        () => w.forEach((f) => f(rec)),
        (error) => {
          res.writeHead(500).end(String(error));
          w.forEach((f) => f(rec));
        },
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    nextRequest: () => new Promise((resolve) => waiters.push(resolve)),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Starts a plain node:http server around a ready-made request listener. */
export async function listen(listener: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Resolves with the first value `subscribe` passes to its callback that satisfies `accept`. */
export function waitFor<T>(subscribe: (cb: (value: T) => void) => () => void, accept: (value: T) => boolean): Promise<T> {
  return new Promise((resolve) => {
    const off = subscribe((value) => {
      if (accept(value)) {
        queueMicrotask(off);
        resolve(value);
      }
    });
  });
}

/** The package's folder (tests run from build/test/). */
export const PACKAGE_ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');

export interface Generator {
  generate: (doc: unknown) => string;
  load: (source: string) => Promise<unknown>;
}

/** The package's OpenAPI → TypeScript generator (scripts/gen.mjs). */
export async function generator(): Promise<Generator> {
  return (await import(path.join(PACKAGE_ROOT, 'scripts', 'gen.mjs'))) as Generator;
}

/** A developer data server: answers `GET /data?...` with `body` and records every request. */
export async function startDataServer(initial: string): Promise<TestServer & { setBody: (b: string) => void }> {
  let body = initial;
  const server = await startServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(body);
  });
  return Object.assign(server, { setBody: (b: string) => void (body = b) });
}

let counter = 0;
/** A name unique within this test process. */
export function unique(prefix: string): string {
  counter++;
  return `${prefix}${process.pid}x${counter}`;
}

/** Resolves once the device's cache holds data of `appid` that `accept` likes (now or later). */
export async function untilCached(device: RefreshdDevice, appid: string, accept: (d: { fetchedData: string; timeStamp: number }) => boolean): Promise<void> {
  let off = () => {};
  const changed = new Promise<void>((resolve) => {
    off = device.onChange((c) => {
      if (c.kind === 'fetched_data' && c.appid === appid && accept(c.data)) resolve();
    });
  });
  try {
    const now = await device.getBackgroundFetchData(appid);
    if (now && accept(now)) return;
    await changed;
  } finally {
    off();
  }
}

