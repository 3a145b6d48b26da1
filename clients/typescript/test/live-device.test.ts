// The device library end to end against the real binary: forms, provider updates and
// fetched data reach the cache by push; /v1/device/sync catches up; device calls work.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import {
  MemoryStorage, RefreshdDevice, RefreshdDeveloper, RefreshdError, RefreshdOperator, RefreshdProvider,
  type DeviceChange, type FormRecord,
} from '../src/index.js';
import { FileStorage, nodeDeliveryListener } from '../src/node.js';
import { ADMIN_KEY, deadline, listen, startDataServer, startRefreshd, tempDir, unique, untilCached, waitFor, type Refreshd } from './harness.js';

let refreshd: Refreshd;
let dir: ReturnType<typeof tempDir>;
let operator: RefreshdOperator;

before(async () => {
  dir = tempDir();
  refreshd = await startRefreshd(path.join(dir.dir, 'data'));
  operator = new RefreshdOperator({ baseUrl: refreshd.url, key: ADMIN_KEY });
});

after(async () => {
  const code = await refreshd?.stop();
  dir?.remove();
  assert.equal(code, 0, 'refreshd exits cleanly on SIGTERM');
});

function connected(device: RefreshdDevice): Promise<boolean> {
  if (device.connected) return Promise.resolve(true);
  return waitFor<boolean>((cb) => device.onConnectionChange(cb), (c) => c);
}

test('forms: the add delivery, a provider update and a removal reach the cache by push', async (t) => {
  const name = unique('com.example.w');
  let answered = 0;
  let handler: ReturnType<typeof nodeDeliveryListener> = (_req, res) => void res.writeHead(503).end();
  const provider = await listen((req, res) => handler(req, res));
  t.after(() => provider.close());
  const created = await operator.createProvider(name, `${provider.url}/refresh`);
  handler = nodeDeliveryListener({ secret: created.signing_secret, answer: (d) => ({ n: ++answered, trigger: d.trigger }) });
  const providerApi = new RefreshdProvider({ baseUrl: refreshd.url, key: created.provider_key });
  await providerApi.putFormConfig(name, { forms: [{ name: 'weather', updateEnabled: true, updateDuration: 1 }] });

  const dev = await operator.createDevice(unique('dev'), unique('user'), 'Asia/Shanghai');
  const errors: unknown[] = [];
  const device = new RefreshdDevice({
    baseUrl: refreshd.url, key: dev.device_key, storage: new FileStorage(path.join(dir.dir, 'forms-cache.json')),
    reconnect: { initialDelayMs: 50 }, onError: (e) => errors.push(e),
  });
  t.after(() => device.stop());
  const changes: DeviceChange[] = [];
  device.onChange((c) => changes.push(c));
  device.start();
  await deadline(connected(device), 10_000, 'the event stream opening');

  const formId = await device.addForm({ provider: name, formName: 'weather' });
  const first = await deadline(
    waitFor<FormRecord | null>((cb) => device.onFormData(formId, cb), (r) => r !== null && r.data !== null),
    15_000, 'the add delivery\'s data pushed to the device',
  );
  assert.deepEqual(first!.data, { n: 1, trigger: 'add' });
  assert.equal(first!.provider, name, 'the cache keeps what addForm knew');
  assert.equal(first!.formName, 'weather');
  assert.ok(changes.some((c) => c.kind === 'form_data' && c.formId === formId && c.source === 'push'));

  // The provider's own update is pushed too; a subscription can be cancelled.
  const seen: unknown[] = [];
  const off = device.onFormData(formId, (r) => seen.push(r?.data));
  const manual = waitFor<FormRecord | null>((cb) => device.onFormData(formId, cb), (r) => (r?.data as { manual?: boolean } | null)?.manual === true);
  await providerApi.putFormData(formId, { manual: true });
  await deadline(manual, 10_000, 'the provider update pushed');
  off();
  assert.deepEqual((await device.getFormData(formId))!.data, { manual: true });
  assert.deepEqual(seen, [{ manual: true }]);
  assert.deepEqual(await device.fetchFormData(formId).then((r) => r.data), { manual: true }, 'the server agrees');

  // A second instance on the same key, with its own cache: it learns of the form from a
  // reset sync and of its removal by push.
  const watcher = new RefreshdDevice({ baseUrl: refreshd.url, key: dev.device_key, storage: new MemoryStorage(), reconnect: { initialDelayMs: 50 } });
  t.after(() => watcher.stop());
  watcher.start();
  await deadline(connected(watcher), 10_000, 'the watcher\'s event stream opening');
  assert.deepEqual((await watcher.getFormData(formId))?.data, { manual: true }, 'the reset sync brought the form');
  const pushedRemoval = waitFor<DeviceChange>((cb) => watcher.onChange(cb), (c) => c.kind === 'form_removed' && c.formId === formId);

  // The other device calls (a visibility change may make a refresh: the watcher is done checking data).
  await device.setFormVisibility(formId, false);
  await device.setFormVisibility(formId, true);
  await device.reportNetwork(false);
  await device.reportNetwork(true);
  await device.setZone('Europe/Berlin');
  await assert.rejects(device.setZone('Not/AZone'), (e: unknown) => e instanceof RefreshdError && e.status === 400 && e.code === 'invalid_zone');

  await device.removeForm(formId);
  assert.equal(await device.getFormData(formId), null);
  const removal = await deadline(pushedRemoval, 10_000, 'form_removed pushed to the watcher');
  assert.equal(removal.source, 'push');
  assert.equal(await watcher.getFormData(formId), null);
  await assert.rejects(device.fetchFormData(formId), (e: unknown) => e instanceof RefreshdError && e.status === 404);

  await deadline(device.stop(), 5_000, 'stop()');
  assert.deepEqual(errors.map(String), []);
});

test('fetched data: pushed after fetch-now, caught up by sync, replaced on reset', async (t) => {
  const appid = unique('wx');
  const user = unique('user');
  const upstream = await startDataServer('first');
  t.after(() => upstream.close());
  const app = await operator.createApp(appid, 'organization');
  const developer = new RefreshdDeveloper({ baseUrl: refreshd.url, key: app.developer_key });
  await developer.putPeriodicFetch(appid, { enabled: true, source: { url: `${upstream.url}/data` } });
  const dev = await operator.createDevice(unique('dev'), user, 'Asia/Shanghai');
  const errors: unknown[] = [];
  const storage = new MemoryStorage();
  const device = new RefreshdDevice({ baseUrl: refreshd.url, key: dev.device_key, storage, reconnect: { initialDelayMs: 50 }, onError: (e) => errors.push(e) });
  t.after(() => device.stop());
  device.start();
  await deadline(connected(device), 10_000, 'the event stream opening');
  await device.setToken(appid, 'tok');
  await device.launch(appid);
  // Launching makes a fetch of its own, finished a moment later: let it land first.
  await deadline(untilCached(device, appid, (d) => d.fetchedData === 'first'), 10_000, 'the fetch made by the launch');

  upstream.setBody('second');
  const pushed = waitFor<DeviceChange>((cb) => device.onChange(cb), (c) => c.kind === 'fetched_data' && c.data.fetchedData === 'second');
  const result = await developer.fetchNow(appid, user);
  assert.equal(result.outcome !== undefined && result.http_status, 200, JSON.stringify(result));
  const change = await deadline(pushed, 10_000, 'fetched_data pushed after fetch-now');
  assert.equal(change.kind === 'fetched_data' && change.source, 'push');
  assert.deepEqual(await device.getBackgroundFetchData(appid), { fetchedData: 'second', timeStamp: result.time_stamp });
  await deadline(device.stop(), 5_000, 'stop()');
  assert.deepEqual(errors.map(String), []);

  // While the device is away the data changes; one sync with the stored cursor catches up.
  upstream.setBody('third');
  const third = await developer.fetchNow(appid, user);
  const caughtUp = await device.sync();
  assert.equal(caughtUp.reset, false, 'the stored cursor is used');
  assert.deepEqual(caughtUp.apps.map((a) => [a.appid, a.fetched_data]), [[appid, 'third']]);
  assert.deepEqual(await device.getBackgroundFetchData(appid), { fetchedData: 'third', timeStamp: third.time_stamp });
  const quiet = await device.sync();
  assert.deepEqual(quiet.apps, [], 'nothing changed since the last cursor');

  // A fresh cache gets the whole state (reset) and drops what the server does not list.
  const fresh = new MemoryStorage();
  await fresh.set('app/gone', JSON.stringify({ fetched_data: 'x', time_stamp: 1 }));
  const other = new RefreshdDevice({ baseUrl: refreshd.url, key: dev.device_key, storage: fresh });
  t.after(() => other.stop());
  const whole = await other.sync();
  assert.equal(whole.reset, true);
  assert.deepEqual(await other.listApps(), [appid]);
  assert.deepEqual(await other.getBackgroundFetchData(appid), { fetchedData: 'third', timeStamp: third.time_stamp });
  assert.equal(await device.pullBackgroundFetchData(appid).then((d) => d?.fetchedData), 'third', 'the server agrees');
});
