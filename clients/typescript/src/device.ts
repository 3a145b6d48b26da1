// Host side: a device's view of refreshd, kept in a local cache that answers without
// any network, and a sync loop (SSE with reconnects, plus /v1/device/sync) filling it.
import { ApiClient, errorFromResponse, RefreshdError, seg, type ClientOptions } from './http.js';
import { EventStreamParser, type ServerSentEvent } from './sse.js';
import type { CacheStorage } from './storage.js';

/** Prefetched data of one app, as `wx.getBackgroundFetchData` gives it. */
export interface BackgroundFetchData {
  fetchedData: string;
  /** Epoch milliseconds of the fetch. */
  timeStamp: number;
}

/** What the device holds of one placed form. */
export interface FormRecord {
  formId: string;
  provider: string | null;
  formName: string | null;
  /** The provider's data (any JSON), or null when there is none yet. */
  data: unknown;
  updatedAt: string | null;
  trigger: string | null;
}

/** Where a change came from: a pushed SSE event, a /v1/device/sync answer, or a call of this device. */
export type ChangeSource = 'push' | 'sync' | 'local';

export type DeviceChange =
  | { kind: 'fetched_data'; appid: string; data: BackgroundFetchData; source: ChangeSource }
  | { kind: 'form_data'; formId: string; record: FormRecord; source: ChangeSource }
  | { kind: 'form_removed'; formId: string; source: ChangeSource };

export interface DeviceOptions extends ClientOptions {
  /** Where the cache lives (MemoryStorage, FileStorage from "@refreshd/client/node", LocalStorageStorage). */
  storage: CacheStorage;
  /** Reconnect backoff: the first delay and the cap, in milliseconds (defaults 500 and 30,000). */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Errors of the background loop (failed connects, rejected requests); the loop goes on. */
  onError?: (error: unknown) => void;
  /** Source of randomness for the backoff jitter, in [0, 1). */
  random?: () => number;
}

export interface SyncAnswer {
  cursor: string;
  reset: boolean;
  apps: { appid: string; fetched_data: string; time_stamp: number }[];
  forms: { form_id: string; provider?: string; form_name?: string; data: unknown; updated_at: string | null; trigger: string | null }[];
  removed_forms: string[];
}

const K_APP = 'app/';
const K_FORM = 'form/';
const K_CURSOR = 'sync/cursor';
const K_LAST_EVENT = 'sync/last_event_id';

interface StoredApp {
  fetched_data: string;
  time_stamp: number;
}

interface StoredForm {
  form_id: string;
  provider: string | null;
  form_name: string | null;
  data: unknown;
  updated_at: string | null;
  trigger: string | null;
}

function toRecord(f: StoredForm): FormRecord {
  return { formId: f.form_id, provider: f.provider, formName: f.form_name, data: f.data, updatedAt: f.updated_at, trigger: f.trigger };
}

function parseJson<T>(text: string | null): T | null {
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

function instant(value: string | null | undefined): number | null {
  if (!value) return null;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
}

export class RefreshdDevice {
  private readonly api: ApiClient;
  private readonly storage: CacheStorage;
  private readonly options: DeviceOptions;
  private readonly key: string;
  private readonly formListeners = new Map<string, Set<(record: FormRecord | null) => void>>();
  private readonly changeListeners = new Set<(change: DeviceChange) => void>();
  private readonly connectionListeners = new Set<(connected: boolean) => void>();
  /** Every change of the cache runs through this chain, one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  private running = false;
  private abort: AbortController | null = null;
  private loopDone: Promise<void> = Promise.resolve();
  private wake: (() => void) | null = null;
  private syncMissing = false;
  private connectedNow = false;

  constructor(options: DeviceOptions) {
    if (!options.storage) throw new TypeError('storage is required');
    this.options = options;
    this.storage = options.storage;
    this.key = options.key;
    this.api = new ApiClient(options);
  }

  // ---- the local cache (never touches the network) ----

  /** The app's prefetched data from the local cache, or null. No network. */
  async getBackgroundFetchData(appid: string): Promise<BackgroundFetchData | null> {
    const stored = parseJson<StoredApp>(await this.storage.get(K_APP + appid));
    if (!stored || typeof stored.fetched_data !== 'string') return null;
    return { fetchedData: stored.fetched_data, timeStamp: stored.time_stamp };
  }

  /** The form's record from the local cache, or null when the device does not hold it. No network. */
  async getFormData(formId: string): Promise<FormRecord | null> {
    const stored = parseJson<StoredForm>(await this.storage.get(K_FORM + formId));
    return stored ? toRecord(stored) : null;
  }

  /** Every form the local cache holds. No network. */
  async listForms(): Promise<FormRecord[]> {
    const out: FormRecord[] = [];
    for (const key of await this.storage.keys()) {
      if (!key.startsWith(K_FORM)) continue;
      const stored = parseJson<StoredForm>(await this.storage.get(key));
      if (stored) out.push(toRecord(stored));
    }
    return out;
  }

  /** The appids the local cache holds data for. No network. */
  async listApps(): Promise<string[]> {
    return (await this.storage.keys()).filter((k) => k.startsWith(K_APP)).map((k) => k.slice(K_APP.length));
  }

  // ---- subscriptions ----

  /** Calls `listener` with the form's new record on each change, and null when it is removed. Returns an unsubscribe. */
  onFormData(formId: string, listener: (record: FormRecord | null) => void): () => void {
    let set = this.formListeners.get(formId);
    if (!set) this.formListeners.set(formId, (set = new Set()));
    set.add(listener);
    return () => {
      const s = this.formListeners.get(formId);
      if (!s) return;
      s.delete(listener);
      if (s.size === 0) this.formListeners.delete(formId);
    };
  }

  /** Calls `listener` for every change of the cache. Returns an unsubscribe. */
  onChange(listener: (change: DeviceChange) => void): () => void {
    this.changeListeners.add(listener);
    return () => void this.changeListeners.delete(listener);
  }

  /** Calls `listener` when the event stream opens (true) or closes (false). Returns an unsubscribe. */
  onConnectionChange(listener: (connected: boolean) => void): () => void {
    this.connectionListeners.add(listener);
    return () => void this.connectionListeners.delete(listener);
  }

  /** Whether the event stream is open right now. */
  get connected(): boolean {
    return this.connectedNow;
  }

  private emit(change: DeviceChange): void {
    for (const l of [...this.changeListeners]) this.safely(() => l(change));
    if (change.kind === 'form_data' || change.kind === 'form_removed') {
      const set = this.formListeners.get(change.formId);
      if (set) for (const l of [...set]) this.safely(() => l(change.kind === 'form_data' ? change.record : null));
    }
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.options.onError?.(error);
    }
  }

  private setConnected(value: boolean): void {
    if (this.connectedNow === value) return;
    this.connectedNow = value;
    for (const l of [...this.connectionListeners]) this.safely(() => l(value));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  // ---- applying changes ----

  private async putApp(appid: string, data: StoredApp, source: ChangeSource): Promise<void> {
    const current = parseJson<StoredApp>(await this.storage.get(K_APP + appid));
    if (current) {
      if (current.time_stamp > data.time_stamp) return; // an older fetch arriving late
      if (current.time_stamp === data.time_stamp && current.fetched_data === data.fetched_data) return;
    }
    await this.storage.set(K_APP + appid, JSON.stringify({ fetched_data: data.fetched_data, time_stamp: data.time_stamp }));
    this.emit({ kind: 'fetched_data', appid, data: { fetchedData: data.fetched_data, timeStamp: data.time_stamp }, source });
  }

  private async putForm(incoming: Partial<StoredForm> & { form_id: string }, source: ChangeSource): Promise<void> {
    const current = parseJson<StoredForm>(await this.storage.get(K_FORM + incoming.form_id));
    const updatedAt = incoming.updated_at ?? null;
    if (current) {
      const a = instant(current.updated_at);
      const b = instant(updatedAt);
      if (a !== null && b !== null && a > b) return;
    }
    const next: StoredForm = {
      form_id: incoming.form_id,
      provider: incoming.provider ?? current?.provider ?? null,
      form_name: incoming.form_name ?? current?.form_name ?? null,
      data: incoming.data === undefined ? (current?.data ?? null) : incoming.data,
      updated_at: incoming.data === undefined ? (current?.updated_at ?? null) : updatedAt,
      trigger: incoming.data === undefined ? (current?.trigger ?? null) : (incoming.trigger ?? null),
    };
    const text = JSON.stringify(next);
    if (current && JSON.stringify(current) === text) return;
    await this.storage.set(K_FORM + incoming.form_id, text);
    this.emit({ kind: 'form_data', formId: next.form_id, record: toRecord(next), source });
  }

  private async dropForm(formId: string, source: ChangeSource): Promise<void> {
    if ((await this.storage.get(K_FORM + formId)) === null) return;
    await this.storage.delete(K_FORM + formId);
    this.emit({ kind: 'form_removed', formId, source });
  }

  /** Applies one event of `GET /v1/events` to the cache. Unknown events are ignored. */
  private async applyEvent(event: ServerSentEvent): Promise<void> {
    const body = parseJson<Record<string, unknown>>(event.data);
    if (event.event === 'fetched_data') {
      if (body && typeof body.appid === 'string' && typeof body.fetched_data === 'string' && typeof body.time_stamp === 'number') {
        await this.putApp(body.appid, { fetched_data: body.fetched_data, time_stamp: body.time_stamp }, 'push');
      }
    } else if (event.event === 'form_data') {
      if (body && typeof body.form_id === 'string') {
        await this.putForm(
          { form_id: body.form_id, data: body.data ?? null, updated_at: (body.updated_at as string | null) ?? null, trigger: (body.trigger as string | null) ?? null },
          'push',
        );
      }
    } else if (event.event === 'form_removed') {
      const formId = body && typeof body.form_id === 'string' ? body.form_id : event.data.trim();
      if (formId) await this.dropForm(formId, 'push');
    }
  }

  private async applySync(answer: SyncAnswer): Promise<void> {
    const apps = Array.isArray(answer.apps) ? answer.apps : [];
    const forms = Array.isArray(answer.forms) ? answer.forms : [];
    if (answer.reset) {
      const keepApps = new Set(apps.map((a) => K_APP + a.appid));
      const keepForms = new Set(forms.map((f) => K_FORM + f.form_id));
      for (const key of await this.storage.keys()) {
        if (key.startsWith(K_APP) && !keepApps.has(key)) {
          await this.storage.delete(key);
        } else if (key.startsWith(K_FORM) && !keepForms.has(key)) {
          await this.dropForm(key.slice(K_FORM.length), 'sync');
        }
      }
    }
    // Even on a reset, a listed entry older than what an event already brought is not taken.
    for (const a of apps) await this.putApp(a.appid, { fetched_data: a.fetched_data, time_stamp: a.time_stamp }, 'sync');
    for (const f of forms) {
      await this.putForm(
        { form_id: f.form_id, provider: f.provider ?? null, form_name: f.form_name ?? null, data: f.data ?? null, updated_at: f.updated_at ?? null, trigger: f.trigger ?? null },
        'sync',
      );
    }
    for (const id of Array.isArray(answer.removed_forms) ? answer.removed_forms : []) await this.dropForm(id, 'sync');
    if (typeof answer.cursor === 'string') await this.storage.set(K_CURSOR, answer.cursor);
  }

  /**
   * Catches up once with `GET /v1/device/sync`, from the stored cursor (the whole state
   * when there is none, or when the server no longer knows it), and applies the answer.
   */
  async sync(signal?: AbortSignal): Promise<SyncAnswer> {
    const cursor = await this.storage.get(K_CURSOR);
    let answer: SyncAnswer;
    try {
      answer = await this.api.request<SyncAnswer>('GET', '/v1/device/sync' + (cursor ? `?cursor=${encodeURIComponent(cursor)}` : ''), undefined, { signal });
    } catch (error) {
      if (!(cursor && error instanceof RefreshdError && error.code === 'invalid_cursor')) throw error;
      await this.storage.delete(K_CURSOR);
      answer = await this.api.request<SyncAnswer>('GET', '/v1/device/sync', undefined, { signal });
    }
    await this.serial(() => this.applySync(answer));
    return answer;
  }

  // ---- the sync loop ----

  /** Starts the background loop: catch up with /v1/device/sync, then follow /v1/events, reconnecting with backoff. */
  start(): void {
    if (this.running) return;
    this.running = true;
    const abort = new AbortController();
    this.abort = abort;
    this.loopDone = this.loop(abort.signal);
  }

  /** Stops the loop, closes the stream and clears every timer; resolves once the loop has ended. */
  async stop(): Promise<void> {
    if (this.running) {
      this.running = false;
      this.abort?.abort();
      this.wake?.();
    }
    await this.loopDone;
    await this.queue;
  }

  private report(error: unknown): void {
    if (this.options.onError) this.safely(() => this.options.onError!(error));
  }

  private backoff(attempt: number, retryAfterSeconds: number | null): number {
    const initial = this.options.reconnect?.initialDelayMs ?? 500;
    const max = this.options.reconnect?.maxDelayMs ?? 30_000;
    const base = Math.min(max, initial * 2 ** Math.min(attempt, 30));
    const random = this.options.random ?? Math.random;
    const jittered = base / 2 + random() * (base / 2);
    return Math.max(jittered, (retryAfterSeconds ?? 0) * 1000);
  }

  private sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
      this.wake = done;
    });
  }

  private async loop(signal: AbortSignal): Promise<void> {
    let attempt = 0;
    while (this.running) {
      let retryAfter: number | null = null;
      try {
        if (!this.syncMissing) {
          try {
            await this.sync(signal);
          } catch (error) {
            // A server without /v1/device/sync: the event stream alone keeps the cache.
            if (error instanceof RefreshdError && error.status === 404 && error.code === 'not_found') this.syncMissing = true;
            else throw error;
          }
        }
        const opened = await this.follow(signal);
        if (opened) attempt = 0;
      } catch (error) {
        if (!this.running) break;
        if (error instanceof RefreshdError) retryAfter = error.retryAfterSeconds;
        this.report(error);
      }
      if (!this.running) break;
      await this.sleep(this.backoff(attempt++, retryAfter), signal);
    }
    this.setConnected(false);
  }

  /** Follows the event stream until it ends; answers whether it opened. */
  private async follow(signal: AbortSignal): Promise<boolean> {
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.key}`,
      accept: 'text/event-stream',
      'cache-control': 'no-cache',
    };
    const lastId = await this.storage.get(K_LAST_EVENT);
    if (lastId) headers['last-event-id'] = lastId;
    const fetchImpl = this.options.fetch ?? globalThis.fetch;
    const res = await fetchImpl(this.api.baseUrl + '/v1/events', { method: 'GET', headers, signal });
    if (!res.ok) throw await errorFromResponse(res);
    if (!res.body) throw new Error('the event stream has no body');
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const pending: ServerSentEvent[] = [];
    const parser = new EventStreamParser((e) => pending.push(e));
    this.setConnected(true);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
        while (pending.length > 0) {
          const event = pending.shift() as ServerSentEvent;
          await this.serial(async () => {
            await this.applyEvent(event);
            if (event.id !== null) await this.storage.set(K_LAST_EVENT, event.id);
          });
        }
      }
    } catch (error) {
      if (!this.running) return true;
      throw error;
    } finally {
      this.setConnected(false);
      parser.end();
      reader.cancel().catch(() => undefined);
    }
    return true;
  }

  // ---- device calls ----

  /** `POST /v1/apps/{appid}/launch`: the user opened the app. */
  async launch(appid: string): Promise<void> {
    await this.api.request('POST', `/v1/apps/${seg(appid)}/launch`);
  }

  /** `PUT /v1/apps/{appid}/background-fetch/token`. */
  async setToken(appid: string, token: string): Promise<void> {
    await this.api.request('PUT', `/v1/apps/${seg(appid)}/background-fetch/token`, { token });
  }

  /** Asks the server for the app's data now (`GET .../background-fetch`) and stores it in the cache; null when there is none. */
  async pullBackgroundFetchData(appid: string): Promise<BackgroundFetchData | null> {
    try {
      const r = await this.api.request<{ fetched_data: string; time_stamp: number }>('GET', `/v1/apps/${seg(appid)}/background-fetch?fetch_type=periodic`);
      await this.serial(() => this.putApp(appid, r, 'sync'));
      return { fetchedData: r.fetched_data, timeStamp: r.time_stamp };
    } catch (error) {
      if (error instanceof RefreshdError && error.code === 'no_cached_data') return null;
      throw error;
    }
  }

  /** `POST /v1/forms`: places a form; the cache holds it (without data) at once. */
  async addForm(form: { provider: string; formName: string; hidden?: boolean }): Promise<string> {
    const r = await this.api.request<{ form_id: string }>('POST', '/v1/forms', { provider: form.provider, form_name: form.formName, hidden: form.hidden ?? false });
    await this.serial(() => this.putForm({ form_id: r.form_id, provider: form.provider, form_name: form.formName }, 'local'));
    return r.form_id;
  }

  /** `DELETE /v1/forms/{form_id}`; the cache drops it. */
  async removeForm(formId: string): Promise<void> {
    await this.api.request('DELETE', `/v1/forms/${seg(formId)}`);
    await this.serial(() => this.dropForm(formId, 'local'));
  }

  /** `POST /v1/forms/{form_id}/visibility`. */
  async setFormVisibility(formId: string, visible: boolean): Promise<void> {
    await this.api.request('POST', `/v1/forms/${seg(formId)}/visibility`, { visible });
  }

  /** `POST /v1/device/network`: report connectivity; after an outage, `since` says when it began. */
  async reportNetwork(online: boolean, since?: Date | string): Promise<void> {
    const body: { online: boolean; since?: string } = { online };
    if (since !== undefined) body.since = since instanceof Date ? since.toISOString() : since;
    await this.api.request('POST', '/v1/device/network', body);
  }

  /** `PUT /v1/device/zone` (an IANA zone name). */
  async setZone(zone: string): Promise<void> {
    await this.api.request('PUT', '/v1/device/zone', { zone });
  }

  /** `GET /v1/forms/{form_id}/data` from the server (not the cache). */
  async fetchFormData(formId: string): Promise<{ data: unknown; updated_at: string | null; trigger: string | null }> {
    return this.api.request('GET', `/v1/forms/${seg(formId)}/data`);
  }
}
