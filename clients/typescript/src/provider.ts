// Provider side: answering refreshd's deliveries (POST refresh_url) without any framework.
import { checkSignature, SIGNATURE_HEADER, type Now, type SignatureCheck } from './signature.js';

/** The JSON body of a delivery. */
export interface Delivery {
  form_id: string;
  form_name: string;
  /** Why the refresh happened: "add", "interval", "visible", ... */
  trigger: string;
  deferred: string[];
  [extra: string]: unknown;
}

export interface DeliveryContext {
  /** `refreshd-delivery-id`: stable across retries of the same delivery. */
  deliveryId: string | null;
  /** The `t` of the verified signature (unix seconds). */
  signedAt: number;
}

/**
 * Answers a delivery: any JSON value becomes the form's new data (sent as 200);
 * `undefined` answers 204, which keeps the data the form had.
 */
export type DeliveryAnswerer = (delivery: Delivery, context: DeliveryContext) => unknown | Promise<unknown>;

export interface DeliveryHandlerOptions {
  /** The provider's signing secret, or several (e.g. new and old around a rotation). */
  secret: string | string[];
  answer: DeliveryAnswerer;
  /** The clock, for tests: a Date or unix seconds. Defaults to the current time. */
  now?: () => Now;
  /** Called when a delivery is refused or the answerer throws. */
  onReject?: (why: { status: number; reason: string; error?: unknown }) => void;
}

/** A framework-neutral request: header names in any case, the body exactly as received. */
export interface RawRequest {
  headers: Headers | Record<string, string | string[] | undefined>;
  rawBody: string | Uint8Array;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Reads one header from either a Headers object or a plain (Node-style) record. */
export function headerValue(headers: RawRequest['headers'], name: string): string | null {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name);
  const record = headers as Record<string, string | string[] | undefined>;
  const wanted = name.toLowerCase();
  for (const key of Object.keys(record)) {
    if (key.toLowerCase() !== wanted) continue;
    const v = record[key];
    if (v === undefined) return null;
    return Array.isArray(v) ? v.join(',') : v;
  }
  return null;
}

function json(status: number, value: unknown): RawResponse {
  return { status, headers: { 'content-type': 'application/json' }, body: JSON.stringify(value) };
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Builds the core of a provider endpoint: verify the signature over the raw body, parse
 * the delivery, ask `answer` for the form's data. Refused signatures answer 401 (refreshd
 * then retries and finally logs the failure); an answerer that throws answers 500.
 */
export function createDeliveryHandler(options: DeliveryHandlerOptions): (request: RawRequest) => Promise<RawResponse> {
  const { secret, answer } = options;
  const reject = (status: number, reason: string, error?: unknown): RawResponse => {
    options.onReject?.({ status, reason, error });
    return json(status, { error: reason });
  };
  return async (request) => {
    const header = headerValue(request.headers, SIGNATURE_HEADER);
    const check: SignatureCheck = await checkSignature(secret, header, request.rawBody, options.now?.());
    if (!check.valid) return reject(401, `signature_${check.reason}`);
    let delivery: Delivery;
    try {
      const text = typeof request.rawBody === 'string' ? request.rawBody : decoder.decode(request.rawBody);
      delivery = JSON.parse(text) as Delivery;
    } catch (error) {
      return reject(400, 'invalid_delivery', error);
    }
    if (typeof delivery !== 'object' || delivery === null || typeof delivery.form_id !== 'string') {
      return reject(400, 'invalid_delivery');
    }
    let data: unknown;
    try {
      data = await answer(delivery, { deliveryId: headerValue(request.headers, 'refreshd-delivery-id'), signedAt: check.timestamp });
    } catch (error) {
      return reject(500, 'answer_failed', error);
    }
    if (data === undefined) return { status: 204, headers: {}, body: '' };
    return json(200, data);
  };
}
