// THE OFFLINE PROOF: data prefetched by refreshd is read from the device's file cache
// while refreshd is down, and after a restart one fetch pushes new data to the device.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { RefreshdDevice, RefreshdDeveloper, RefreshdOperator, type DeviceChange } from '../src/index.js';
import { FileStorage } from '../src/node.js';
import { ADMIN_KEY, deadline, startDataServer, startRefreshd, tempDir, untilCached, waitFor } from './harness.js';

const dir = tempDir();
after(() => dir.remove());

function connected(device: RefreshdDevice): Promise<boolean> {
  if (device.connected) return Promise.resolve(true);
  return waitFor<boolean>((cb) => device.onConnectionChange(cb), (c) => c);
}

function pushedData(device: RefreshdDevice, appid: string, text: string): Promise<DeviceChange> {
  return waitFor<DeviceChange>((cb) => device.onChange(cb), (c) => c.kind === 'fetched_data' && c.appid === appid && c.data.fetchedData === text);
}

test('prefetched data is read offline from the file cache, and one fetch after a restart pushes new data', async (t) => {
  const dataDir = path.join(dir.dir, 'refreshd-data');
  const cacheFile = path.join(dir.dir, 'device-cache.json');
  const upstream = await startDataServer('{"headline":"before the outage"}');
  t.after(() => upstream.close());
  const appid = 'wxoffline';
  const user = 'offline-user';

  // 1. refreshd up; the device library syncs the prefetched data into its file cache.
  let refreshd = await startRefreshd(dataDir);
  t.after(() => refreshd.stop());
  const operator = new RefreshdOperator({ baseUrl: refreshd.url, key: ADMIN_KEY });
  const app = await operator.createApp(appid, 'organization');
  const { device_key } = await operator.createDevice('offline-phone', user, 'Asia/Shanghai');
  await new RefreshdDeveloper({ baseUrl: refreshd.url, key: app.developer_key }).putPeriodicFetch(appid, { enabled: true, source: { url: `${upstream.url}/data` } });
  const errors: unknown[] = [];
  const online = new RefreshdDevice({ baseUrl: refreshd.url, key: device_key, storage: new FileStorage(cacheFile), reconnect: { initialDelayMs: 50 }, onError: (e) => errors.push(e) });
  t.after(() => online.stop());
  online.start();
  await deadline(connected(online), 10_000, 'the event stream opening');
  await online.setToken(appid, 'tok-offline');
  await online.launch(appid);
  // Launching makes a fetch of its own, finished a moment later: let it land first.
  await deadline(untilCached(online, appid, () => true), 10_000, 'the fetch made by the launch');
  const first = await new RefreshdDeveloper({ baseUrl: refreshd.url, key: app.developer_key }).fetchNow(appid, user);
  assert.equal(first.http_status, 200, JSON.stringify(first));
  await deadline(untilCached(online, appid, (d) => d.timeStamp === first.time_stamp), 10_000, 'the prefetched data reaching the device cache');
  assert.deepEqual(await online.getBackgroundFetchData(appid), { fetchedData: '{"headline":"before the outage"}', timeStamp: first.time_stamp });
  await deadline(online.stop(), 5_000, 'stop()');
  assert.deepEqual(errors.map(String), []);

  // 2. refreshd goes down.
  assert.equal(await refreshd.stop(), 0, 'refreshd exits cleanly on SIGTERM');

  // 3. A fresh instance on the same cache file answers with no server and no network call.
  let networkCalls = 0;
  const offline = new RefreshdDevice({
    baseUrl: refreshd.url, key: device_key, storage: new FileStorage(cacheFile),
    fetch: async () => {
      networkCalls++;
      throw new Error('no network in this test step');
    },
  });
  const cached = await offline.getBackgroundFetchData(appid);
  assert.ok(cached, 'the prefetched data is in the file cache');
  assert.equal(cached.fetchedData, '{"headline":"before the outage"}');
  assert.ok(cached.timeStamp > 0);
  assert.equal(await offline.getBackgroundFetchData('wx-never-fetched'), null);
  assert.equal(networkCalls, 0, 'reading the cache made no request');
  await assert.rejects(fetch(`${refreshd.url}/healthz`), 'the old server is really gone');

  // 4. refreshd restarts on the same data dir (a new port); the device reconnects.
  refreshd = await startRefreshd(dataDir);
  try {
    const developer = new RefreshdDeveloper({ baseUrl: refreshd.url, key: app.developer_key });
    const device = new RefreshdDevice({ baseUrl: refreshd.url, key: device_key, storage: new FileStorage(cacheFile), reconnect: { initialDelayMs: 50 }, onError: (e) => errors.push(e) });
    t.after(() => device.stop());
    device.start();
    await deadline(connected(device), 10_000, 'the event stream opening after the restart');
    assert.deepEqual(await device.getBackgroundFetchData(appid), cached, 'nothing new yet');

    // 5. The data changes upstream; ONE fetch; the device receives it by push.
    upstream.setBody('{"headline":"after the restart"}');
    const arrived = pushedData(device, appid, '{"headline":"after the restart"}');
    const requestsBefore = upstream.requests.length;
    const second = await developer.fetchNow(appid, user);
    assert.equal(second.http_status, 200, JSON.stringify(second));
    const change = await deadline(arrived, 10_000, 'the new data pushed to the device');
    assert.equal(change.kind === 'fetched_data' && change.source, 'push', 'delivered over the event stream');
    assert.equal(change.kind === 'fetched_data' && change.data.timeStamp, second.time_stamp, 'it is the data of that fetch');
    assert.equal(upstream.requests.length, requestsBefore + 1, 'exactly one fetch upstream');
    assert.ok(second.time_stamp! > cached.timeStamp);
    await deadline(device.stop(), 5_000, 'stop()');
    assert.deepEqual(errors.map(String), []);

    // The file cache now holds the new data for the next offline read.
    const later = new RefreshdDevice({ baseUrl: refreshd.url, key: device_key, storage: new FileStorage(cacheFile) });
    assert.deepEqual(await later.getBackgroundFetchData(appid), { fetchedData: '{"headline":"after the restart"}', timeStamp: second.time_stamp });
  } finally {
    assert.equal(await refreshd.stop(), 0, 'refreshd exits cleanly on SIGTERM');
  }
});
