// Signatures on real traffic: a delivery from refreshd to a test provider, and a signed
// periodic fetch from refreshd to a test developer server.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import {
  checkSignature, createDeliveryHandler, parseSignatureHeader, verifyFetchSignature, verifySignature,
  MemoryStorage, RefreshdDevice, RefreshdDeveloper, RefreshdOperator, RefreshdProvider, type Delivery, type FormRecord,
} from '../src/index.js';
import { nodeDeliveryListener } from '../src/node.js';
import { ADMIN_KEY, deadline, listen, startDataServer, startRefreshd, startServer, tempDir, unique, waitFor, type Refreshd } from './harness.js';

const FORM_CONFIG = { forms: [{ name: 'weather', updateEnabled: true, updateDuration: 1 }] };
const nowSeconds = () => Math.floor(Date.now() / 1000);

let refreshd: Refreshd;
let data: ReturnType<typeof tempDir>;
let operator: RefreshdOperator;

before(async () => {
  data = tempDir();
  refreshd = await startRefreshd(data.dir);
  operator = new RefreshdOperator({ baseUrl: refreshd.url, key: ADMIN_KEY });
});

after(async () => {
  const code = await refreshd?.stop();
  data?.remove();
  assert.equal(code, 0, 'refreshd exits cleanly on SIGTERM');
});

test('a real delivery: verified by the Node listener, its answer reaches the device', async (t) => {
  const deliveries: { delivery: Delivery; deliveryId: string | null }[] = [];
  const rejects: string[] = [];
  // The listener needs the secret, which refreshd answers when the provider is created.
  let handler: ReturnType<typeof nodeDeliveryListener> = (_req, res) => void res.writeHead(503).end();
  const provider = await listen((req, res) => handler(req, res));
  t.after(() => provider.close());
  const name = unique('com.example.p');
  const created = await operator.createProvider(name, `${provider.url}/refresh`);
  assert.match(created.signing_secret, /^[0-9a-f]{64}$/);
  handler = nodeDeliveryListener({
    secret: created.signing_secret,
    answer: (delivery, ctx) => {
      deliveries.push({ delivery, deliveryId: ctx.deliveryId });
      return { temperature: 21, for: delivery.form_name };
    },
    onReject: (why) => rejects.push(why.reason),
  });
  await new RefreshdProvider({ baseUrl: refreshd.url, key: created.provider_key }).putFormConfig(name, FORM_CONFIG);
  const dev = await operator.createDevice(unique('dev'), unique('user'), 'Asia/Shanghai');
  const device = new RefreshdDevice({ baseUrl: refreshd.url, key: dev.device_key, storage: new MemoryStorage() });
  t.after(() => device.stop());
  const formId = await device.addForm({ provider: name, formName: 'weather' });
  // The add asks the provider for initial data; its answer becomes the form's data.
  const got = await deadline(pollFormData(device, formId), 15_000, 'the provider answer stored as form data');
  assert.deepEqual(got, { temperature: 21, for: 'weather' });
  assert.equal(deliveries.length >= 1, true);
  assert.equal(deliveries[0].delivery.form_id, formId);
  assert.equal(deliveries[0].delivery.trigger, 'add');
  assert.ok(deliveries[0].deliveryId, 'refreshd-delivery-id is sent');
  assert.deepEqual(rejects, []);
});

async function pollFormData(device: RefreshdDevice, formId: string): Promise<unknown> {
  // Follows the device's event stream rather than polling the server.
  device.start();
  try {
    const record = await waitFor<FormRecord | null>((cb) => device.onFormData(formId, cb), (r) => r !== null && r.data !== null);
    return record!.data;
  } finally {
    await device.stop();
  }
}

test('a real delivery: the five checks on the very bytes refreshd sent', async (t) => {
  const name = unique('com.example.q');
  let secret = '';
  const core = () => createDeliveryHandler({ secret, answer: () => ({ ok: true }) });
  const provider = await startServer(async (req, res) => {
    const answer = await core()({ headers: req.headers as Record<string, string>, rawBody: req.body });
  t.after(() => provider.close());
    res.writeHead(answer.status, answer.headers).end(answer.body);
  });
  const created = await operator.createProvider(name, `${provider.url}/refresh`);
  secret = created.signing_secret;
  await new RefreshdProvider({ baseUrl: refreshd.url, key: created.provider_key }).putFormConfig(name, FORM_CONFIG);
  const dev = await operator.createDevice(unique('dev'), unique('user'), 'Asia/Shanghai');
  const device = new RefreshdDevice({ baseUrl: refreshd.url, key: dev.device_key, storage: new MemoryStorage() });
  t.after(() => device.stop());
  const arrived = provider.nextRequest();
  const formId = await device.addForm({ provider: name, formName: 'weather' });
  const req = await deadline(arrived, 15_000, 'the add delivery');
  const header = req.headers['refreshd-signature'] as string;
  const body = req.body;
  assert.equal(JSON.parse(body.toString()).form_id, formId);

  const parsed = parseSignatureHeader(header)!;
  assert.ok(parsed, `a well-formed header: ${header}`);
  assert.ok(Math.abs(parsed.timestamp - nowSeconds()) <= 60, 'signed just now');
  const independent = createHmac('sha256', secret).update(`${parsed.timestamp}.`).update(body).digest('hex');
  assert.ok(parsed.signatures.includes(independent), 'v1 is HMAC-SHA256 over "<t>.<body>"');

  assert.equal(await verifySignature(secret, header, body), true, 'valid');
  assert.equal(await verifySignature(secret, header, body.toString('utf8')), true, 'valid as text');
  assert.deepEqual(await checkSignature(secret, header, body, parsed.timestamp + 301), { valid: false, reason: 'expired' });
  assert.deepEqual(await checkSignature('0'.repeat(64), header, body), { valid: false, reason: 'mismatch' });
  const other = createHmac('sha256', 'another secret').update(`${parsed.timestamp}.`).update(body).digest('hex');
  assert.equal(await verifySignature(secret, `t=${parsed.timestamp},v1=${other},v1=${independent}`, body), true, 'two v1 values');
  assert.equal(await verifySignature(secret, `t=${parsed.timestamp},v1=${other},v1=${other}`, body), false);
  assert.deepEqual(await checkSignature(secret, header.replace(/t=\d+,?/, ''), body), { valid: false, reason: 'malformed' });
  assert.deepEqual(await checkSignature(secret, header, Buffer.concat([body, Buffer.from(' ')])), { valid: false, reason: 'mismatch' });
});

test('a real signed fetch: verified over the exact path and query, and across a rotation', async (t) => {
  const appid = unique('wx');
  const user = unique('user');
  const upstream = await startDataServer('{"headline":"fresh"}');
  t.after(() => upstream.close());
  const app = await operator.createApp(appid, 'organization');
  assert.match(app.signing_secret ?? '', /^[0-9a-f]{64}$/, 'creating an app answers its signing_secret');
  const developer = new RefreshdDeveloper({ baseUrl: refreshd.url, key: app.developer_key });
  await developer.putPeriodicFetch(appid, { enabled: true, source: { url: `${upstream.url}/data` } });
  const dev = await operator.createDevice(unique('dev'), user, 'Asia/Shanghai');
  const device = new RefreshdDevice({ baseUrl: refreshd.url, key: dev.device_key, storage: new MemoryStorage() });
  t.after(() => device.stop());
  await device.setToken(appid, 'tok-1');
  await device.launch(appid);

  const result = await developer.fetchNow(appid, user);
  assert.equal(result.http_status, 200, JSON.stringify(result));
  const req = upstream.requests.at(-1)!;
  const target = new URL(req.url, 'http://x');
  assert.equal(target.pathname, '/data');
  assert.equal(target.searchParams.get('appid'), appid);
  assert.equal(target.searchParams.get('token'), 'tok-1');
  const header = req.headers['refreshd-signature'] as string;
  assert.ok(header, 'the fetch carries refreshd-signature');
  const parsed = parseSignatureHeader(header)!;
  assert.equal(parsed.signatures.length, 1);
  const independent = createHmac('sha256', app.signing_secret).update(`${parsed.timestamp}.${req.url}`).digest('hex');
  assert.equal(parsed.signatures[0], independent);
  assert.equal(await verifyFetchSignature(app.signing_secret, header, req.url), true);
  assert.equal(await verifyFetchSignature(app.signing_secret, header, req.url.replace('tok-1', 'tok-2')), false);
  assert.equal(await verifyFetchSignature('0'.repeat(64), header, req.url), false);
  assert.equal(await verifyFetchSignature(app.signing_secret, header, req.url, parsed.timestamp + 301), false);

  // After a rotation with an overlap, both secrets verify the same fetch (two v1 values).
  const rotated = await operator.rotateAppSigningSecret(appid, 10);
  assert.notEqual(rotated.signing_secret, app.signing_secret);
  await developer.fetchNow(appid, user);
  const after = upstream.requests.at(-1)!;
  const header2 = after.headers['refreshd-signature'] as string;
  assert.equal(parseSignatureHeader(header2)!.signatures.length, 2, header2);
  assert.equal(await verifyFetchSignature(rotated.signing_secret, header2, after.url), true, 'new secret');
  assert.equal(await verifyFetchSignature(app.signing_secret, header2, after.url), true, 'old secret during the overlap');
  assert.equal(await verifyFetchSignature('0'.repeat(64), header2, after.url), false);
});
