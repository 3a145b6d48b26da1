// refreshd console: one page, hash routes, plain DOM. The key lives in sessionStorage
// and its prefix picks the view; every number shown comes from the API's answers.
'use strict';

const KEY_STORE = 'refreshd.console.key';
const SVG_NS = 'http://www.w3.org/2000/svg';
const HOUR_MS = 3600 * 1000;

const KINDS = {
  rfdo_: { kind: 'operator', label: 'Operator' },
  rfda_: { kind: 'developer', label: 'App developer' },
  rfdp_: { kind: 'provider', label: 'Widget provider' },
  rfdd_: { kind: 'device', label: 'Device' },
};

// Triggers: a colour AND a letter each, so a mark never relies on hue alone.
const TRIGGERS = {
  interval: { color: '#1f5fa8', letter: 'I' },
  scheduled: { color: '#7b3294', letter: 'S' },
  next: { color: '#b35c00', letter: 'N' },
  network: { color: '#00796b', letter: 'W' },
  visible: { color: '#5d6d1e', letter: 'V' },
  quota_reset: { color: '#8c2d04', letter: 'Q' },
  add: { color: '#444444', letter: 'A' },
};
const OTHER_TRIGGER = { color: '#555555', letter: '?' };

// Outcomes of fetches and deliveries: colour plus a fill pattern.
const OUTCOME_STYLE = {
  ok: { color: '#1f7a3a', pattern: 'solid' },
  done: { color: '#1f7a3a', pattern: 'solid' },
  not_modified: { color: '#4f8f5f', pattern: 'dots' },
  retry: { color: '#b35c00', pattern: 'diagonal' },
  failed: { color: '#a4262c', pattern: 'cross' },
  http_status: { color: '#a4262c', pattern: 'cross' },
  timeout: { color: '#b35c00', pattern: 'diagonal' },
  connect: { color: '#6b4c9a', pattern: 'horizontal' },
  invalid_response: { color: '#8c6d1f', pattern: 'vertical' },
};
// Successes first, then failures by name, so stacks read the same way in every hour.
const OUTCOME_ORDER = ['ok', 'done', 'not_modified', 'retry', 'failed'];
function outcomeSort(a, b) {
  const ia = OUTCOME_ORDER.indexOf(a), ib = OUTCOME_ORDER.indexOf(b);
  if (ia !== ib) return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  return a < b ? -1 : a > b ? 1 : 0;
}
const OUTCOME_FALLBACK = [
  { color: '#3b6e8f', pattern: 'dots' },
  { color: '#7a2f5a', pattern: 'horizontal' },
  { color: '#5d6d1e', pattern: 'vertical' },
  { color: '#555555', pattern: 'diagonal' },
  { color: '#8c2d04', pattern: 'cross' },
];

const state = {
  key: sessionStorage.getItem(KEY_STORE) || '',
  openapi: null,
};

// ---------------------------------------------------------------- small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === 'text') node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child) node.append(child);
  }
  return node;
}

function keyKind(key) {
  for (const [prefix, info] of Object.entries(KINDS)) {
    if (key.startsWith(prefix)) return info;
  }
  return null;
}

function fmtTime(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function hhmm(ms) {
  return new Date(ms).toISOString().slice(11, 16);
}

function fmtNum(n, digits = 0) {
  if (n === null || n === undefined) return '—';
  return Number(n).toFixed(digits);
}

function fmtPct(rate) {
  if (rate === null || rate === undefined) return '—';
  return `${(rate * 100).toFixed(1)} %`;
}

function setStatus(text) {
  document.getElementById('status').textContent = text;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path) {
  const response = await fetch(path, {
    headers: { authorization: `Bearer ${state.key}`, accept: 'application/json' },
    cache: 'no-store',
  });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const err = body && body.error ? body.error : { code: 'http_' + response.status, message: text };
    throw new ApiError(response.status, err.code, err.message);
  }
  return body;
}

/** The OpenAPI document (no key), to learn which optional endpoints this server has. */
async function openapi() {
  if (!state.openapi) {
    const response = await fetch('/v1/openapi.json', { cache: 'no-store' });
    state.openapi = response.ok ? await response.json() : { paths: {} };
  }
  return state.openapi;
}

async function hasRoute(method, path) {
  const doc = await openapi();
  return Boolean(doc.paths && doc.paths[path] && doc.paths[path][method]);
}

/** Whether the route's documented callers include `kind` (the description names them). */
async function routeAllows(method, path, kind) {
  const doc = await openapi();
  const op = doc.paths && doc.paths[path] && doc.paths[path][method];
  if (!op) return false;
  const words = { operator: 'operator', developer: 'app', provider: 'provider', device: 'device' };
  return String(op.description || '').toLowerCase().includes(words[kind]);
}

/** The server's clock (warped in demos and tests), or the browser's when unknown. */
async function serverNow() {
  try {
    const response = await fetch('/healthz', { cache: 'no-store' });
    const body = await response.json();
    if (body && body.now) return Date.parse(body.now);
  } catch { /* fall through */ }
  return Date.now();
}

function errorBox(err) {
  const message = err instanceof ApiError ? `${err.status} ${err.code}: ${err.message}` : String(err && err.message ? err.message : err);
  return el('p', { class: 'error', role: 'alert' }, message);
}

function table(columns, rows, attrs = {}) {
  const head = el('tr', {}, columns.map((c) => el('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)));
  const body = rows.map((row) => el('tr', row.attrs || {}, columns.map((c) => {
    const value = c.value(row.data);
    return el('td', { class: c.num ? 'num' : null, 'data-col': c.id }, value instanceof Node ? value : String(value ?? '—'));
  })));
  return el('div', { class: 'table-wrap' }, el('table', attrs, el('thead', {}, head), el('tbody', {}, body)));
}

function cards(items) {
  return el('ul', { class: 'cards' }, items.map(([label, value, id]) =>
    el('li', { 'data-card': id }, el('span', { class: 'label' }, label), el('span', { class: 'value' }, value))));
}

function facts(pairs) {
  return el('dl', { class: 'facts' }, pairs.flatMap(([k, v, id]) => [el('dt', {}, k), el('dd', { 'data-fact': id }, v)]));
}

// ---------------------------------------------------------------- SVG pieces

/** Fill patterns, so outcome areas differ by texture as well as colour. */
function patternDefs(prefix, styles) {
  const defs = svg('defs');
  for (const [name, style] of styles) {
    const id = `${prefix}-${name}`;
    const p = svg('pattern', { id, width: 6, height: 6, patternUnits: 'userSpaceOnUse' });
    p.append(svg('rect', { width: 6, height: 6, fill: style.color, 'fill-opacity': style.pattern === 'solid' ? 1 : 0.25 }));
    const stroke = { stroke: style.color, 'stroke-width': 1.5 };
    if (style.pattern === 'diagonal') p.append(svg('path', { d: 'M-1,7 L7,-1 M-1,1 L1,-1 M5,7 L7,5', ...stroke }));
    if (style.pattern === 'cross') p.append(svg('path', { d: 'M0,0 L6,6 M6,0 L0,6', ...stroke }));
    if (style.pattern === 'dots') p.append(svg('circle', { cx: 3, cy: 3, r: 1.6, fill: style.color }));
    if (style.pattern === 'horizontal') p.append(svg('path', { d: 'M0,3 L6,3', ...stroke }));
    if (style.pattern === 'vertical') p.append(svg('path', { d: 'M3,0 L3,6', ...stroke }));
    defs.append(p);
  }
  return defs;
}

function outcomeStyles(names) {
  let spare = 0;
  return names.map((name) => [name, OUTCOME_STYLE[name] || OUTCOME_FALLBACK[spare++ % OUTCOME_FALLBACK.length]]);
}

function swatch(fill, stroke) {
  return svg('svg', { viewBox: '0 0 12 12', 'aria-hidden': 'true' },
    svg('rect', { x: 0.5, y: 0.5, width: 11, height: 11, fill, stroke: stroke || '#333', 'stroke-width': 1 }));
}

/** A round axis maximum at or above `v`, so the four grid steps are round numbers. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const raw = v / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((m) => m >= raw);
  return step * 4;
}

function chartFigure(id, title, svgNode, legendItems) {
  const fig = el('figure', { class: 'chart', id });
  fig.append(el('figcaption', {}, title));
  fig.append(svgNode);
  if (legendItems && legendItems.length) fig.append(el('ul', { class: 'legend' }, legendItems));
  return fig;
}

/**
 * A stacked bar chart of 24 hourly buckets. `series` lists [name, style]; `value(hour,
 * name)` gives each stack's height.
 */
function stackedBars({ id, title, desc, hours, series, value, total }) {
  const W = 720, H = 220, L = 44, R = 10, T = 12, B = 34;
  const stacked = (h) => Math.max(total(h), series.reduce((n, [name]) => n + (value(h, name) || 0), 0));
  const max = Math.max(4, niceMax(Math.max(...hours.map(stacked))));
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `${id}-t ${id}-d`, 'data-chart': id });
  root.append(svg('title', { id: `${id}-t`, text: title }), svg('desc', { id: `${id}-d`, text: desc }));
  root.append(patternDefs(id, series));
  const plotW = W - L - R, plotH = H - T - B;
  const bw = plotW / hours.length;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4, y = T + plotH - (plotH * i) / 4;
    root.append(svg('line', { x1: L, x2: W - R, y1: y, y2: y, stroke: '#d5dae0' }));
    root.append(svg('text', { x: L - 4, y: y + 4, 'text-anchor': 'end', 'font-size': 11, fill: '#4a5562', text: Number.isInteger(v) ? v : v.toFixed(1) }));
  }
  hours.forEach((hour, i) => {
    const x = L + i * bw;
    let y = T + plotH;
    const g = svg('g', { 'data-hour': hour.hour, 'data-total': total(hour), class: 'bar' });
    const parts = [];
    for (const [name] of series) {
      const n = value(hour, name);
      if (!n) continue;
      const h = (plotH * n) / max;
      y -= h;
      g.append(svg('rect', { x: x + 1.5, y, width: Math.max(1, bw - 3), height: h, fill: `url(#${id}-${name})`, stroke: '#222', 'stroke-width': 0.6, 'data-series': name, 'data-value': n }));
      parts.push(`${name} ${n}`);
    }
    g.append(svg('title', { text: `${fmtTime(Date.parse(hour.hour))}: ${total(hour)}${parts.length ? ' (' + parts.join(', ') + ')' : ''}` }));
    root.append(g);
    if (i % 3 === 0) root.append(svg('text', { x: x + bw / 2, y: H - B + 16, 'text-anchor': 'middle', 'font-size': 11, fill: '#4a5562', text: hhmm(Date.parse(hour.hour)) }));
  });
  root.append(svg('text', { x: L, y: H - 4, 'font-size': 11, fill: '#4a5562', text: 'hour (UTC)' }));
  const legend = series.map(([name, style]) => el('li', {}, swatchPattern(id, name, style), name));
  return chartFigure(id, title, root, legend);
}

function swatchPattern(prefix, name, style) {
  const s = svg('svg', { viewBox: '0 0 12 12', 'aria-hidden': 'true' });
  s.append(patternDefs(`${prefix}-lg`, [[name, style]]));
  s.append(svg('rect', { x: 0.5, y: 0.5, width: 11, height: 11, fill: `url(#${prefix}-lg-${name})`, stroke: '#222' }));
  return s;
}

/** Lines over 24 hourly buckets; a null value breaks the line. Dashes tell lines apart. */
function lineChart({ id, title, desc, hours, lines, maxValue, format }) {
  const W = 720, H = 200, L = 54, R = 10, T = 12, B = 34;
  const values = hours.flatMap((h) => lines.map((l) => l.value(h))).filter((v) => v !== null && v !== undefined);
  const max = maxValue ?? niceMax(Math.max(0, ...values));
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `${id}-t ${id}-d`, 'data-chart': id });
  root.append(svg('title', { id: `${id}-t`, text: title }), svg('desc', { id: `${id}-d`, text: desc }));
  const plotW = W - L - R, plotH = H - T - B;
  const step = plotW / hours.length;
  const xAt = (i) => L + step * i + step / 2;
  const yAt = (v) => T + plotH - (plotH * v) / max;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    root.append(svg('line', { x1: L, x2: W - R, y1: yAt(v), y2: yAt(v), stroke: '#d5dae0' }));
    root.append(svg('text', { x: L - 4, y: yAt(v) + 4, 'text-anchor': 'end', 'font-size': 11, fill: '#4a5562', text: format(v) }));
  }
  hours.forEach((hour, i) => {
    if (i % 3 === 0) root.append(svg('text', { x: xAt(i), y: H - B + 16, 'text-anchor': 'middle', 'font-size': 11, fill: '#4a5562', text: hhmm(Date.parse(hour.hour)) }));
  });
  let points = 0;
  for (const line of lines) {
    let d = '';
    let pen = false;
    hours.forEach((hour, i) => {
      const v = line.value(hour);
      if (v === null || v === undefined) { pen = false; return; }
      d += `${pen ? 'L' : 'M'}${xAt(i).toFixed(1)},${yAt(v).toFixed(1)} `;
      pen = true;
    });
    const g = svg('g', { 'data-line': line.name });
    if (d) g.append(svg('path', { d, fill: 'none', stroke: line.color, 'stroke-width': 2, 'stroke-dasharray': line.dash || null }));
    hours.forEach((hour, i) => {
      const v = line.value(hour);
      if (v === null || v === undefined) return;
      points += 1;
      const marker = line.marker === 'square'
        ? svg('rect', { x: xAt(i) - 3.5, y: yAt(v) - 3.5, width: 7, height: 7, fill: line.color, 'data-value': v })
        : svg('circle', { cx: xAt(i), cy: yAt(v), r: 3.5, fill: line.color, 'data-value': v });
      marker.append(svg('title', { text: `${fmtTime(Date.parse(hour.hour))}: ${line.name} ${format(v)}` }));
      g.append(marker);
    });
    root.append(g);
  }
  if (points === 0) root.append(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', 'font-size': 14, fill: '#4a5562', text: 'no values in these 24 hours' }));
  const legend = lines.map((line) => el('li', {},
    svg('svg', { viewBox: '0 0 24 12', 'aria-hidden': 'true' },
      svg('line', { x1: 0, x2: 24, y1: 6, y2: 6, stroke: line.color, 'stroke-width': 2, 'stroke-dasharray': line.dash || null }),
      line.marker === 'square' ? svg('rect', { x: 8.5, y: 2.5, width: 7, height: 7, fill: line.color }) : svg('circle', { cx: 12, cy: 6, r: 3.5, fill: line.color })),
    line.name));
  return chartFigure(id, title, root, legend);
}

/** Horizontal bars of named totals (triggers, placed counts). */
function namedBars({ id, title, desc, entries, colorOf }) {
  const W = 600, rowH = 30, L = 160, R = 60;
  const H = Math.max(1, entries.length) * rowH + 10;
  const max = Math.max(1, ...entries.map(([, n]) => n));
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `${id}-t ${id}-d`, 'data-chart': id });
  root.append(svg('title', { id: `${id}-t`, text: title }), svg('desc', { id: `${id}-d`, text: desc }));
  entries.forEach(([name, n], i) => {
    const y = 5 + i * rowH;
    const w = ((W - L - R) * n) / max;
    const g = svg('g', { 'data-name': name, 'data-value': n });
    g.append(svg('text', { x: L - 8, y: y + 19, 'text-anchor': 'end', 'font-size': 15, fill: '#1b1f24', text: name }));
    g.append(svg('rect', { x: L, y: y + 3, width: Math.max(n ? 2 : 0, w), height: rowH - 8, fill: colorOf(name), stroke: '#222', 'stroke-width': 0.6 }));
    g.append(svg('text', { x: L + w + 6, y: y + 19, 'font-size': 15, fill: '#1b1f24', text: String(n) }));
    g.append(svg('title', { text: `${name}: ${n}` }));
    root.append(g);
  });
  if (!entries.length) root.append(svg('text', { x: 10, y: 20, 'font-size': 13, fill: '#4a5562', text: 'none' }));
  const fig = chartFigure(id, title, root, []);
  fig.classList.add('narrow');
  return fig;
}

// ---------------------------------------------------------------- the timeline

/** Reads an explain decision ("refresh interval (counted)", "deferred next while hidden",
 * "skipped interval: quota_exhausted") into its parts. */
function parseDecision(text) {
  let m = /^refresh (\S+)( \(counted\))?(?: for deferred (.+))?$/.exec(text);
  if (m) return { status: m[2] ? 'counted' : 'uncounted', trigger: m[1], deferred: m[3] || null };
  m = /^deferred (\S+) while hidden$/.exec(text);
  if (m) return { status: 'deferred', trigger: m[1] };
  m = /^skipped (\S+): (\S+)$/.exec(text);
  if (m) return { status: 'skipped', trigger: m[1], reason: m[2] };
  return { status: 'other', trigger: text.split(/\s+/)[1] || '' };
}

const STATUS_LABEL = {
  counted: 'refresh, counted against the daily quota',
  uncounted: 'refresh, not counted',
  deferred: 'deferred while hidden',
  skipped: 'skipped',
  other: 'other decision',
  planned: 'planned refresh',
  fetch: 'periodic fetch',
};

/** The mark's shape tells its status; its colour and letter tell its trigger. */
function markShape(status, x, y, color, planned) {
  const r = 6;
  const common = { stroke: color, 'stroke-width': 2 };
  if (planned) {
    return svg('path', { d: `M${x},${y - r - 1} L${x + r + 1},${y} L${x},${y + r + 1} L${x - r - 1},${y} Z`, fill: '#ffffff', ...common, 'stroke-dasharray': '3 2' });
  }
  switch (status) {
    case 'counted': return svg('circle', { cx: x, cy: y, r, fill: color, stroke: '#1b1f24', 'stroke-width': 1 });
    case 'uncounted': return svg('circle', { cx: x, cy: y, r: r - 1, fill: '#ffffff', ...common });
    case 'deferred': return svg('path', { d: `M${x},${y - r} L${x + r},${y + r - 1} L${x - r},${y + r - 1} Z`, fill: '#ffffff', ...common });
    case 'skipped': return svg('path', { d: `M${x - r + 1},${y - r + 1} L${x + r - 1},${y + r - 1} M${x + r - 1},${y - r + 1} L${x - r + 1},${y + r - 1}`, fill: 'none', stroke: color, 'stroke-width': 2.5 });
    case 'fetch': return svg('rect', { x: x - r + 1, y: y - r + 1, width: 2 * r - 2, height: 2 * r - 2, fill: color, stroke: '#1b1f24', 'stroke-width': 1 });
    default: return svg('rect', { x: x - 3, y: y - 3, width: 6, height: 6, fill: '#ffffff', ...common });
  }
}

/**
 * A 24-hour timeline: `lanes` is [{id, label, marks: [{at, status, trigger, text, rule}]}];
 * marks before `now` are what happened, planned ones after it are drawn hollow and dashed.
 */
function timeline({ id, title, now, from, to, lanes }) {
  const W = 960, L = 170, R = 16, T = 30, laneH = 64;
  const H = T + lanes.length * laneH + 10;
  const xAt = (ms) => L + ((W - L - R) * (ms - from)) / (to - from);
  const root = svg('svg', {
    viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `${id}-t ${id}-d`, 'data-chart': id,
    'data-from': new Date(from).toISOString(), 'data-to': new Date(to).toISOString(), 'data-now': new Date(now).toISOString(),
  });
  const counts = lanes.map((lane) => `${lane.label}: ${lane.marks.length} marks`).join('; ');
  root.append(svg('title', { id: `${id}-t`, text: title }), svg('desc', { id: `${id}-d`, text: `From ${fmtTime(from)} to ${fmtTime(to)}, now ${fmtTime(now)}. ${counts}.` }));
  // Hour grid, labelled every 3 hours.
  const firstHour = Math.ceil(from / HOUR_MS) * HOUR_MS;
  for (let t = firstHour; t <= to; t += HOUR_MS) {
    const x = xAt(t);
    const labelled = new Date(t).getUTCHours() % 3 === 0;
    root.append(svg('line', { x1: x, x2: x, y1: T - 6, y2: H - 6, stroke: labelled ? '#c5ccd4' : '#e6e9ed' }));
    if (labelled && Math.abs(x - xAt(now)) > 70) root.append(svg('text', { x, y: T - 10, 'text-anchor': 'middle', 'font-size': 11, fill: '#4a5562', text: hhmm(t) }));
  }
  // Ahead of now: shaded and hatched.
  root.append(svg('defs', {}, svg('pattern', { id: `${id}-ahead`, width: 8, height: 8, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
    svg('rect', { width: 8, height: 8, fill: '#f4f6f8' }), svg('line', { x1: 0, x2: 0, y1: 0, y2: 8, stroke: '#e1e5ea', 'stroke-width': 3 }))));
  root.append(svg('rect', { x: xAt(now), y: T - 6, width: Math.max(0, W - R - xAt(now)), height: H - T, fill: `url(#${id}-ahead)`, class: 'ahead' }));
  root.append(svg('line', { x1: xAt(now), x2: xAt(now), y1: T - 18, y2: H - 4, stroke: '#1b1f24', 'stroke-width': 2 }));
  root.append(svg('text', { x: xAt(now) + 4, y: 12, 'font-size': 12, 'font-weight': 700, fill: '#1b1f24', text: `now ${hhmm(now)}`, class: 'now' }));
  lanes.forEach((lane, i) => {
    const top = T + i * laneH;
    const mid = top + laneH / 2;
    const g = svg('g', { class: 'lane', 'data-lane': lane.id, 'data-label': lane.label });
    g.append(svg('line', { x1: L, x2: W - R, y1: mid, y2: mid, stroke: '#9aa5b1', 'stroke-width': 1 }));
    g.append(svg('text', { x: L - 8, y: mid + 4, 'text-anchor': 'end', 'font-size': 13, 'font-weight': 600, fill: '#1b1f24', text: lane.label }));
    if (lane.sublabel) g.append(svg('text', { x: L - 8, y: mid + 18, 'text-anchor': 'end', 'font-size': 10, fill: '#4a5562', text: lane.sublabel }));
    let skips = 0;
    for (const mark of lane.marks) {
      const x = xAt(mark.at);
      const planned = mark.status === 'planned';
      const trig = TRIGGERS[mark.trigger] || OTHER_TRIGGER;
      const color = mark.status === 'fetch' ? (OUTCOME_STYLE[mark.trigger] || OUTCOME_FALLBACK[0]).color : trig.color;
      const m = svg('g', {
        class: 'mark', 'data-status': mark.status, 'data-trigger': mark.trigger || '', 'data-at': new Date(mark.at).toISOString(),
        'data-rule': mark.rule || '',
      });
      m.append(markShape(planned ? 'planned' : mark.status, x, mid, color, planned));
      if (mark.status !== 'fetch' && mark.trigger) {
        m.append(svg('text', { x, y: mid - 10, 'text-anchor': 'middle', 'font-size': 10, 'font-weight': 700, fill: color, text: trig.letter }));
      }
      if (mark.status === 'skipped' && mark.rule) {
        // Alternate heights so the ids of neighbouring skips do not run together.
        const dy = 20 + (skips++ % 2) * 11;
        m.append(svg('text', { x, y: mid + dy, 'text-anchor': 'middle', 'font-size': 10, fill: '#a4262c', text: mark.rule, class: 'rule' }));
      }
      m.append(svg('title', { text: `${fmtTime(mark.at)} ${planned ? 'planned: ' : ''}${mark.text}${mark.rule ? ` (rule ${mark.rule})` : ''}` }));
      g.append(m);
    }
    root.append(g);
  });
  const fig = el('figure', { class: 'timeline', id });
  fig.append(root);
  fig.append(timelineLegend());
  // The same marks as text, for screen readers and for reading exact instants.
  fig.append(el('details', {}, el('summary', {}, 'The same marks as a list'),
    lanes.map((lane) => el('section', { 'aria-label': lane.label },
      el('h4', {}, `${lane.label}${lane.sublabel ? ' — ' + lane.sublabel : ''}`),
      lane.marks.length
        ? el('ul', {}, [...lane.marks].sort((a, b) => a.at - b.at).map((mark) => el('li', {},
          `${fmtTime(mark.at)} ${mark.status === 'planned' ? 'planned: ' : ''}${mark.text}${mark.rule ? ` (rule ${mark.rule})` : ''} — ${STATUS_LABEL[mark.status] || mark.status}`)))
        : el('p', { class: 'empty' }, 'Nothing in this window.')))));
  return fig;
}

function timelineLegend() {
  const item = (status, label) => {
    const s = svg('svg', { viewBox: '-9 -9 18 18', 'aria-hidden': 'true' });
    s.append(markShape(status, 0, 0, '#1f5fa8', status === 'planned'));
    return el('li', {}, s, label);
  };
  const triggers = Object.entries(TRIGGERS).map(([name, t]) => el('li', {},
    svg('svg', { viewBox: '0 0 12 12', 'aria-hidden': 'true' }, svg('text', { x: 6, y: 10, 'text-anchor': 'middle', 'font-size': 11, 'font-weight': 700, fill: t.color, text: t.letter })),
    name));
  return el('div', {},
    el('ul', { class: 'legend', 'aria-label': 'Mark shapes' },
      item('counted', 'refresh, counted (filled circle)'),
      item('uncounted', 'refresh, not counted (ring)'),
      item('deferred', 'deferred while hidden (triangle)'),
      item('skipped', 'skipped, with its rule id (cross)'),
      item('planned', 'planned, ahead of now (dashed diamond)'),
      item('fetch', 'periodic fetch (square)')),
    el('ul', { class: 'legend', 'aria-label': 'Trigger letters' }, triggers));
}

// ---------------------------------------------------------------- routing and views

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [pathPart, queryPart] = raw.split('?');
  const parts = pathPart.split('/').filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(queryPart || '') };
}

function link(href, text, attrs = {}) {
  return el('a', { href, ...attrs }, text);
}

function renderNav() {
  const nav = document.getElementById('nav');
  nav.replaceChildren();
  const kind = keyKind(state.key);
  const who = document.getElementById('who');
  if (!kind) {
    who.textContent = state.key ? 'This key has no known prefix (rfdo_, rfda_, rfdp_, rfdd_).' : 'No key yet.';
    return;
  }
  who.textContent = `Signed in as: ${kind.label} (key ${state.key.slice(0, 9)}…)`;
  const items = {
    operator: [['#/operator/apps', 'Apps'], ['#/operator/providers', 'Providers'], ['#/operator/devices', 'Devices']],
    developer: [['#/app', 'App statistics and users']],
    provider: [['#/provider', 'Delivery health']],
    device: [['#/device', 'Timeline']],
  }[kind.kind];
  const current = location.hash || '#/';
  nav.append(el('ul', {}, items.map(([href, text]) =>
    el('li', {}, link(href, text, { 'aria-current': current.startsWith(href) ? 'page' : null })))));
}

let renderToken = 0;

async function route() {
  const token = ++renderToken;
  renderNav();
  const view = document.getElementById('view');
  const kind = keyKind(state.key);
  const { parts, query } = parseHash();
  const out = el('div');
  const isCurrent = () => token === renderToken;
  view.replaceChildren(out);
  if (!kind) {
    out.append(el('h2', {}, 'Welcome'), el('p', {}, 'Type an API key above to begin. Operator keys start with rfdo_, developer keys with rfda_, provider keys with rfdp_ and device keys with rfdd_.'));
    setStatus('');
    return;
  }
  setStatus('Loading…');
  try {
    const home = { operator: 'operator', developer: 'app', provider: 'provider', device: 'device' }[kind.kind];
    // Another kind's page (a key changed in this tab) falls back to this key's own.
    const section = parts[0] && (kind.kind === 'operator' || parts[0] === home) ? parts[0] : home;
    if (section === 'operator' && kind.kind === 'operator') await operatorView(out, parts[1] || 'apps', query);
    else if (section === 'app') await developerView(out, parts[1], query, kind.kind);
    else if (section === 'provider') await providerView(out, parts[1], kind.kind);
    else if (section === 'device') await deviceView(out, parts[1], kind.kind);
    else out.append(el('p', {}, 'Nothing here for this key. '), link('#/', 'Back to the start'));
    if (isCurrent()) setStatus('');
  } catch (err) {
    if (!isCurrent()) return;
    out.append(errorBox(err));
    setStatus('Failed to load.');
  }
  if (isCurrent()) document.body.dataset.ready = String(token);
}

// Operator -------------------------------------------------------------------

const LISTS = {
  apps: {
    title: 'Apps', path: '/v1/admin/apps', idField: 'appid',
    columns: [
      { id: 'appid', label: 'App id', value: (a) => link(`#/app/${encodeURIComponent(a.appid)}`, a.appid) },
      { id: 'subject', label: 'Subject', value: (a) => a.subject },
      { id: 'periodic', label: 'Periodic fetch', value: (a) => (a.periodic_enabled ? 'enabled' : 'off') },
    ],
  },
  providers: {
    title: 'Widget providers', path: '/v1/admin/providers', idField: 'provider',
    columns: [
      { id: 'provider', label: 'Provider', value: (p) => link(`#/provider/${encodeURIComponent(p.provider)}`, p.provider) },
      { id: 'refresh_url', label: 'Refresh URL', value: (p) => p.refresh_url },
      { id: 'system_app', label: 'System app', value: (p) => (p.system_app ? 'yes' : 'no') },
      { id: 'api_version', label: 'API version', value: (p) => p.api_version, num: true },
      { id: 'market', label: 'Market interval (h)', value: (p) => p.market_update_duration ?? '—', num: true },
    ],
  },
  devices: {
    title: 'Devices', path: '/v1/admin/devices', idField: 'device_id', byUser: true,
    columns: [
      { id: 'device_id', label: 'Device', value: (d) => link(`#/device/${encodeURIComponent(d.device_id)}`, d.device_id) },
      { id: 'user_id', label: 'User', value: (d) => link(`#/operator/devices?user_id=${encodeURIComponent(d.user_id)}`, d.user_id) },
      { id: 'zone', label: 'Zone', value: (d) => d.zone },
      { id: 'forms', label: 'Forms', value: (d) => d.forms, num: true },
    ],
  },
};

async function operatorView(out, which, query) {
  const spec = LISTS[which] || LISTS.apps;
  out.append(el('h2', {}, 'Operator'));
  out.append(el('ul', { class: 'tabs' }, Object.entries(LISTS).map(([name, s]) =>
    el('li', {}, link(`#/operator/${name}`, s.title, { 'aria-current': s === spec ? 'page' : null })))));
  out.append(el('h3', {}, spec.title));
  const idFilter = query.get('q') || '';
  const userFilter = query.get('user_id') || '';
  const form = el('form', { class: 'filters', role: 'search', 'aria-label': `Filter ${spec.title.toLowerCase()}` });
  const idInput = el('input', { id: 'filter-id', name: 'q', type: 'search', value: idFilter });
  form.append(el('label', { for: 'filter-id' }, `${spec.columns[0].label} contains`, idInput));
  let userInput = null;
  if (spec.byUser) {
    userInput = el('input', { id: 'filter-user', name: 'user_id', type: 'search', value: userFilter });
    form.append(el('label', { for: 'filter-user' }, 'User id (exact)', userInput));
  }
  form.append(el('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (idInput.value.trim()) q.set('q', idInput.value.trim());
    if (userInput && userInput.value.trim()) q.set('user_id', userInput.value.trim());
    const qs = q.toString();
    location.hash = `#/operator/${which}${qs ? '?' + qs : ''}`;
  });
  out.append(form);
  const holder = el('div', { id: 'list', 'data-list': which });
  const summary = el('p', { id: 'list-summary', 'aria-live': 'polite' });
  const more = el('button', { type: 'button', id: 'load-more' }, 'Load more');
  out.append(summary, holder);
  const items = [];
  let cursor = null;
  const draw = () => {
    const shown = items.filter((item) => !idFilter || String(item[spec.idField]).toLowerCase().includes(idFilter.toLowerCase()));
    holder.replaceChildren(shown.length
      ? table(spec.columns, shown.map((data) => ({ data, attrs: { 'data-id': data[spec.idField] } })), { 'aria-label': spec.title })
      : el('p', { class: 'empty' }, 'None match.'));
    summary.textContent = `${shown.length} shown of ${items.length} loaded${cursor ? '; more pages remain' : ''}.`;
    more.hidden = !cursor;
  };
  const loadPage = async () => {
    const q = new URLSearchParams({ limit: '50' });
    if (cursor) q.set('cursor', cursor);
    if (spec.byUser && userFilter) q.set('user_id', userFilter);
    const page = await api(`${spec.path}?${q}`);
    items.push(...page.items);
    cursor = page.next_cursor || null;
    draw();
  };
  more.addEventListener('click', async () => {
    more.disabled = true;
    try { await loadPage(); } catch (err) { out.append(errorBox(err)); }
    more.disabled = false;
  });
  out.append(more);
  await loadPage();
}

// Developer ------------------------------------------------------------------

function askForId(out, what, hashPrefix, storeKey) {
  const input = el('input', { id: 'ask-id', name: 'id', value: sessionStorage.getItem(storeKey) || '', required: true });
  const form = el('form', { class: 'filters' },
    el('label', { for: 'ask-id' }, `${what}`, input), el('button', { type: 'submit' }, 'Open'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    sessionStorage.setItem(storeKey, value);
    location.hash = `${hashPrefix}/${encodeURIComponent(value)}`;
  });
  out.append(el('p', {}, `A key does not name its ${what.toLowerCase()}; type it once.`), form);
}

async function developerView(out, appid, query, kind) {
  if (!appid) {
    const remembered = sessionStorage.getItem('refreshd.console.appid');
    if (remembered) { location.replace(`#/app/${encodeURIComponent(remembered)}`); return; }
    out.append(el('h2', {}, 'App developer'));
    askForId(out, 'App id', '#/app', 'refreshd.console.appid');
    return;
  }
  if (kind === 'developer') sessionStorage.setItem('refreshd.console.appid', appid);
  out.append(el('h2', {}, `App ${appid}`));
  if (kind === 'operator') out.append(el('p', {}, link('#/operator/apps', '← all apps')));
  const statsBox = el('section', { id: 'app-stats', 'aria-labelledby': 'app-stats-h' }, el('h3', { id: 'app-stats-h' }, 'Statistics, last 24 hours'));
  out.append(statsBox);
  await appStats(statsBox, appid);
  const usersBox = el('section', { id: 'app-user', 'aria-labelledby': 'app-user-h' }, el('h3', { id: 'app-user-h' }, "A user's fetch history"));
  out.append(usersBox);
  if (kind !== 'developer') {
    usersBox.append(el('p', { class: 'note' }, "A user's fetch log and explanation need this app's developer key."));
    return;
  }
  const userId = query.get('user_id') || '';
  const input = el('input', { id: 'user-id', name: 'user_id', value: userId, required: true });
  const form = el('form', { class: 'filters', role: 'search', 'aria-label': 'Find a user' },
    el('label', { for: 'user-id' }, 'User id', input), el('button', { type: 'submit' }, 'Show'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (input.value.trim()) location.hash = `#/app/${encodeURIComponent(appid)}?user_id=${encodeURIComponent(input.value.trim())}`;
  });
  usersBox.append(form);
  if (userId) await userHistory(usersBox, appid, userId);
}

async function appStats(box, appid) {
  const path = '/v1/apps/{appid}/stats';
  if (!(await hasRoute('get', path))) {
    box.append(el('p', { class: 'note', id: 'no-stats' }, 'No statistics: this server does not offer them yet.'));
    return;
  }
  let stats;
  try {
    stats = await api(`/v1/apps/${encodeURIComponent(appid)}/stats`);
  } catch (err) {
    box.append(el('p', { class: 'note', id: 'no-stats' }, 'No statistics: '), errorBox(err));
    return;
  }
  const hours = stats.hours || [];
  const totals = stats.totals || {};
  const users = stats.users || {};
  box.append(el('p', {}, `From ${fmtTime(Date.parse(stats.from))} to ${fmtTime(Date.parse(stats.to))}.`));
  box.append(cards([
    ['Fetches', fmtNum(totals.fetches), 'fetches'],
    ['Success rate', fmtPct(totals.success_rate), 'success_rate'],
    ['Latency p50', totals.latency_ms && totals.latency_ms.p50 !== null && totals.latency_ms.p50 !== undefined ? `${fmtNum(totals.latency_ms.p50)} ms` : '—', 'p50'],
    ['Latency p99', totals.latency_ms && totals.latency_ms.p99 !== null && totals.latency_ms.p99 !== undefined ? `${fmtNum(totals.latency_ms.p99)} ms` : '—', 'p99'],
    ['Users eligible', fmtNum(users.eligible), 'eligible'],
    ['Users due', fmtNum(users.due), 'due'],
  ]));
  const outcomeNames = [...new Set([...Object.keys(totals.outcomes || {}), ...hours.flatMap((h) => Object.keys(h.outcomes || {}))])].sort(outcomeSort);
  if (!hours.length) {
    box.append(el('p', { class: 'empty' }, 'No hourly statistics.'));
    return;
  }
  box.append(stackedBars({
    id: 'chart-fetches', title: 'Fetches per hour by outcome', desc: `${totals.fetches ?? 0} fetches in 24 hours, stacked by outcome.`,
    hours, series: outcomeStyles(outcomeNames), value: (h, name) => (h.outcomes || {})[name] || 0, total: (h) => h.fetches || 0,
  }));
  box.append(lineChart({
    id: 'chart-success', title: 'Success rate per hour', desc: 'Share of fetches that succeeded, per hour; gaps are hours without fetches.',
    hours, maxValue: 1, format: (v) => `${Math.round(v * 100)} %`,
    lines: [{ name: 'success rate', color: '#1f7a3a', value: (h) => h.success_rate }],
  }));
  box.append(latencyChart('chart-app-latency', hours));
  box.append(hourTable(hours, outcomeNames, 'fetches', (h) => [h.success_rate === null || h.success_rate === undefined ? '—' : fmtPct(h.success_rate)], ['Success']));
}

function latencyChart(id, hours) {
  return lineChart({
    id, title: 'Latency per hour (p50 and p99)', desc: 'Median and 99th percentile latency in milliseconds, per hour.',
    hours, format: (v) => `${Math.round(v)} ms`,
    lines: [
      { name: 'p50', color: '#1f5fa8', value: (h) => (h.latency_ms ? h.latency_ms.p50 : null) },
      { name: 'p99', color: '#b35c00', dash: '6 3', marker: 'square', value: (h) => (h.latency_ms ? h.latency_ms.p99 : null) },
    ],
  });
}

function hourTable(hours, outcomeNames, countField, extra, extraLabels) {
  const columns = [
    { id: 'hour', label: 'Hour (UTC)', value: (h) => fmtTime(Date.parse(h.hour)) },
    { id: countField, label: countField, value: (h) => h[countField] ?? 0, num: true },
    ...outcomeNames.map((name) => ({ id: `o-${name}`, label: name, value: (h) => (h.outcomes || {})[name] || 0, num: true })),
    ...extraLabels.map((label, i) => ({ id: `x-${i}`, label, value: (h) => extra(h)[i], num: true })),
    { id: 'p50', label: 'p50 ms', value: (h) => fmtNum(h.latency_ms && h.latency_ms.p50), num: true },
    { id: 'p99', label: 'p99 ms', value: (h) => fmtNum(h.latency_ms && h.latency_ms.p99), num: true },
  ];
  return el('details', {}, el('summary', {}, 'The same numbers as a table'),
    table(columns, hours.map((data) => ({ data })), { 'aria-label': 'Hourly numbers', 'data-table': 'hours' }));
}

async function userHistory(box, appid, userId) {
  const base = `/v1/apps/${encodeURIComponent(appid)}/periodic-fetch`;
  const q = `user_id=${encodeURIComponent(userId)}`;
  const [log, why, now] = await Promise.all([api(`${base}/log?${q}`), api(`${base}/explain?${q}`), serverNow()]);
  box.append(el('h4', {}, `Why ${userId} was or was not fetched`));
  box.append(facts([
    ['Eligible', why.eligible ? 'yes' : `no (${why.ineligible_reason || 'unknown'})`, 'eligible'],
    ['Periodic fetch enabled', why.enabled ? 'yes' : 'no', 'enabled'],
    ['Token set', why.token_set ? 'yes' : 'no', 'token_set'],
    ['Last launch', fmtTime(why.activity && why.activity.last_launch ? Date.parse(why.activity.last_launch) : null), 'last_launch'],
    ['Active until', fmtTime(why.activity && why.activity.active_until ? Date.parse(why.activity.active_until) : null), 'active_until'],
    ['Last outcome', why.last_outcome ? `${why.last_outcome.outcome} (HTTP ${why.last_outcome.http_status ?? '—'}) at ${fmtTime(Date.parse(why.last_outcome.at))}${why.last_outcome.hint ? ' — ' + why.last_outcome.hint : ''}` : '—', 'last_outcome'],
    ['Consecutive failures', fmtNum(why.consecutive_failures), 'consecutive_failures'],
    ['Next due', fmtTime(why.next_due ? Date.parse(why.next_due) : null), 'next_due'],
    ['Why', why.why || '—', 'why'],
    ['Gray rollout', why.gray ? `${why.gray.percent} %${why.gray.tester ? ', tester' : ''}, bucket ${why.gray.bucket}` : '—', 'gray'],
  ]));
  const attempts = log.attempts || [];
  const from = now - 20 * HOUR_MS, to = now + 4 * HOUR_MS;
  const marks = attempts.map((a) => ({ at: Date.parse(a.at), status: 'fetch', trigger: a.outcome, text: `fetch ${a.outcome}, HTTP ${a.http_status ?? '—'}, ${a.bytes ?? 0} bytes, ${a.duration_ms ?? '—'} ms` }))
    .filter((m) => m.at >= from && m.at <= to);
  if (why.next_due) {
    const due = Date.parse(why.next_due);
    if (due >= from && due <= to) marks.push({ at: due, status: 'planned', trigger: 'interval', text: 'next fetch due' });
  }
  box.append(timeline({ id: 'user-timeline', title: `Fetches of ${userId} in the last 20 hours and the next due`, now, from, to, lanes: [{ id: 'fetches', label: userId, sublabel: 'periodic fetches', marks }] }));
  box.append(el('h4', {}, `Last ${attempts.length} attempts, newest first`));
  box.append(attempts.length ? table([
    { id: 'at', label: 'At', value: (a) => fmtTime(Date.parse(a.at)) },
    { id: 'outcome', label: 'Outcome', value: (a) => a.outcome },
    { id: 'http_status', label: 'HTTP', value: (a) => a.http_status ?? '—', num: true },
    { id: 'bytes', label: 'Bytes', value: (a) => a.bytes ?? '—', num: true },
    { id: 'duration_ms', label: 'Duration ms', value: (a) => a.duration_ms ?? '—', num: true },
    { id: 'gray', label: 'Gray', value: (a) => (a.gray ? 'yes' : 'no') },
  ], attempts.map((data) => ({ data })), { 'aria-label': 'Fetch attempts', 'data-table': 'attempts' }) : el('p', { class: 'empty' }, 'No attempts yet.'));
}

// Provider -------------------------------------------------------------------

async function providerView(out, provider, kind) {
  if (!provider) {
    const remembered = sessionStorage.getItem('refreshd.console.provider');
    if (remembered) { location.replace(`#/provider/${encodeURIComponent(remembered)}`); return; }
    out.append(el('h2', {}, 'Widget provider'));
    askForId(out, 'Provider name', '#/provider', 'refreshd.console.provider');
    return;
  }
  if (kind === 'provider') sessionStorage.setItem('refreshd.console.provider', provider);
  out.append(el('h2', {}, `Provider ${provider}`));
  if (kind === 'operator') out.append(el('p', {}, link('#/operator/providers', '← all providers')));
  const health = el('section', { id: 'provider-stats', 'aria-labelledby': 'provider-stats-h' }, el('h3', { id: 'provider-stats-h' }, 'Delivery health, last 24 hours'));
  const defs = el('section', { id: 'provider-defs', 'aria-labelledby': 'provider-defs-h' }, el('h3', { id: 'provider-defs-h' }, 'Form definitions and placed forms'));
  out.append(health, defs);
  await Promise.all([providerStats(health, provider), providerDefinitions(defs, provider)]);
}

async function providerStats(box, provider) {
  if (!(await hasRoute('get', '/v1/providers/{provider}/stats'))) {
    box.append(el('p', { class: 'note', id: 'no-stats' }, 'No statistics: this server does not offer them yet.'));
    return;
  }
  let stats;
  try {
    stats = await api(`/v1/providers/${encodeURIComponent(provider)}/stats`);
  } catch (err) {
    box.append(el('p', { class: 'note', id: 'no-stats' }, 'No statistics: '), errorBox(err));
    return;
  }
  const hours = stats.hours || [];
  const totals = stats.totals || {};
  const outcomes = totals.outcomes || {};
  const done = outcomes.done || 0;
  const delivered = totals.deliveries || 0;
  box.append(el('p', {}, `From ${fmtTime(Date.parse(stats.from))} to ${fmtTime(Date.parse(stats.to))}.`));
  box.append(cards([
    ['Deliveries', fmtNum(delivered), 'deliveries'],
    ['Done', fmtNum(done), 'done'],
    ['Retried', fmtNum(outcomes.retry || 0), 'retry'],
    ['Failed', fmtNum(outcomes.failed || 0), 'failed'],
    ...(totals.success_rate !== undefined ? [['Success rate', fmtPct(totals.success_rate), 'success_rate']] : []),
    ['Latency p50', totals.latency_ms && totals.latency_ms.p50 !== null && totals.latency_ms.p50 !== undefined ? `${fmtNum(totals.latency_ms.p50)} ms` : '—', 'p50'],
    ['Latency p99', totals.latency_ms && totals.latency_ms.p99 !== null && totals.latency_ms.p99 !== undefined ? `${fmtNum(totals.latency_ms.p99)} ms` : '—', 'p99'],
  ]));
  if (!hours.length) {
    box.append(el('p', { class: 'empty' }, 'No hourly statistics.'));
    return;
  }
  const names = ['done', 'retry', 'failed', ...new Set(hours.flatMap((h) => Object.keys(h.outcomes || {})))].filter((v, i, a) => a.indexOf(v) === i);
  box.append(stackedBars({
    id: 'chart-deliveries', title: 'Deliveries per hour by outcome', desc: `${delivered} deliveries in 24 hours: done, retried and failed.`,
    hours, series: outcomeStyles(names), value: (h, name) => (h.outcomes || {})[name] || 0, total: (h) => h.deliveries || 0,
  }));
  box.append(latencyChart('chart-provider-latency', hours));
  const triggers = Object.entries(totals.triggers || {}).sort((a, b) => b[1] - a[1]);
  box.append(namedBars({
    id: 'chart-triggers', title: 'Deliveries by trigger, 24 hours', desc: triggers.map(([k, v]) => `${k} ${v}`).join(', ') || 'none',
    entries: triggers, colorOf: (name) => (TRIGGERS[name] || OTHER_TRIGGER).color,
  }));
  box.append(hourTable(hours, names, 'deliveries', () => [], []));
}

async function providerDefinitions(box, provider) {
  const answer = await api(`/v1/providers/${encodeURIComponent(provider)}/form-definitions`);
  const defs = answer.definitions || [];
  box.append(defs.length ? table([
    { id: 'form_name', label: 'Form', value: (d) => d.form_name },
    { id: 'placed', label: 'Placed', value: (d) => d.placed, num: true },
  ], defs.map((data) => ({ data, attrs: { 'data-form': data.form_name } })), { 'aria-label': 'Form definitions', 'data-table': 'definitions' }) : el('p', { class: 'empty' }, 'No definitions uploaded.'));
  if (defs.length) {
    box.append(namedBars({
      id: 'chart-placed', title: 'Placed forms per definition', desc: defs.map((d) => `${d.form_name} ${d.placed}`).join(', '),
      entries: defs.map((d) => [d.form_name, d.placed]), colorOf: () => '#1f5fa8',
    }));
  }
}

// Device ---------------------------------------------------------------------

async function deviceView(out, deviceId, kind) {
  const asOperator = kind === 'operator';
  if (asOperator && !deviceId) { location.replace('#/operator/devices'); return; }
  out.append(el('h2', {}, asOperator ? `Device ${deviceId}` : 'This device'));
  if (asOperator) out.append(el('p', {}, link('#/operator/devices', '← all devices')));
  const [formsAnswer, now] = await Promise.all([
    api(asOperator ? `/v1/admin/devices/${encodeURIComponent(deviceId)}/forms` : '/v1/device/forms'),
    serverNow(),
  ]);
  const forms = formsAnswer.forms || [];
  const from = now - 16 * HOUR_MS, to = now + 8 * HOUR_MS;
  const canExplain = !asOperator || (await routeAllows('get', '/v1/forms/{form_id}/explain', 'operator'));
  const explained = await Promise.all(forms.map(async (form) => {
    if (!canExplain) return { form, why: null };
    try { return { form, why: await api(`/v1/forms/${encodeURIComponent(form.form_id)}/explain`) }; } catch (err) { return { form, why: null, err }; }
  }));
  const lanes = explained.map(({ form, why }) => {
    const marks = [];
    if (why) {
      for (const d of why.recent_decisions || []) {
        const at = Date.parse(d.at);
        if (at < from || at > to) continue;
        const p = parseDecision(d.decision);
        marks.push({ at, status: p.status, trigger: p.trigger, text: d.decision, rule: d.rule });
      }
      for (const d of why.next_planned || []) {
        const at = Date.parse(d.at);
        if (at < from || at > to) continue;
        const p = parseDecision(d.decision);
        marks.push({ at, status: 'planned', trigger: p.trigger, text: d.decision, rule: d.rule });
      }
    }
    return {
      id: form.form_id, label: form.form_name,
      sublabel: `${form.provider}${form.visible ? '' : ' (hidden)'}`, marks, why, form,
    };
  });
  // The user's periodic fetches: the device sees the latest one of each app it has data for.
  let fetchLane = null;
  if (!asOperator) {
    try {
      const sync = await api('/v1/device/sync');
      const apps = periodicFromSync(sync);
      fetchLane = {
        id: 'periodic', label: 'periodic fetches', sublabel: 'latest per app',
        marks: apps.filter((a) => a.at >= from && a.at <= to).map((a) => ({ at: a.at, status: 'fetch', trigger: 'ok', text: `data fetched for ${a.appid}` })),
      };
    } catch { fetchLane = null; }
  }
  const allLanes = fetchLane ? [...lanes, fetchLane] : lanes;
  out.append(el('h3', {}, 'The last 16 hours and the next 8'));
  if (!canExplain) {
    out.append(el('p', { class: 'note', id: 'needs-device-key' }, 'The decisions of these forms (explain) answer only to the device or the form\'s provider, so the lanes stay empty here: type the device\'s key above to see its timeline. The forms are listed below.'));
  }
  if (allLanes.length) {
    out.append(timeline({ id: 'device-timeline', title: `Refresh timeline of ${asOperator ? deviceId : 'this device'}, one lane per form`, now, from, to, lanes: allLanes }));
  } else {
    out.append(el('p', { class: 'empty' }, 'No forms on this device.'));
  }
  out.append(el('h3', {}, 'Forms'));
  out.append(forms.length ? table([
    { id: 'form_name', label: 'Form', value: (l) => l.form.form_name },
    { id: 'form_id', label: 'Form id', value: (l) => l.form.form_id },
    { id: 'provider', label: 'Provider', value: (l) => (asOperator ? link(`#/provider/${encodeURIComponent(l.form.provider)}`, l.form.provider) : l.form.provider) },
    { id: 'visible', label: 'Visible', value: (l) => (l.form.visible ? 'yes' : 'no') },
    { id: 'counted', label: 'Counted today', value: (l) => (l.why ? `${l.why.counted_today}${l.why.daily_quota !== null && l.why.daily_quota !== undefined ? ' of ' + l.why.daily_quota : ''}` : '—'), num: true },
    { id: 'deferred', label: 'Deferred', value: (l) => (l.why && l.why.deferred && l.why.deferred.length ? l.why.deferred.join(', ') : '—') },
    { id: 'next', label: 'Next planned', value: (l) => (l.why && l.why.next_planned && l.why.next_planned[0] ? `${fmtTime(Date.parse(l.why.next_planned[0].at))} ${l.why.next_planned[0].decision}` : '—') },
  ], lanes.map((l) => ({ data: l, attrs: { 'data-form-id': l.form.form_id } })), { 'aria-label': 'Forms on this device', 'data-table': 'forms' }) : el('p', { class: 'empty' }, 'None.'));
  const skipped = lanes.flatMap((l) => l.marks.filter((m) => m.status === 'skipped').map((m) => ({ ...m, form: l.label })));
  if (skipped.length) {
    out.append(el('h3', {}, 'Skipped decisions'));
    out.append(el('ul', { class: 'skips', id: 'skipped' }, skipped.map((m) =>
      el('li', { 'data-rule': m.rule }, `${fmtTime(m.at)} ${m.form}: ${m.text} — rule ${m.rule}`))));
  }
}

/** The latest periodic fetch per app, from a sync answer's cached data. */
function periodicFromSync(sync) {
  const found = [];
  const visit = (value) => {
    if (!value || typeof value !== 'object') return;
    if (Array.isArray(value)) { value.forEach(visit); return; }
    if (typeof value.appid === 'string' && typeof value.time_stamp === 'number') {
      found.push({ appid: value.appid, at: value.time_stamp });
      return;
    }
    Object.values(value).forEach(visit);
  };
  visit(sync);
  return found;
}

// ---------------------------------------------------------------- start

function start() {
  const form = document.getElementById('key-form');
  const input = document.getElementById('key-input');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    state.key = key;
    sessionStorage.setItem(KEY_STORE, key);
    input.value = '';
    route();
    document.getElementById('main').focus();
  });
  document.getElementById('key-forget').addEventListener('click', () => {
    state.key = '';
    for (const k of [KEY_STORE, 'refreshd.console.appid', 'refreshd.console.provider']) sessionStorage.removeItem(k);
    location.hash = '#/';
    route();
  });
  window.addEventListener('hashchange', route);
  route();
}

start();
