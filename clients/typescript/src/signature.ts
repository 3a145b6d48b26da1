// The `refreshd-signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=...]`.
// Deliveries to providers are signed over "<t>.<raw body>", periodic fetches to
// developers over "<t>.<path and query>". HMAC runs on WebCrypto (`crypto.subtle`),
// which browsers, Node 20+, Deno, Bun and edge runtimes all provide.

/** How far a signature's `t` may be from now, either way, in seconds. */
export const SIGNATURE_TOLERANCE_SECONDS = 300;

/** The header's name, as refreshd sends it. */
export const SIGNATURE_HEADER = 'refreshd-signature';

export interface ParsedSignature {
  timestamp: number;
  /** Every `v1=` value, lower-cased, in header order. */
  signatures: string[];
}

export type SignatureCheck =
  | { valid: true; timestamp: number }
  | { valid: false; reason: 'missing' | 'malformed' | 'expired' | 'mismatch' };

/** A point in time: a Date, or unix SECONDS as in the header's `t`. */
export type Now = Date | number;

const encoder = new TextEncoder();

function subtle(): SubtleCrypto {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (!c || !c.subtle) throw new Error('WebCrypto (crypto.subtle) is not available in this runtime');
  return c.subtle;
}

function toSeconds(now: Now | undefined): number {
  if (now === undefined) return Math.floor(Date.now() / 1000);
  if (now instanceof Date) return Math.floor(now.getTime() / 1000);
  return Math.floor(now);
}

/** Parses the header; null when it is not of the expected form. Unknown keys are ignored. */
export function parseSignatureHeader(header: string | null | undefined): ParsedSignature | null {
  if (typeof header !== 'string' || header.trim() === '') return null;
  let timestamp: number | null = null;
  const signatures: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) return null;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't') {
      if (timestamp !== null || !/^\d{1,12}$/.test(value)) return null;
      timestamp = Number(value);
    } else if (key === 'v1') {
      if (!/^[0-9a-fA-F]{64}$/.test(value)) return null;
      signatures.push(value.toLowerCase());
    }
  }
  if (timestamp === null || signatures.length === 0) return null;
  return { timestamp, signatures };
}

function bytesOf(payload: string | Uint8Array): Uint8Array {
  return typeof payload === 'string' ? encoder.encode(payload) : payload;
}

async function hmac(secret: string, timestamp: number, payload: string | Uint8Array): Promise<Uint8Array> {
  const s = subtle();
  const key = await s.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const prefix = encoder.encode(`${timestamp}.`);
  const body = bytesOf(payload);
  const message = new Uint8Array(prefix.length + body.length);
  message.set(prefix, 0);
  message.set(body, prefix.length);
  return new Uint8Array(await s.sign('HMAC', key, message));
}

function toHex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Compares two byte strings in time that depends only on their length. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Computes the hex `v1` value for a payload (handy for tests and for signing test requests). */
export async function computeSignature(secret: string, timestamp: number, payload: string | Uint8Array): Promise<string> {
  return toHex(await hmac(secret, timestamp, payload));
}

/** Builds a whole header value signed with each secret in turn (first secret first). */
export async function signatureHeader(secrets: string | string[], timestamp: number, payload: string | Uint8Array): Promise<string> {
  const list = Array.isArray(secrets) ? secrets : [secrets];
  const parts = [`t=${timestamp}`];
  for (const s of list) parts.push(`v1=${await computeSignature(s, timestamp, payload)}`);
  return parts.join(',');
}

/**
 * Checks a header over a payload and tells why it fails. `secrets` may hold several
 * secrets (e.g. the old and the new one around a rotation): any match is accepted.
 */
export async function checkSignature(
  secrets: string | string[],
  header: string | null | undefined,
  payload: string | Uint8Array,
  now?: Now,
): Promise<SignatureCheck> {
  if (header === null || header === undefined || header === '') return { valid: false, reason: 'missing' };
  const parsed = parseSignatureHeader(header);
  if (!parsed) return { valid: false, reason: 'malformed' };
  if (Math.abs(toSeconds(now) - parsed.timestamp) > SIGNATURE_TOLERANCE_SECONDS) return { valid: false, reason: 'expired' };
  const list = (Array.isArray(secrets) ? secrets : [secrets]).filter((s) => typeof s === 'string' && s !== '');
  if (list.length === 0) throw new TypeError('no signing secret given');
  let matched = false;
  for (const secret of list) {
    const expected = await hmac(secret, parsed.timestamp, payload);
    for (const candidate of parsed.signatures) {
      // Every candidate is compared in full; no early exit on a match.
      if (constantTimeEqual(expected, fromHex(candidate))) matched = true;
    }
  }
  return matched ? { valid: true, timestamp: parsed.timestamp } : { valid: false, reason: 'mismatch' };
}

/**
 * Provider side: verifies the `refreshd-signature` of a delivery over its RAW body
 * (the bytes as received, before any JSON parsing). `now` is a Date or unix seconds.
 */
export async function verifySignature(
  secret: string | string[],
  header: string | null | undefined,
  body: string | Uint8Array,
  now?: Now,
): Promise<boolean> {
  return (await checkSignature(secret, header, body, now)).valid;
}

/**
 * Developer side: verifies the signature of a periodic fetch over the request target
 * exactly as received (path and query, e.g. Node's `req.url`).
 */
export async function verifyFetchSignature(
  secret: string | string[],
  header: string | null | undefined,
  pathAndQuery: string,
  now?: Now,
): Promise<boolean> {
  return (await checkSignature(secret, header, pathAndQuery, now)).valid;
}
