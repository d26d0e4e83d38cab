#!/usr/bin/env node
// Reference oracle for tests/rooms/test_ot_differential.py: reads one JSON batch of cases on
// stdin, runs each through the npm package ot-text-unicode and writes the results as JSON to
// stdout, in case order. One process handles a whole batch, so Node starts only a few times.
//
// Input:  {"cases": [{"doc", "raw", "a", "b", "c", "positions"}, ...]}
//   doc: string; raw: any op (normalized here); a, b: normalized ops valid for doc;
//   c: normalized op valid for apply(doc, a); positions: cursor positions in doc.
// Output: {"version", "results": [{"normalize", "apply_a", "apply_b", "apply_raw",
//   "transform_ab_left", "transform_ab_right", "transform_ba_left", "transform_ba_right",
//   "compose_ac", "positions"}, ...]}
// Any call that throws yields {"error": message} in place of its result.
'use strict';

const { type } = require('ot-text-unicode');
const { version } = require('ot-text-unicode/package.json');

// normalize() mutates the delete objects it merges, so every call gets its own copy.
const copy = (value) => JSON.parse(JSON.stringify(value));

const attempt = (fn) => {
  try {
    return fn();
  } catch (err) {
    return { error: String(err && err.message ? err.message : err) };
  }
};

const runCase = (c) => ({
  normalize: attempt(() => type.normalize(copy(c.raw))),
  apply_a: attempt(() => type.apply(c.doc, copy(c.a))),
  apply_b: attempt(() => type.apply(c.doc, copy(c.b))),
  apply_raw: attempt(() => type.apply(c.doc, type.normalize(copy(c.raw)))),
  transform_ab_left: attempt(() => type.transform(copy(c.a), copy(c.b), 'left')),
  transform_ab_right: attempt(() => type.transform(copy(c.a), copy(c.b), 'right')),
  transform_ba_left: attempt(() => type.transform(copy(c.b), copy(c.a), 'left')),
  transform_ba_right: attempt(() => type.transform(copy(c.b), copy(c.a), 'right')),
  compose_ac: attempt(() => type.compose(copy(c.a), copy(c.c))),
  positions: c.positions.map((p) => attempt(() => type.transformPosition(p, copy(c.a)))),
});

const chunks = [];
process.stdin.on('data', (chunk) => chunks.push(chunk));
process.stdin.on('end', () => {
  const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const results = input.cases.map(runCase);
  // Let Node flush stdout on its own; process.exit() here could truncate a large pipe write.
  process.stdout.write(JSON.stringify({ version, results }));
});
