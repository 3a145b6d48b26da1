// The device's local cache lives behind this small interface, so a host can keep it in
// memory, in a file (Node, see "@refreshd/client/node") or in the browser's localStorage.

/** An async string key-value store. */
export interface CacheStorage {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  keys(): Promise<string[]>;
}

/** Keeps everything in a Map: lost when the process ends. */
export class MemoryStorage implements CacheStorage {
  private readonly map = new Map<string, string>();
  async get(key: string): Promise<string | null> {
    return this.map.has(key) ? (this.map.get(key) as string) : null;
  }
  async set(key: string, value: string): Promise<void> {
    this.map.set(key, value);
  }
  async delete(key: string): Promise<void> {
    this.map.delete(key);
  }
  async keys(): Promise<string[]> {
    return [...this.map.keys()];
  }
}

/** The part of the Web Storage API this adapter uses. */
export interface WebStorageLike {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * Browser adapter over `localStorage` (or any Web Storage). Every key is stored under
 * `prefix`, so the cache shares the origin's storage with other data safely.
 */
export class LocalStorageStorage implements CacheStorage {
  private readonly storage: WebStorageLike;
  private readonly prefix: string;

  constructor(options: { prefix?: string; storage?: WebStorageLike } = {}) {
    const s = options.storage ?? (globalThis as { localStorage?: WebStorageLike }).localStorage;
    if (!s) throw new Error('localStorage is not available: pass options.storage');
    this.storage = s;
    this.prefix = options.prefix ?? 'refreshd:';
  }
  async get(key: string): Promise<string | null> {
    return this.storage.getItem(this.prefix + key);
  }
  async set(key: string, value: string): Promise<void> {
    this.storage.setItem(this.prefix + key, value);
  }
  async delete(key: string): Promise<void> {
    this.storage.removeItem(this.prefix + key);
  }
  async keys(): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < this.storage.length; i++) {
      const k = this.storage.key(i);
      if (k !== null && k.startsWith(this.prefix)) out.push(k.slice(this.prefix.length));
    }
    return out;
  }
}
