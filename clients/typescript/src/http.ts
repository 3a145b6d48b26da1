// A small JSON-over-fetch layer shared by every refreshd caller in this package.

/** One problem listed in an error's `details`. */
export interface ErrorDetail {
  path?: string;
  code?: string;
  message?: string;
  hint?: string;
}

/** A non-2xx answer from refreshd, carrying the API's error shape. */
export class RefreshdError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: ErrorDetail[];
  /** Seconds from a `Retry-After` header (429, 503), when present. */
  readonly retryAfterSeconds: number | null;

  constructor(status: number, code: string, message: string, details: ErrorDetail[], retryAfterSeconds: number | null) {
    super(`refreshd answered ${status} ${code}: ${message}`);
    this.name = 'RefreshdError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface ClientOptions {
  /** Base URL of the API listener, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** The bearer key (`rfdo_`, `rfda_`, `rfdp_` or `rfdd_`). */
  key: string;
  /** A fetch implementation; the platform's global `fetch` by default. */
  fetch?: FetchLike;
}

export function parseRetryAfter(value: string | null): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return null;
  return Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** Turns a non-2xx response into a RefreshdError (reading its body). */
export async function errorFromResponse(res: Response): Promise<RefreshdError> {
  const text = await res.text().catch(() => '');
  let code = 'http_' + res.status;
  let message = text.slice(0, 200) || res.statusText;
  let details: ErrorDetail[] = [];
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    if (parsed && typeof parsed.error === 'object' && parsed.error !== null) {
      if (typeof parsed.error.code === 'string') code = parsed.error.code;
      if (typeof parsed.error.message === 'string') message = parsed.error.message;
      if (Array.isArray(parsed.error.details)) details = parsed.error.details as ErrorDetail[];
    }
  } catch {
    // not the JSON error shape: keep the text
  }
  return new RefreshdError(res.status, code, message, details, parseRetryAfter(res.headers.get('retry-after')));
}

function trimSlash(url: string): string {
  return url.endsWith('/') ? url.slice(0, -1) : url;
}

/** Base of every API client: one key, one base URL. */
export class ApiClient {
  readonly baseUrl: string;
  protected readonly key: string;
  protected readonly fetchImpl: FetchLike;

  constructor(options: ClientOptions) {
    if (!options.baseUrl) throw new TypeError('baseUrl is required');
    if (!options.key) throw new TypeError('key is required');
    this.baseUrl = trimSlash(options.baseUrl);
    this.key = options.key;
    const f = options.fetch ?? (globalThis.fetch as FetchLike | undefined);
    if (!f) throw new TypeError('no fetch implementation: pass options.fetch');
    this.fetchImpl = f;
  }

  /** Sends a request; answers the parsed JSON body (undefined for an empty body) or throws RefreshdError. */
  async request<T>(method: string, path: string, body?: unknown, init?: { signal?: AbortSignal; headers?: Record<string, string> }): Promise<T> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.key}`, accept: 'application/json', ...(init?.headers ?? {}) };
    let payload: string | undefined;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const res = await this.fetchImpl(this.baseUrl + path, { method, headers, body: payload, signal: init?.signal });
    if (!res.ok) throw await errorFromResponse(res);
    const text = await res.text();
    if (text === '') return undefined as T;
    return JSON.parse(text) as T;
  }
}

/** Percent-encodes one path segment. */
export function seg(value: string): string {
  return encodeURIComponent(value);
}
