import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventStreamParser, type ServerSentEvent } from '../src/index.js';

function parseAll(chunks: string[]): { events: ServerSentEvent[]; parser: EventStreamParser } {
  const events: ServerSentEvent[] = [];
  const parser = new EventStreamParser((e) => events.push(e));
  for (const c of chunks) parser.push(c);
  return { events, parser };
}

const STREAM =
  ': keep-alive\n\n' +
  'id: 7\nevent: form_data\ndata: {"form_id":"f1",\ndata: "data":1}\n\n' +
  'event: fetched_data\r\nid: 8\r\ndata:{"appid":"wx1"}\r\n\r\n' +
  'retry: 2500\n' +
  'data: plain\rdata\r\r' +
  'event: ignored-no-data\n\n' +
  'id: 9\nevent: form_removed\ndata: {"form_id":"f1"}\n\n' +
  'event: unfinished\ndata: x\n';

test('parses fields, multi-line data, comments, ids, retry and every line ending', () => {
  const { events, parser } = parseAll([STREAM]);
  assert.deepEqual(events, [
    { event: 'form_data', data: '{"form_id":"f1",\n"data":1}', id: '7' },
    { event: 'fetched_data', data: '{"appid":"wx1"}', id: '8' },
    { event: 'message', data: 'plain\n', id: '8' },
    { event: 'form_removed', data: '{"form_id":"f1"}', id: '9' },
  ]);
  assert.equal(parser.retryMs, 2500);
  assert.equal(parser.lastEventId, '9');
});

test('gives the same events whatever the chunking, even splitting CR LF', () => {
  const whole = parseAll([STREAM]).events;
  for (const size of [1, 2, 3, 5, 7, 13]) {
    const chunks: string[] = [];
    for (let i = 0; i < STREAM.length; i += size) chunks.push(STREAM.slice(i, i + size));
    assert.deepEqual(parseAll(chunks).events, whole, `chunks of ${size}`);
  }
});

test('an unfinished event is dropped at the end of the stream', () => {
  const { events, parser } = parseAll(['data: a\n']);
  parser.end();
  parser.push('\n');
  assert.deepEqual(events, []);
});
