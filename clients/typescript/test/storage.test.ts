import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { LocalStorageStorage, MemoryStorage, type CacheStorage, type WebStorageLike } from '../src/index.js';
import { FileStorage } from '../src/node.js';
import { tempDir } from './harness.js';

class FakeWebStorage implements WebStorageLike {
  readonly map = new Map<string, string>();
  get length() {
    return this.map.size;
  }
  key(i: number) {
    return [...this.map.keys()][i] ?? null;
  }
  getItem(k: string) {
    return this.map.get(k) ?? null;
  }
  setItem(k: string, v: string) {
    this.map.set(k, String(v));
  }
  removeItem(k: string) {
    this.map.delete(k);
  }
}

async function contract(storage: CacheStorage) {
  assert.equal(await storage.get('a'), null);
  await storage.set('a', '1');
  await storage.set('b/c', 'two');
  await storage.set('a', 'one');
  assert.equal(await storage.get('a'), 'one');
  assert.deepEqual((await storage.keys()).sort(), ['a', 'b/c']);
  await storage.delete('a');
  await storage.delete('missing');
  assert.equal(await storage.get('a'), null);
  assert.deepEqual(await storage.keys(), ['b/c']);
}

test('MemoryStorage keeps the contract', async () => contract(new MemoryStorage()));

test('LocalStorageStorage keeps the contract and stays inside its prefix', async () => {
  const web = new FakeWebStorage();
  web.setItem('someone-else', 'x');
  await contract(new LocalStorageStorage({ storage: web, prefix: 'rd:' }));
  assert.equal(web.getItem('rd:b/c'), 'two');
  assert.equal(web.getItem('someone-else'), 'x');
});

test('FileStorage keeps the contract, persists across instances and survives concurrent writes', async () => {
  const tmp = tempDir();
  try {
    const file = path.join(tmp.dir, 'sub', 'cache.json');
    await contract(new FileStorage(file));
    const again = new FileStorage(file);
    assert.equal(await again.get('b/c'), 'two');
    await Promise.all(Array.from({ length: 20 }, (_, i) => again.set(`k${i}`, String(i))));
    const third = new FileStorage(file);
    assert.equal((await third.keys()).length, 21);
    assert.equal(await third.get('k19'), '19');
    assert.equal(JSON.parse(readFileSync(file, 'utf8'))['k7'], '7');
  } finally {
    tmp.remove();
  }
});
