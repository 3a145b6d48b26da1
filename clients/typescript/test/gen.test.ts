// The OpenAPI → TypeScript generator on a document that uses every construct it handles;
// the output must type-check and accept (and refuse) sample values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';
import { generator, tempDir } from './harness.js';

const DOC = {
  openapi: '3.1.0',
  info: { title: 'sample', version: '1' },
  paths: {
    '/v1/things/{id}': {
      get: {
        operationId: 'getThing',
        responses: {
          '200': { content: { 'application/json': { schema: { $ref: '#/components/schemas/Thing' } } } },
          '404': { content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
        },
      },
      put: {
        requestBody: { content: { 'application/json': { schema: { type: 'object', required: ['name'], properties: { name: { type: 'string' } }, additionalProperties: false } } } },
        responses: { '202': { $ref: '#/components/responses/Accepted' }, '204': { description: 'no body' }, '201': { content: { 'application/json': { schema: { type: 'array', items: { type: ['string', 'null'] } } } } } },
      },
    },
  },
  components: {
    responses: { Accepted: { description: 'queued', content: { 'application/json': { schema: { type: 'object', required: ['queued'], properties: { queued: { type: 'integer' } } } } } } },
    schemas: {
      Thing: {
        type: 'object',
        description: 'A thing.',
        required: ['id', 'kind', 'tags', 'shape'],
        properties: {
          id: { type: 'string', description: 'Its id.' },
          kind: { type: 'string', enum: ['a', 'b'] },
          count: { type: ['integer', 'null'] },
          tags: { type: 'array', items: { type: 'string' } },
          shape: { oneOf: [{ $ref: '#/components/schemas/Circle' }, { $ref: '#/components/schemas/Square' }] },
          extra: { anyOf: [{ type: 'number' }, { type: 'boolean' }] },
          meta: { type: 'object', additionalProperties: { type: 'integer' } },
          anything: {},
          'odd-name': { type: 'string', nullable: true },
          fixed: { const: 'yes' },
          both: { allOf: [{ $ref: '#/components/schemas/Circle' }, { type: 'object', properties: { z: { type: 'number' } } }] },
        },
      },
      Circle: { type: 'object', required: ['r'], properties: { r: { type: 'number' } } },
      Square: { type: 'object', required: ['side'], properties: { side: { type: 'number' } } },
      Error: { type: 'object', properties: { error: { type: 'object', properties: { code: { type: 'string' } } } } },
      'device.sync-answer': { type: ['object', 'null'], properties: { cursor: { type: 'string' } } },
    },
  },
};

function diagnostics(source: string): ts.Diagnostic[] {
  const tmp = tempDir();
  try {
    const file = path.join(tmp.dir, 'check.ts');
    writeFileSync(file, source);
    const program = ts.createProgram([file], { strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, types: [] });
    return [...ts.getPreEmitDiagnostics(program)];
  } finally {
    tmp.remove();
  }
}

function typeErrors(source: string): string[] {
  return diagnostics(source).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}

test('emits interfaces and aliases for every construct', async () => {
  const { generate } = await generator();
  const out = generate(DOC);
  assert.match(out, /\/\*\* A thing\. \*\/\nexport interface Thing \{/);
  assert.match(out, /  kind: "a" \| "b";/);
  assert.match(out, /  count\?: number \| null;/);
  assert.match(out, /  tags: string\[\];/);
  assert.match(out, /  shape: Circle \| Square;/);
  assert.match(out, /  meta\?: Record<string, number>;/);
  assert.match(out, /  anything\?: unknown;/);
  assert.match(out, /  "odd-name"\?: string \| null;/);
  assert.match(out, /export type DeviceSyncAnswer = \{[\s\S]*\} \| null;/);
  assert.match(out, /export type GetThingResponse = Thing;/);
  assert.match(out, /export type PutV1ThingsByIdResponse201 = \(string \| null\)\[\];/);
  assert.match(out, /export interface PutV1ThingsByIdRequest \{\n  name: string;\n\}/);
  assert.match(out, /export interface PutV1ThingsByIdResponse202 \{\n  queued: number;\n\}/, 'a $ref to components.responses is followed');
  assert.equal(generate(DOC), out, 'deterministic');
});

test('the output type-checks and the types mean what the schemas say', async () => {
  const { generate } = await generator();
  const out = generate(DOC);
  const good = `${out}
const t: Thing = { id: 'x', kind: 'a', tags: [], shape: { r: 1 }, count: null, meta: { a: 1 }, "odd-name": null, fixed: 'yes', both: { r: 1, z: 2 } };
const s: DeviceSyncAnswer = null;
const r: PutV1ThingsByIdResponse201 = ['a', null];
export { t, s, r };
`;
  assert.deepEqual(typeErrors(good), []);
  const bad = [
    `export const b0: Thing = { id: 'x', kind: 'c', tags: [], shape: { r: 1 } };`,
    `export const b1: Thing = { id: 'x', kind: 'a', tags: [], shape: { q: 1 } };`,
    `export const b2: Thing = { id: 'x', kind: 'a', tags: [1], shape: { r: 1 } };`,
    `export const b3: Thing = { kind: 'a', tags: [], shape: { r: 1 } };`,
    `export const b4: DeviceSyncAnswer = { cursor: 1 };`,
  ];
  // One program, one bad value a line: every one of those lines must have an error.
  const first = out.split('\n').length;
  const found = diagnostics(`${out}\n${bad.join('\n')}\n`);
  const lines = new Set(found.map((d) => d.file!.getLineAndCharacterOfPosition(d.start!).line + 1));
  bad.forEach((line, i) => assert.ok(lines.has(first + 1 + i), `no type error for: ${line}`));
  assert.equal(lines.size, bad.length, 'errors only on the bad lines');
});
