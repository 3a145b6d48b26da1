// Signature checks against an independent HMAC (node:crypto), with a fixed clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { checkSignature, computeSignature, parseSignatureHeader, verifyFetchSignature, verifySignature, createDeliveryHandler } from '../src/index.js';

const SECRET = 'a'.repeat(32) + '0123456789abcdef0123456789abcdef';
const OTHER = 'f'.repeat(64);
const T = 1_764_250_000;
const BODY = '{"form_id":"f1","form_name":"weather","trigger":"interval","deferred":[]}';

function mac(secret: string, t: number, payload: string): string {
  return createHmac('sha256', Buffer.from(secret, 'utf8')).update(`${t}.${payload}`).digest('hex');
}

test('computeSignature agrees with node:crypto', async () => {
  assert.equal(await computeSignature(SECRET, T, BODY), mac(SECRET, T, BODY));
  assert.equal(await computeSignature(SECRET, T, new TextEncoder().encode(BODY)), mac(SECRET, T, BODY));
});

test('a valid signature is accepted within the window, on both sides of t', async () => {
  const header = `t=${T},v1=${mac(SECRET, T, BODY)}`;
  assert.equal(await verifySignature(SECRET, header, BODY, T), true);
  assert.equal(await verifySignature(SECRET, header, BODY, T + 300), true);
  assert.equal(await verifySignature(SECRET, header, BODY, T - 300), true);
  assert.equal(await verifySignature(SECRET, header, BODY, new Date((T + 10) * 1000)), true);
  assert.equal(await verifySignature(SECRET, header.toUpperCase().replace('T=', 't=').replace('V1=', 'v1='), BODY, T), true, 'upper-case hex');
});

test('an expired or future signature is refused', async () => {
  const header = `t=${T},v1=${mac(SECRET, T, BODY)}`;
  assert.deepEqual(await checkSignature(SECRET, header, BODY, T + 301), { valid: false, reason: 'expired' });
  assert.deepEqual(await checkSignature(SECRET, header, BODY, T - 301), { valid: false, reason: 'expired' });
  assert.equal(await verifySignature(SECRET, header, BODY, T + 3600), false);
});

test('a wrong secret, a changed body or a changed t is refused', async () => {
  const header = `t=${T},v1=${mac(SECRET, T, BODY)}`;
  assert.deepEqual(await checkSignature(OTHER, header, BODY, T), { valid: false, reason: 'mismatch' });
  assert.equal(await verifySignature(SECRET, header, BODY.replace('interval', 'add'), T), false);
  assert.equal(await verifySignature(SECRET, `t=${T + 1},v1=${mac(SECRET, T, BODY)}`, BODY, T), false);
});

test('two v1 values: either one verifies, in either order; several secrets too', async () => {
  const good = mac(SECRET, T, BODY);
  const other = mac(OTHER, T, BODY);
  assert.equal(await verifySignature(SECRET, `t=${T},v1=${other},v1=${good}`, BODY, T), true);
  assert.equal(await verifySignature(SECRET, `t=${T},v1=${good},v1=${other}`, BODY, T), true);
  assert.equal(await verifySignature(OTHER, `t=${T},v1=${good},v1=${other}`, BODY, T), true);
  assert.equal(await verifySignature('0'.repeat(64), `t=${T},v1=${good},v1=${other}`, BODY, T), false);
  assert.equal(await verifySignature(['0'.repeat(64), OTHER], `t=${T},v1=${good}`, BODY, T), false);
  assert.equal(await verifySignature(['0'.repeat(64), SECRET], `t=${T},v1=${good}`, BODY, T), true);
});

test('malformed headers are refused and say so', async () => {
  const good = mac(SECRET, T, BODY);
  const cases = [
    `v1=${good}`, // no t
    `t=${T}`, // no v1
    `t=abc,v1=${good}`,
    `t=${T},v1=${good.slice(0, 63)}`, // short
    `t=${T},v1=${good}zz`,
    `t=${T},t=${T},v1=${good}`, // two t
    `t=${T};v1=${good}`,
    `garbage`,
    `t=-${T},v1=${good}`,
  ];
  for (const header of cases) {
    assert.deepEqual(await checkSignature(SECRET, header, BODY, T), { valid: false, reason: 'malformed' }, header);
  }
  assert.deepEqual(await checkSignature(SECRET, undefined, BODY, T), { valid: false, reason: 'missing' });
  assert.deepEqual(await checkSignature(SECRET, '', BODY, T), { valid: false, reason: 'missing' });
  // Unknown keys beside a valid pair are ignored.
  assert.equal(await verifySignature(SECRET, `t=${T},v0=xyz,v1=${good}`, BODY, T), true);
  assert.deepEqual(parseSignatureHeader(` t=${T} , v1=${good.toUpperCase()} `), { timestamp: T, signatures: [good] });
});

test('fetch signatures cover the exact path and query', async () => {
  const target = '/data?appid=wx1&token=abc&timestamp=1764250000000';
  const header = `t=${T},v1=${mac(SECRET, T, target)}`;
  assert.equal(await verifyFetchSignature(SECRET, header, target, T), true);
  assert.equal(await verifyFetchSignature(SECRET, header, target.replace('abc', 'abd'), T), false);
  assert.equal(await verifyFetchSignature(SECRET, header, target, T + 301), false);
});

test('the delivery handler core answers 401, 400, 204, 200 and 500', async () => {
  let now = T;
  const seen: string[] = [];
  const handle = createDeliveryHandler({
    secret: SECRET,
    now: () => now,
    answer: (delivery, ctx) => {
      seen.push(`${delivery.form_id}/${delivery.trigger}/${ctx.deliveryId}`);
      if (delivery.trigger === 'keep') return undefined;
      if (delivery.trigger === 'boom') throw new Error('boom');
      return { temp: 21, form: delivery.form_name };
    },
  });
  const signed = (body: string) => ({ 'Refreshd-Signature': `t=${T},v1=${mac(SECRET, T, body)}`, 'refreshd-delivery-id': 'd-1' });

  const ok = await handle({ headers: signed(BODY), rawBody: Buffer.from(BODY) });
  assert.equal(ok.status, 200);
  assert.deepEqual(JSON.parse(ok.body), { temp: 21, form: 'weather' });

  const keep = BODY.replace('interval', 'keep');
  assert.equal((await handle({ headers: signed(keep), rawBody: keep })).status, 204);
  const boom = BODY.replace('interval', 'boom');
  assert.equal((await handle({ headers: signed(boom), rawBody: boom })).status, 500);
  assert.equal((await handle({ headers: signed('not json'), rawBody: 'not json' })).status, 400);
  assert.equal((await handle({ headers: signed(BODY), rawBody: BODY + ' ' })).status, 401, 'body changed after signing');
  assert.equal((await handle({ headers: {}, rawBody: BODY })).status, 401);
  assert.equal((await handle({ headers: new Headers(signed(BODY)), rawBody: BODY })).status, 200, 'a Headers object works too');
  now = T + 301;
  const late = await handle({ headers: signed(BODY), rawBody: BODY });
  assert.equal(late.status, 401);
  assert.match(late.body, /expired/);
  assert.deepEqual(seen, ['f1/interval/d-1', 'f1/keep/d-1', 'f1/boom/d-1', 'f1/interval/d-1']);
});
