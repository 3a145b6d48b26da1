// The device's sync loop against a scripted stand-in server: reconnects with
// Last-Event-ID, catches up from the stored cursor, applies every kind of change, and
// stops without leaving a timer or a socket behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { MemoryStorage, RefreshdDevice, type DeviceChange, type FormRecord } from '../src/index.js';
import { deadline, listen, waitFor } from './harness.js';

function timers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

test('reconnects with Last-Event-ID, syncs from its cursor, applies events and stops cleanly', async () => {
  const baseline = timers();
  const seen: { path: string; lastEventId: string | undefined; auth: string | undefined }[] = [];
  let streams = 0;
  let open: ServerResponse | null = null;
  const server = await listen((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    seen.push({ path: url.pathname + url.search, lastEventId: req.headers['last-event-id'] as string | undefined, auth: req.headers.authorization });
    if (url.pathname === '/v1/device/sync') {
      const cursor = url.searchParams.get('cursor');
      res.writeHead(200, { 'content-type': 'application/json' });
      if (cursor === null) {
        res.end(JSON.stringify({
          cursor: 'c1', reset: true,
          apps: [{ appid: 'wx1', fetched_data: 'v0', time_stamp: 1000 }],
          forms: [{ form_id: 'f1', provider: 'p', form_name: 'weather', data: null, updated_at: null, trigger: null }],
          removed_forms: [],
        }));
      } else {
        res.end(JSON.stringify({ cursor: 'c2', reset: false, apps: [], forms: [], removed_forms: [] }));
      }
      return;
    }
    if (url.pathname === '/v1/events') {
      streams++;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (streams === 1) {
        res.write(': hello\n\n');
        res.write('id: 1\nevent: fetched_data\ndata: {"appid":"wx1","fetched_data":"v1","time_stamp":2000}\n\n');
        res.write('id: 2\nevent: form_data\ndata: {"form_id":"f1","data":{"t":21},"updated_at":"2026-11-27T10:00:00Z","trigger":"add"}\n\n');
        // An older fetch replayed late must not win over the newer one.
        res.write('id: 3\nevent: fetched_data\ndata: {"appid":"wx1","fetched_data":"stale","time_stamp":1500}\n\n');
        res.end(); // the server goes away: the client reconnects
      } else {
        res.write('id: 4\nevent: form_removed\ndata: {"form_id":"f1"}\n\n');
        open = res; // stays open until the client leaves
      }
      return;
    }
    res.writeHead(404).end();
  });

  const storage = new MemoryStorage();
  const errors: unknown[] = [];
  const device = new RefreshdDevice({ baseUrl: server.url, key: 'rfdd_test', storage, reconnect: { initialDelayMs: 5, maxDelayMs: 20 }, onError: (e) => errors.push(e) });
  const changes: DeviceChange[] = [];
  device.onChange((c) => changes.push(c));
  const formEvents: (FormRecord | null)[] = [];
  const unsubscribe = device.onFormData('f1', (r) => formEvents.push(r));
  const removed = waitFor<FormRecord | null>((cb) => device.onFormData('f1', cb), (r) => r === null);

  device.start();
  await deadline(removed, 10_000, 'form_removed on the second stream');
  assert.ok(device.connected, 'the second stream is open');

  assert.deepEqual(await device.getBackgroundFetchData('wx1'), { fetchedData: 'v1', timeStamp: 2000 });
  assert.equal(await device.getFormData('f1'), null);
  assert.deepEqual(formEvents.map((r) => r && r.data), [null, { t: 21 }, null]);
  assert.deepEqual(
    changes.map((c) => `${c.kind}:${c.source}`),
    ['fetched_data:sync', 'form_data:sync', 'fetched_data:push', 'form_data:push', 'form_removed:push'],
  );
  const paths = seen.map((s) => s.path);
  assert.deepEqual(paths, ['/v1/device/sync', '/v1/events', '/v1/device/sync?cursor=c1', '/v1/events']);
  assert.equal(seen[1].lastEventId, undefined);
  assert.equal(seen[3].lastEventId, '3', 'reconnects after the last event it applied');
  assert.ok(seen.every((s) => s.auth === 'Bearer rfdd_test'));
  assert.equal(await storage.get('sync/cursor'), 'c2');
  assert.equal(await storage.get('sync/last_event_id'), '4');

  unsubscribe();
  await deadline(device.stop(), 5_000, 'stop()');
  assert.equal(device.connected, false);
  assert.deepEqual(errors.map(String), [], 'a stream that ends is not an error');
  await server.close();
  assert.ok(open !== null);
  assert.equal(timers(), baseline, 'no timer left behind');
});

test('backs off while the server is unreachable and stop() ends a long wait at once', async () => {
  const baseline = timers();
  // A port that was open a moment ago and is closed now: connections are refused.
  const gone = await listen((_, res) => res.end());
  await gone.close();
  const errors: unknown[] = [];
  let third!: () => void;
  const thirdError = new Promise<void>((r) => (third = r));
  const device = new RefreshdDevice({
    baseUrl: gone.url, key: 'rfdd_x', storage: new MemoryStorage(),
    reconnect: { initialDelayMs: 2, maxDelayMs: 8 },
    onError: (e) => { errors.push(e); if (errors.length === 3) third(); },
  });
  device.start();
  await deadline(thirdError, 10_000, 'three failed connects');
  await deadline(device.stop(), 5_000, 'stop()');
  assert.equal(timers(), baseline, 'no timer left behind');

  // A long backoff: stop() must not wait for it.
  let firstFailure!: () => void;
  const failed = new Promise<void>((r) => (firstFailure = r));
  const slow = new RefreshdDevice({ baseUrl: gone.url, key: 'rfdd_x', storage: new MemoryStorage(), reconnect: { initialDelayMs: 600_000 }, onError: () => firstFailure() });
  slow.start();
  await deadline(failed, 10_000, 'the first failed connect');
  const started = Date.now();
  await deadline(slow.stop(), 2_000, 'stop() during a ten-minute backoff');
  assert.ok(Date.now() - started < 2_000);
  assert.equal(timers(), baseline, 'the backoff timer is cleared');
});

test('a reset from /v1/device/sync replaces what the cache held', async () => {
  let answer: unknown = null;
  const server = await listen((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(answer));
  });
  const storage = new MemoryStorage();
  const device = new RefreshdDevice({ baseUrl: server.url, key: 'rfdd_x', storage });
  answer = { cursor: 'a', reset: true, apps: [{ appid: 'wx1', fetched_data: 'one', time_stamp: 5 }, { appid: 'wx2', fetched_data: 'two', time_stamp: 5 }], forms: [{ form_id: 'f1', data: 1, updated_at: null, trigger: null }], removed_forms: [] };
  await device.sync();
  assert.deepEqual((await device.listApps()).sort(), ['wx1', 'wx2']);
  answer = { cursor: 'b', reset: false, apps: [{ appid: 'wx2', fetched_data: 'two!', time_stamp: 6 }], forms: [{ form_id: 'f2', data: 2, updated_at: null, trigger: 'add' }], removed_forms: ['f1'] };
  await device.sync();
  assert.equal((await device.getBackgroundFetchData('wx2'))?.fetchedData, 'two!');
  assert.deepEqual((await device.listForms()).map((f) => f.formId), ['f2']);
  // A reset drops what it does not list; an entry it lists older than the held one (an
  // event may have brought newer data meanwhile) does not go back in time.
  answer = { cursor: 'c', reset: true, apps: [{ appid: 'wx1', fetched_data: 'older', time_stamp: 1 }], forms: [], removed_forms: [] };
  await device.sync();
  assert.deepEqual(await device.listApps(), ['wx1']);
  assert.deepEqual(await device.getBackgroundFetchData('wx1'), { fetchedData: 'one', timeStamp: 5 });
  assert.deepEqual(await device.listForms(), []);
  assert.equal(await storage.get('sync/cursor'), 'c');
  await server.close();
});

test('the reconnect delay doubles up to its cap, and Retry-After is honoured', async () => {
  const at: number[] = [];
  let calls = 0;
  let done!: () => void;
  const enough = new Promise<void>((r) => (done = r));
  const device = new RefreshdDevice({
    baseUrl: 'http://refreshd.invalid', key: 'rfdd_x', storage: new MemoryStorage(),
    reconnect: { initialDelayMs: 20, maxDelayMs: 80 },
    random: () => 0, // the lowest jitter: each wait is half of its step
    onError: () => undefined,
    fetch: async () => {
      at.push(performance.now());
      calls++;
      if (calls === 6) done();
      if (calls === 5) {
        return new Response(JSON.stringify({ error: { code: 'rate_limited', message: 'slow down', details: [] } }), { status: 429, headers: { 'retry-after': '1' } });
      }
      throw new TypeError('connection refused');
    },
  });
  device.start();
  await deadline(enough, 10_000, 'six attempts');
  await device.stop();
  const gaps = at.slice(1).map((t, i) => t - at[i]);
  // Steps 20, 40, 80, 80 (capped): waits of at least 10, 20, 40, 40 ms; then a 429 asking for 1 s.
  const least = [10, 20, 40, 40, 1000];
  least.forEach((ms, i) => assert.ok(gaps[i] >= ms - 1, `wait ${i + 1} was ${gaps[i].toFixed(1)} ms, expected at least ${ms}`));
});
