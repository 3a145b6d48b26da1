// Starts a real `refreshd serve` (REFRESHD_BIN) on a temporary data directory with its
// clock warped, two local HTTP servers (the app's data source and the provider's
// refresh URL), and creates known data through the API. Everything listens on
// 127.0.0.1 only.

import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** How long the service may take to say it listens before the tests give up. */
const START_DEADLINE_MS = 30_000;

export function refreshdBin() {
  const bin = process.env.REFRESHD_BIN;
  if (!bin) {
    throw new Error('REFRESHD_BIN is not set: point it at a built refreshd (target/release/refreshd)');
  }
  return bin;
}

/** Resolves with the line matching `pattern` on `stream`, or rejects at the deadline. */
function waitForLine(child, pattern, deadlineMs) {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => {
      reject(new Error(`refreshd did not print ${pattern} within ${deadlineMs} ms; it printed: ${buffer}`));
    }, deadlineMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buffer += chunk;
      const match = buffer.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`refreshd exited with ${code} before listening; it printed: ${buffer}`));
    });
  });
}

/** A local HTTP server; `handler(req, body)` answers `[status, object]`. */
async function jsonServer(handler) {
  const requests = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, body });
      const [status, answer] = handler(req, body);
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return { server, requests, url: `http://127.0.0.1:${port}` };
}

export class Service {
  static async start() {
    const service = new Service();
    service.dataDir = await mkdtemp(join(tmpdir(), 'refreshd-console-'));
    service.operatorKey = `rfdo_${randomBytes(32).toString('hex')}`;
    service.child = spawn(refreshdBin(), [
      'serve',
      '--data-dir', service.dataDir,
      '--listen', '127.0.0.1:0',
      '--metrics-listen', '127.0.0.1:0',
      '--time-warp', '3600',
      '--allow-destination', '127.0.0.0/8',
    ], {
      env: { ...process.env, REFRESHD_ADMIN_KEY: service.operatorKey, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    service.stderr = '';
    service.child.stderr.setEncoding('utf8');
    service.child.stderr.on('data', (c) => { service.stderr += c; });
    try {
      const match = await waitForLine(service.child, /listening on (http:\/\/127\.0\.0\.1:\d+)/, START_DEADLINE_MS);
      service.base = match[1];
    } catch (err) {
      // Leave nothing running or behind when the service never came up.
      await service.stop();
      throw new Error(`${err.message}\nstderr: ${service.stderr}`);
    }
    return service;
  }

  async call(method, path, key, body) {
    const headers = { authorization: `Bearer ${key}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(this.base + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const value = text ? JSON.parse(text) : null;
    if (!res.ok) {
      throw new Error(`${method} ${path} answered ${res.status}: ${text}`);
    }
    return value;
  }

  async stop() {
    if (this.child && this.child.exitCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGKILL');
      await exited;
    }
    if (this.dataDir) await rm(this.dataDir, { recursive: true, force: true });
  }
}

/**
 * The known data: an organization app with a URL source, a provider with two form
 * definitions whose refresh URL answers JSON, a device of user u-console with both
 * forms placed, the app launched with a token set, and a fetch made now.
 */
export async function seed(service) {
  const source = await jsonServer(() => [200, { headline: 'fresh', n: 1 }]);
  let deliveries = 0;
  const provider = await jsonServer((req, body) => {
    deliveries += 1;
    const asked = body ? JSON.parse(body) : {};
    return [200, { temperature: 20 + (deliveries % 5), trigger: asked.trigger ?? null }];
  });
  const op = service.operatorKey;
  const data = {
    appid: 'wxconsole1',
    provider: 'com.example.console',
    userId: 'u-console',
    deviceId: 'phone-console',
    otherDeviceId: 'tablet-other',
    servers: [source, provider],
  };
  const app = await service.call('POST', '/v1/admin/apps', op, { appid: data.appid, subject: 'organization' });
  data.developerKey = app.developer_key;
  await service.call('PUT', `/v1/apps/${data.appid}/periodic-fetch`, data.developerKey, {
    enabled: true, source: { url: `${source.url}/feed` },
  });
  const prov = await service.call('POST', '/v1/admin/providers', op, {
    provider: data.provider, refresh_url: `${provider.url}/refresh`, system_app: false, api_version: 11,
  });
  data.providerKey = prov.provider_key;
  await service.call('PUT', `/v1/providers/${data.provider}/form-config`, data.providerKey, {
    forms: [
      { name: 'weather', updateEnabled: true, updateDuration: 1 },
      { name: 'agenda', updateEnabled: true, updateDuration: 2 },
    ],
  });
  const device = await service.call('POST', '/v1/admin/devices', op, {
    device_id: data.deviceId, user_id: data.userId, zone: 'Europe/Berlin',
  });
  data.deviceKey = device.device_key;
  await service.call('POST', '/v1/admin/devices', op, {
    device_id: data.otherDeviceId, user_id: 'u-other', zone: 'Asia/Tokyo',
  });
  data.forms = [];
  for (const formName of ['weather', 'agenda']) {
    const form = await service.call('POST', '/v1/forms', data.deviceKey, {
      provider: data.provider, form_name: formName, hidden: false,
    });
    data.forms.push({ form_id: form.form_id, form_name: formName });
  }
  await service.call('PUT', `/v1/apps/${data.appid}/background-fetch/token`, data.deviceKey, { token: 'tok-console' });
  await service.call('POST', `/v1/apps/${data.appid}/launch`, data.deviceKey);
  data.fetchNow = await service.call('POST', `/v1/apps/${data.appid}/periodic-fetch/fetch-now`, data.developerKey, { user_id: data.userId });
  return data;
}

export function closeServers(data) {
  for (const s of data?.servers ?? []) s.server.close();
}
