// The web console in headless Chromium against a real `refreshd serve`: each view is
// loaded with its kind of key, and what it shows is checked against the very API answers
// the page received. No request may leave 127.0.0.1 and the console must log no error.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { Service, seed, closeServers, refreshdBin } from './fixture.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const SCREENSHOTS = process.env.CONSOLE_SCREENSHOTS
  ?? resolve(HERE, '../../../../target/console-screenshots');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Hang guard for one page to show what a test waits for. */
const PAGE_DEADLINE_MS = 20_000;

// Fail at once, loudly, when there is nothing to test against.
refreshdBin();

let service;
let data;
let browser;

before(async () => {
  service = await Service.start();
  data = await seed(service);
  // A pending next-refresh makes the agenda form's interval ticks skipped (rule F12);
  // the weather form is hidden until a trigger is deferred, shown (a refresh for what was
  // deferred) and hidden again: every kind of mark then exists.
  const [weather, agenda] = data.forms;
  await service.call('POST', `/v1/forms/${agenda.form_id}/next-refresh`, data.providerKey, { minutes: 600 });
  const decided = (form, pattern) => until(`${form.form_name}: ${pattern}`, async () => {
    const why = await service.call('GET', `/v1/forms/${form.form_id}/explain`, data.deviceKey);
    return why.recent_decisions.some((d) => pattern.test(d.decision));
  });
  await service.call('POST', `/v1/forms/${weather.form_id}/visibility`, data.deviceKey, { visible: false });
  await decided(weather, /^deferred /);
  await service.call('POST', `/v1/forms/${weather.form_id}/visibility`, data.deviceKey, { visible: true });
  await decided(weather, /^refresh visible/);
  await service.call('POST', `/v1/forms/${weather.form_id}/visibility`, data.deviceKey, { visible: false });
  await decided(agenda, /^skipped /);
  await mkdir(SCREENSHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
  });
});

after(async () => {
  await browser?.close();
  await service?.stop();
  closeServers(data);
});

/** Polls `check` until it holds; the deadline only catches a hang. */
async function until(what, check, deadlineMs = 30_000) {
  const deadline = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Mirrors the console's instant format. */
function fmtTime(ms) {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

/**
 * Opens the console in a fresh context (its own sessionStorage), types `key` into the
 * key form with the keyboard, then goes to `hash`. Records every request, every
 * console error and the JSON of every API answer the page received.
 */
async function openConsole(key, hash, { viewport = { width: 1280, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const seen = { requests: [], errors: [], answers: new Map() };
  page.on('request', (request) => seen.requests.push(request.url()));
  page.on('console', (message) => {
    if (message.type() === 'error') seen.errors.push(message.text());
  });
  page.on('pageerror', (error) => seen.errors.push(String(error)));
  // Bodies are read asynchronously; `answer` waits for every read begun so far.
  seen.reading = [];
  page.on('response', (response) => {
    const url = new URL(response.url());
    if (url.pathname.startsWith('/v1/') || url.pathname === '/healthz') {
      seen.reading.push(response.json().then(
        (body) => { seen.answers.set(url.pathname + url.search, { status: response.status(), body }); },
        () => { /* not JSON */ },
      ));
    }
  });
  await page.goto(`${service.base}/ui/`);
  // Keyboard only: the skip link, then the key field.
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'key-input', 'the key field is reachable by keyboard');
  await page.keyboard.type(key);
  await page.keyboard.press('Enter');
  // Locator waits only: the page's CSP forbids the eval that polling functions need.
  await page.locator('body[data-ready]').waitFor({ state: 'attached', timeout: PAGE_DEADLINE_MS });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('refreshd.console.key')), key);
  if (hash) await page.evaluate((h) => { location.hash = h; }, hash);
  return { context, page, seen };
}

/** The recorded answer whose path starts with `prefix` (the latest one). */
async function answer(seen, prefix) {
  await Promise.all(seen.reading);
  let found;
  for (const [path, value] of seen.answers) {
    if (path === prefix || path.startsWith(prefix + '?')) found = value;
  }
  assert.ok(found, `the page asked for ${prefix}; it asked for ${[...seen.answers.keys()].join(', ')}`);
  return found.body;
}

async function finish(name, { context, page, seen }) {
  await page.screenshot({ path: join(SCREENSHOTS, `console-${name}.png`), fullPage: true });
  const origin = new URL(service.base).origin;
  const outside = seen.requests.filter((url) => new URL(url).origin !== origin);
  assert.deepEqual(outside, [], 'every request stays on the service at 127.0.0.1');
  assert.ok(seen.requests.every((url) => new URL(url).hostname === '127.0.0.1'));
  assert.deepEqual(seen.errors, [], 'no console errors');
  await context.close();
}

/** Whether the OpenAPI document the page read offers GET `path`. */
async function statsRouted(seen, path) {
  const doc = await answer(seen, '/v1/openapi.json');
  return Boolean(doc.paths[path] && doc.paths[path].get);
}

test('operator: lists with filters and cursor pages, links to the device view', async () => {
  const opened = await openConsole(service.operatorKey, '#/operator/apps');
  const { page, seen } = opened;
  await page.locator('#list table[aria-label="Apps"]').waitFor({ timeout: PAGE_DEADLINE_MS });
  const apps = (await answer(seen, '/v1/admin/apps')).items;
  assert.deepEqual(await page.locator('#list tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.id)), apps.map((a) => a.appid));
  assert.ok(apps.some((a) => a.appid === data.appid));

  // Devices: every device of the first page, then one user's through the filter form.
  await page.getByRole('link', { name: 'Devices', exact: true }).first().click();
  await page.locator('#list table[aria-label="Devices"]').waitFor({ timeout: PAGE_DEADLINE_MS });
  const all = (await answer(seen, '/v1/admin/devices')).items;
  assert.equal(all.length, 2);
  assert.equal(await page.locator('#list tbody tr').count(), all.length);
  await page.getByLabel('User id (exact)').fill(data.userId);
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('#list-summary', { hasText: '1 shown of 1 loaded.' }).waitFor({ timeout: PAGE_DEADLINE_MS });
  assert.equal(await page.locator('#list tbody tr').count(), 1);
  const mine = (await answer(seen, `/v1/admin/devices?limit=50&user_id=${data.userId}`)).items;
  assert.deepEqual(mine.map((d) => d.device_id), [data.deviceId]);
  const row = page.locator(`#list tr[data-id="${data.deviceId}"]`);
  assert.equal(await row.locator('td[data-col="forms"]').textContent(), String(mine[0].forms));

  // The id filter narrows what was loaded, client side.
  await page.getByLabel('Device contains').fill('no-such-device');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.locator('#list .empty').waitFor({ timeout: PAGE_DEADLINE_MS });

  // Cursor pages: more devices than one page holds are reached with "Load more".
  for (let i = 0; i < 51; i += 1) {
    await service.call('POST', '/v1/admin/devices', service.operatorKey, { device_id: `bulk-${String(i).padStart(2, '0')}`, user_id: 'u-bulk', zone: 'UTC' });
  }
  await page.evaluate(() => { location.hash = '#/operator/devices?user_id=u-bulk'; });
  await page.locator('#list-summary', { hasText: '50 shown of 50 loaded; more pages remain.' }).waitFor({ timeout: PAGE_DEADLINE_MS });
  assert.equal(await page.locator('#list tbody tr').count(), 50);
  assert.ok(await page.locator('#load-more').isVisible());
  await page.locator('#load-more').click();
  await page.locator('#list-summary', { hasText: '51 shown of 51 loaded.' }).waitFor({ timeout: PAGE_DEADLINE_MS });
  assert.equal(await page.locator('#list tbody tr').count(), 51);
  assert.ok(await page.locator('#load-more').isHidden());

  // From the list to the device: its forms, as the operator may see them.
  await page.evaluate((u) => { location.hash = `#/operator/devices?user_id=${u}`; }, data.userId);
  await page.getByRole('link', { name: data.deviceId }).click();
  await page.locator('table[data-table="forms"]').waitFor({ timeout: PAGE_DEADLINE_MS });
  const forms = (await answer(seen, `/v1/admin/devices/${data.deviceId}/forms`)).forms;
  assert.deepEqual(
    await page.locator('table[data-table="forms"] tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.formId)).then((ids) => ids.sort()),
    forms.map((f) => f.form_id).sort(),
  );
  assert.equal(await page.locator('#device-timeline .lane').count(), forms.length);
  // Explain answers the device and the provider; the page says so instead of failing.
  const explain = (await answer(seen, '/v1/openapi.json')).paths['/v1/forms/{form_id}/explain'].get;
  const operatorMayExplain = /operator/i.test(explain.description);
  assert.equal(await page.locator('#needs-device-key').count(), operatorMayExplain ? 0 : 1);
  await page.evaluate((u) => { location.hash = `#/operator/devices?user_id=${u}`; }, data.userId);
  await page.locator(`#list tr[data-id="${data.deviceId}"]`).waitFor({ timeout: PAGE_DEADLINE_MS });
  await finish('operator', opened);
});

test('device: a 24-hour lane per form with the decisions and plans explain gives', async () => {
  const opened = await openConsole(data.deviceKey, '#/device');
  const { page, seen } = opened;
  await page.locator('#device-timeline svg[role="img"]').waitFor({ timeout: PAGE_DEADLINE_MS });
  const svgNode = page.locator('#device-timeline svg[data-chart="device-timeline"]');
  assert.match(await svgNode.locator(':scope > title').textContent(), /timeline/i);
  const from = Date.parse(await svgNode.getAttribute('data-from'));
  const to = Date.parse(await svgNode.getAttribute('data-to'));
  const now = Date.parse(await svgNode.getAttribute('data-now'));
  assert.equal(to - from, 24 * 3600 * 1000);
  assert.equal(now, Date.parse((await answer(seen, '/healthz')).now), 'the timeline uses the server clock');

  const forms = (await answer(seen, '/v1/device/forms')).forms;
  assert.equal(forms.length, 2);
  let skippedSeen = 0;
  let deferredSeen = 0;
  let plannedSeen = 0;
  for (const form of forms) {
    const why = await answer(seen, `/v1/forms/${form.form_id}/explain`);
    const lane = page.locator(`#device-timeline .lane[data-lane="${form.form_id}"]`);
    assert.equal(await lane.getAttribute('data-label'), form.form_name);
    const inside = (d) => { const at = Date.parse(d.at); return at >= from && at <= to; };
    const past = why.recent_decisions.filter(inside);
    const ahead = why.next_planned.filter(inside);
    const marks = await lane.locator('.mark').evaluateAll((nodes) => nodes.map((n) => ({
      status: n.dataset.status, at: n.dataset.at, rule: n.dataset.rule, trigger: n.dataset.trigger,
      shape: n.firstElementChild.tagName, title: n.querySelector('title').textContent,
      ruleText: n.querySelector('text.rule') ? n.querySelector('text.rule').textContent : null,
    })));
    assert.equal(marks.length, past.length + ahead.length, `${form.form_name}: one mark per decision in the window`);
    assert.equal(marks.filter((m) => m.status === 'planned').length, ahead.length);
    for (const d of past) {
      const mark = marks.find((m) => m.at === new Date(Date.parse(d.at)).toISOString() && m.status !== 'planned' && m.rule === d.rule);
      assert.ok(mark, `${form.form_name}: a mark for ${d.decision} at ${d.at}`);
      assert.ok(mark.title.includes(d.decision) && mark.title.includes(d.rule));
      const expected = d.decision.startsWith('skipped') ? 'skipped'
        : d.decision.startsWith('deferred') ? 'deferred'
          : d.decision.includes('(counted)') ? 'counted' : 'uncounted';
      assert.equal(mark.status, expected, d.decision);
      // Shape, not only colour: counted and not counted are circles (filled vs ring),
      // deferred a triangle and skipped a cross (both paths), with the rule as text.
      if (expected === 'skipped') { assert.equal(mark.ruleText, d.rule); skippedSeen += 1; }
      if (expected === 'deferred') deferredSeen += 1;
      assert.equal(mark.shape, expected === 'counted' || expected === 'uncounted' ? 'circle' : 'path');
    }
    for (const d of ahead) {
      assert.ok(marks.some((m) => m.status === 'planned' && m.at === new Date(Date.parse(d.at)).toISOString()), `${form.form_name}: planned ${d.at}`);
      assert.ok(Date.parse(d.at) >= now - 1000, 'planned refreshes lie ahead of now');
      plannedSeen += 1;
    }
    // The table beside the timeline shows the day's count from the same answer.
    const counted = await page.locator(`tr[data-form-id="${form.form_id}"] td[data-col="counted"]`).textContent();
    assert.ok(counted.startsWith(String(why.counted_today)), `${counted} vs ${why.counted_today}`);
  }
  assert.ok(skippedSeen > 0, 'the pending next-refresh made skipped decisions');
  assert.ok(await page.locator('#device-timeline .mark[data-trigger="visible"]').count() > 0, 'the refresh on showing is drawn');
  assert.ok(deferredSeen > 0, 'the hidden form deferred its triggers');
  assert.ok(plannedSeen > 0, 'planned refreshes are drawn');
  assert.ok(await page.locator('#skipped li').count() >= skippedSeen);
  const planned = page.locator('#device-timeline .mark[data-status="planned"] path').first();
  assert.equal(await planned.getAttribute('stroke-dasharray'), '3 2');

  // The user's periodic fetch: the latest one the device has data of, per app.
  const stamp = await latestCachedStamp(seen);
  const fetchMarks = await page.locator('#device-timeline .lane[data-lane="periodic"] .mark')
    .evaluateAll((nodes) => nodes.map((n) => Date.parse(n.dataset.at)));
  assert.deepEqual(fetchMarks, stamp >= from && stamp <= to ? [stamp] : []);

  // Readable at 200 %: half the width, nothing wider than the page.
  await page.setViewportSize({ width: 640, height: 900 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling at 200 % (overflow ${overflow}px)`);
  await page.setViewportSize({ width: 1280, height: 900 });
  await finish('device', opened);
});

/** The newest cached `time_stamp` in the sync answer the page received. */
async function latestCachedStamp(seen) {
  const sync = await answer(seen, '/v1/device/sync');
  const stamps = [];
  const visit = (v) => {
    if (!v || typeof v !== 'object') return;
    if (Array.isArray(v)) { v.forEach(visit); return; }
    if (typeof v.appid === 'string' && typeof v.time_stamp === 'number') { stamps.push(v.time_stamp); return; }
    Object.values(v).forEach(visit);
  };
  visit(sync);
  assert.ok(stamps.length > 0, 'the sync answer has the fetched data');
  return Math.max(...stamps);
}

test('developer: statistics as charts and a user\'s fetch history', async () => {
  const hash = `#/app/${data.appid}?user_id=${data.userId}`;
  const opened = await openConsole(data.developerKey, hash);
  const { page, seen } = opened;
  await page.locator('table[data-table="attempts"]').waitFor({ timeout: PAGE_DEADLINE_MS });
  const log = await answer(seen, `/v1/apps/${data.appid}/periodic-fetch/log`);
  const why = await answer(seen, `/v1/apps/${data.appid}/periodic-fetch/explain`);
  assert.ok(log.attempts.length >= 1, 'fetch-now left an attempt');
  assert.equal(await page.locator('table[data-table="attempts"] tbody tr').count(), log.attempts.length);
  assert.equal(await page.locator('table[data-table="attempts"] tbody tr').first().locator('td[data-col="outcome"]').textContent(), log.attempts[0].outcome);
  assert.equal(await page.locator('[data-fact="next_due"]').textContent(), why.next_due ? fmtTime(Date.parse(why.next_due)) : '—');
  assert.equal(await page.locator('[data-fact="eligible"]').textContent(), why.eligible ? 'yes' : `no (${why.ineligible_reason})`);
  assert.equal(await page.locator('#user-timeline svg[role="img"] title').first().count(), 1);

  if (await statsRouted(seen, '/v1/apps/{appid}/stats')) {
    await page.locator('svg[data-chart="chart-fetches"]').waitFor({ timeout: PAGE_DEADLINE_MS });
    const stats = await answer(seen, `/v1/apps/${data.appid}/stats`);
    assert.equal(await page.locator('[data-card="fetches"] .value').textContent(), String(stats.totals.fetches));
    const bars = await page.locator('#chart-fetches .bar').evaluateAll((g) => g.map((n) => ({ hour: n.dataset.hour, total: Number(n.dataset.total) })));
    assert.deepEqual(bars, stats.hours.map((h) => ({ hour: h.hour, total: h.fetches })));
    assert.equal(await page.locator('[data-card="eligible"] .value').textContent(), String(stats.users.eligible));
    assert.equal(stats.hours.length, 24);
    assert.equal(await page.locator('table[data-table="hours"] tbody tr').count(), stats.hours.length);
  } else {
    assert.match(await page.locator('#no-stats').textContent(), /No statistics/);
  }
  await finish('developer', opened);
});

test('provider: delivery health and definitions with their placed counts', async () => {
  const opened = await openConsole(data.providerKey, `#/provider/${data.provider}`);
  const { page, seen } = opened;
  await page.locator('table[data-table="definitions"]').waitFor({ timeout: PAGE_DEADLINE_MS });
  const defs = (await answer(seen, `/v1/providers/${data.provider}/form-definitions`)).definitions;
  assert.deepEqual(defs.map((d) => d.form_name).sort(), ['agenda', 'weather']);
  for (const d of defs) {
    assert.equal(await page.locator(`tr[data-form="${d.form_name}"] td[data-col="placed"]`).textContent(), String(d.placed));
    assert.equal(await page.locator(`#chart-placed g[data-name="${d.form_name}"]`).getAttribute('data-value'), String(d.placed));
  }
  if (await statsRouted(seen, '/v1/providers/{provider}/stats')) {
    await page.locator('svg[data-chart="chart-deliveries"]').waitFor({ timeout: PAGE_DEADLINE_MS });
    const stats = await answer(seen, `/v1/providers/${data.provider}/stats`);
    assert.equal(await page.locator('[data-card="deliveries"] .value').textContent(), String(stats.totals.deliveries));
    assert.equal(await page.locator('[data-card="done"] .value').textContent(), String(stats.totals.outcomes.done ?? 0));
    const bars = await page.locator('#chart-deliveries .bar').evaluateAll((g) => g.map((n) => Number(n.dataset.total)));
    assert.deepEqual(bars, stats.hours.map((h) => h.deliveries));
    for (const [trigger, n] of Object.entries(stats.totals.triggers)) {
      assert.equal(await page.locator(`#chart-triggers g[data-name="${trigger}"]`).getAttribute('data-value'), String(n));
    }
  } else {
    assert.match(await page.locator('#no-stats').textContent(), /No statistics/);
  }
  await finish('provider', opened);
});

test('the key stays for the tab only and "Forget key" drops it', async () => {
  const opened = await openConsole(data.providerKey, `#/provider/${data.provider}`);
  const { page } = opened;
  await page.locator('table[data-table="definitions"]').waitFor({ timeout: PAGE_DEADLINE_MS });
  // A reload keeps the view without typing the key again.
  await page.reload();
  await page.locator('table[data-table="definitions"]').waitFor({ timeout: PAGE_DEADLINE_MS });
  assert.equal(await page.locator('#key-input').inputValue(), '', 'the key is never shown back');
  await page.getByRole('button', { name: 'Forget key' }).click();
  await page.getByRole('heading', { name: 'Welcome' }).waitFor({ timeout: PAGE_DEADLINE_MS });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('refreshd.console.key')), null);
  // Another tab (context) never had it.
  const other = await browser.newContext();
  const otherPage = await other.newPage();
  await otherPage.goto(`${service.base}/ui/`);
  await otherPage.getByRole('heading', { name: 'Welcome' }).waitFor({ timeout: PAGE_DEADLINE_MS });
  await other.close();
  await opened.context.close();
});
