// src/generated.ts must be what the generator makes of the running binary's document.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { generator, PACKAGE_ROOT, startRefreshd, tempDir } from './harness.js';

test('src/generated.ts matches the served /v1/openapi.json', async () => {
  const dir = tempDir();
  const refreshd = await startRefreshd(dir.dir);
  try {
    const { generate, load } = await generator();
    const doc = (await load(`${refreshd.url}/v1/openapi.json`)) as { openapi?: string; components?: { schemas?: object } };
    assert.match(String(doc.openapi), /^3\./);
    const fresh = generate(doc);
    const committed = readFileSync(path.join(PACKAGE_ROOT, 'src', 'generated.ts'), 'utf8');
    assert.ok(Object.keys(doc.components?.schemas ?? {}).length > 0, 'the document has schemas');
    assert.equal(committed, fresh, 'src/generated.ts is stale: run `npm run gen -- <refreshd>/v1/openapi.json` and commit it');
  } finally {
    await refreshd.stop();
    dir.remove();
  }
});
