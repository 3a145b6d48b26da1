#!/usr/bin/env node
// Generates src/generated.ts from refreshd's OpenAPI document (3.x, JSON Schema 2020-12
// style as in 3.1): one declaration per components.schemas entry, and one per inline
// request or response schema of an operation. No dependencies.
//
//   npm run gen -- http://127.0.0.1:8080/v1/openapi.json
//   npm run gen -- ./openapi.json [--out src/generated.ts | --stdout]
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'];

/** A TypeScript type name from any string: "device.sync-answer" → "DeviceSyncAnswer". */
export function typeName(raw) {
  const words = String(raw).split(/[^A-Za-z0-9]+/).filter(Boolean);
  let name = words.map((w) => w[0].toUpperCase() + w.slice(1)).join('');
  if (name === '' || /^[0-9]/.test(name)) name = 'T' + name;
  return name;
}

function refName(ref) {
  const m = /^#\/components\/schemas\/(.+)$/.exec(ref);
  if (!m) return 'unknown /* unsupported $ref ' + ref.replace(/\*\//g, '') + ' */';
  return typeName(decodeURIComponent(m[1]).replace(/~1/g, '/').replace(/~0/g, '~'));
}

function literal(value) {
  return JSON.stringify(value);
}

function comment(text, indent) {
  if (typeof text !== 'string' || text.trim() === '') return '';
  const lines = text.trim().replace(/\*\//g, '*\\/').split('\n');
  if (lines.length === 1) return `${indent}/** ${lines[0]} */\n`;
  return `${indent}/**\n${lines.map((l) => `${indent} * ${l}`.trimEnd()).join('\n')}\n${indent} */\n`;
}

function wrap(t) {
  return /^[A-Za-z0-9_$.<>\[\]"']+$/.test(t) ? t : `(${t})`;
}

function union(types) {
  const seen = [];
  for (const t of types) if (!seen.includes(t)) seen.push(t);
  if (seen.includes('unknown')) return 'unknown';
  return seen.length === 0 ? 'never' : seen.join(' | ');
}

/** The TypeScript type of a schema, written at the given indentation. */
export function schemaType(schema, indent = '') {
  if (schema === true || schema === undefined || schema === null) return 'unknown';
  if (schema === false) return 'never';
  if (typeof schema !== 'object') return 'unknown';
  if (typeof schema.$ref === 'string') {
    const t = refName(schema.$ref);
    return schema.nullable === true ? `${t} | null` : t;
  }
  let t;
  if ('const' in schema) t = literal(schema.const);
  else if (Array.isArray(schema.enum)) t = union(schema.enum.map(literal));
  else if (Array.isArray(schema.oneOf)) t = union(schema.oneOf.map((s) => schemaType(s, indent)));
  else if (Array.isArray(schema.anyOf)) t = union(schema.anyOf.map((s) => schemaType(s, indent)));
  else if (Array.isArray(schema.allOf)) {
    const parts = schema.allOf.map((s) => wrap(schemaType(s, indent)));
    t = parts.length === 1 ? parts[0] : parts.join(' & ');
  } else {
    let types = schema.type;
    if (types === undefined) {
      if (schema.properties || schema.additionalProperties !== undefined) types = 'object';
      else if (schema.items) types = 'array';
    }
    const list = Array.isArray(types) ? types : types === undefined ? [] : [types];
    if (list.length === 0) t = 'unknown';
    else t = union(list.map((ty) => single(ty, schema, indent)));
  }
  if (schema.nullable === true && !/(^|\| )null( \||$)/.test(t)) t = `${t} | null`;
  return t;
}

function single(type, schema, indent) {
  switch (type) {
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array': {
      if (Array.isArray(schema.prefixItems)) return `[${schema.prefixItems.map((s) => schemaType(s, indent)).join(', ')}]`;
      return `${wrap(schemaType(schema.items, indent))}[]`;
    }
    case 'object':
      return objectType(schema, indent);
    default:
      return 'unknown';
  }
}

function objectType(schema, indent) {
  const props = schema.properties && typeof schema.properties === 'object' ? schema.properties : {};
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const names = Object.keys(props);
  const extra = schema.additionalProperties;
  if (names.length === 0) {
    if (extra === false) return 'Record<string, never>';
    if (extra === undefined || extra === true) return 'Record<string, unknown>';
    return `Record<string, ${schemaType(extra, indent)}>`;
  }
  const inner = indent + '  ';
  let out = '{\n';
  for (const name of names) {
    const p = props[name];
    out += comment(p && p.description, inner);
    const key = IDENT.test(name) ? name : JSON.stringify(name);
    out += `${inner}${key}${required.has(name) ? '' : '?'}: ${schemaType(p, inner)};\n`;
  }
  if (extra !== undefined && extra !== false) out += `${inner}[key: string]: unknown;\n`;
  return out + indent + '}';
}

function declaration(name, schema) {
  const t = schemaType(schema, '');
  const doc = comment(schema && schema.description, '');
  if (t.startsWith('{\n') && !t.includes('\n} |') && !t.endsWith('| null')) return `${doc}export interface ${name} ${t}\n`;
  return `${doc}export type ${name} = ${t};\n`;
}

function jsonSchemaOf(content) {
  if (!content || typeof content !== 'object') return undefined;
  for (const type of Object.keys(content).sort()) {
    if (/json/i.test(type) && content[type] && content[type].schema !== undefined) return content[type].schema;
  }
  return undefined;
}

/** Follows a local `$ref` of a response or request body (`#/components/responses/X`). */
function deref(doc, value) {
  let v = value;
  for (let i = 0; i < 10 && v && typeof v.$ref === 'string' && v.$ref.startsWith('#/'); i++) {
    v = v.$ref
      .slice(2)
      .split('/')
      .map((p) => decodeURIComponent(p).replace(/~1/g, '/').replace(/~0/g, '~'))
      .reduce((node, key) => (node && typeof node === 'object' ? node[key] : undefined), doc);
  }
  return v;
}

function operationName(method, route, op) {
  if (op && typeof op.operationId === 'string' && op.operationId !== '') return typeName(op.operationId);
  const parts = route.split('/').filter(Boolean).map((p) => (p.startsWith('{') ? 'by-' + p.slice(1, -1) : p));
  return typeName(`${method} ${parts.join(' ')}`);
}

/** The whole generated module for an OpenAPI document. */
export function generate(doc) {
  if (!doc || typeof doc !== 'object') throw new Error('not an OpenAPI document');
  const title = doc.info && doc.info.title ? String(doc.info.title) : 'the API';
  const version = doc.info && doc.info.version ? String(doc.info.version) : '';
  let out = '// Generated by scripts/gen.mjs from the OpenAPI document of ' + `${title}${version ? ' ' + version : ''}` + '.\n';
  out += '// Do not edit by hand: run `npm run gen -- <url-or-file>`.\n/* eslint-disable */\n\n';
  const schemas = (doc.components && doc.components.schemas) || {};
  const taken = new Set();
  for (const raw of Object.keys(schemas).sort()) {
    const name = typeName(raw);
    if (taken.has(name)) continue;
    taken.add(name);
    out += declaration(name, schemas[raw]) + '\n';
  }
  const paths = doc.paths || {};
  for (const route of Object.keys(paths).sort()) {
    const item = paths[route] || {};
    for (const method of METHODS) {
      const op = item[method];
      if (!op || typeof op !== 'object') continue;
      const base = operationName(method, route, op);
      const body = deref(doc, op.requestBody);
      const req = body && jsonSchemaOf(body.content);
      if (req !== undefined) {
        const name = base + 'Request';
        if (!taken.has(name)) {
          taken.add(name);
          out += comment(`Body of \`${method.toUpperCase()} ${route}\`.`, '') + declaration(name, req).replace(/^\/\*\*.*\*\/\n/, '') + '\n';
        }
      }
      const responses = op.responses || {};
      for (const status of Object.keys(responses).sort()) {
        if (!/^2/.test(status)) continue;
        const response = deref(doc, responses[status]);
        const schema = jsonSchemaOf(response && response.content);
        if (schema === undefined) continue;
        const name = `${base}Response${status === '200' ? '' : status}`;
        if (taken.has(name)) continue;
        taken.add(name);
        out += comment(`Answer ${status} of \`${method.toUpperCase()} ${route}\`.`, '') + declaration(name, schema).replace(/^\/\*\*.*\*\/\n/, '') + '\n';
      }
    }
  }
  return out.replace(/\n+$/, '\n');
}

/** Reads a document from a URL or a file. */
export async function load(source) {
  if (/^https?:\/\//.test(source)) {
    const res = await fetch(source);
    if (!res.ok) throw new Error(`${source} answered ${res.status}`);
    return res.json();
  }
  return JSON.parse(await readFile(source, 'utf8'));
}

async function main(argv) {
  const args = argv.slice(2);
  const here = path.dirname(fileURLToPath(import.meta.url));
  let out = path.join(here, '..', 'src', 'generated.ts');
  let toStdout = false;
  let source;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--out') out = args[++i];
    else if (args[i] === '--stdout') toStdout = true;
    else source = args[i];
  }
  if (!source) {
    console.error('usage: npm run gen -- <url-or-file> [--out FILE | --stdout]');
    process.exit(2);
  }
  const text = generate(await load(source));
  if (toStdout) process.stdout.write(text);
  else {
    await writeFile(out, text);
    console.error(`wrote ${out}`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv).catch((error) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
