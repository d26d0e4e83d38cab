// The op type embedded in collab-client.js: the examples of docs/protocol.md section 7.1, the
// offset helpers, and a seeded differential run against the npm package ot-text-unicode, which
// is what the server's rooms/ot.py is checked against too.
import assert from "node:assert/strict";
import {test} from "node:test";

import {type as npm} from "ot-text-unicode";

import {
  mapOffset,
  ot,
  toCodePointOffset,
  toUtf16Offset,
} from "../../rooms/static/rooms/collab-client.js";

test("docs/protocol.md section 7.1 examples", () => {
  assert.equal(ot.apply("hello", [5, " world"]), "hello world");
  assert.equal(ot.apply("hello", [{d: 1}, "H"]), "Hello");
  assert.equal(ot.apply("hello", [2, {d: 2}]), "heo");
  assert.equal(ot.apply("hello", []), "hello");
  assert.equal(ot.codePointLength("a😀b"), 3);
  assert.equal(ot.apply("a😀b", [2, "x"]), "a😀xb");
});

test("concurrent inserts at one position end up in reverse commit order", () => {
  // The server commits `first`, then transforms `second` past it with side left.
  const first = ["a"];
  const second = ["b"];
  const server = ot.apply(ot.apply("", first), ot.transform(second, first, "left"));
  assert.equal(server, "ba");
  // The first client has `first` in flight and receives `second`: the sides of docs/protocol.md 7.3.
  const client = ot.apply(ot.apply("", first), ot.transform(second, first, "left"));
  assert.equal(client, server);
  const other = ot.apply(ot.apply("", second), ot.transform(first, second, "right"));
  assert.equal(other, server);
});

test("normalize merges parts, drops a trailing skip and refuses malformed parts", () => {
  assert.deepEqual(ot.normalize([1, 2, "a", "b", {d: 1}, {d: 2}, 3]), [3, "ab", {d: 3}]);
  for (const bad of [
    [0],
    [""],
    [{d: 0}],
    [{d: "x"}],
    [1.5],
    [true],
    [null],
    ["\u0000"],
    ["\ud800"],
    "x",
  ]) {
    assert.throws(() => ot.normalize(bad), ot.InvalidOp, JSON.stringify(bad));
  }
  assert.throws(() => ot.transform([1, 1, "a"], ["b"], "left"), ot.InvalidOp);
  assert.throws(() => ot.apply("ab", [3]), ot.InvalidOp);
  assert.throws(() => ot.apply("ab", [1, {d: 2}]), ot.InvalidOp);
});

test("transformPosition keeps a cursor before an insert at its offset", () => {
  assert.equal(ot.transformPosition(2, [2, "xy"]), 2);
  assert.equal(ot.transformPosition(3, [2, "😀"]), 4);
  assert.equal(ot.transformPosition(3, [1, {d: 4}]), 1);
});

test("diff gives one normalized hunk, counted in code points", () => {
  assert.deepEqual(ot.diff("abc", "abc"), []);
  assert.deepEqual(ot.diff("aa", "aaa"), [2, "a"]);
  assert.deepEqual(ot.diff("a😀b", "a😁b"), [1, {d: 1}, "😁"]);
  assert.deepEqual(ot.diff("😀", "😀😀"), [1, "😀"]);
  assert.deepEqual(ot.diff("x😀y", "xy"), [1, {d: 1}]);
  const rng = seeded(11);
  for (let i = 0; i < 2000; i++) {
    const before = randomText(rng, 12);
    const after = randomText(rng, 12);
    const op = ot.diff(before, after);
    assert.deepEqual(ot.normalize(op), op);
    assert.equal(ot.apply(before, op), after);
  }
});

test("UTF-16 <-> code point offsets", () => {
  const text = "a😀b";
  assert.deepEqual(
    [0, 1, 3, 4].map((o) => toCodePointOffset(text, o)),
    [0, 1, 2, 3],
  );
  assert.deepEqual(
    [0, 1, 2, 3].map((o) => toUtf16Offset(text, o)),
    [0, 1, 3, 4],
  );
  assert.throws(() => toCodePointOffset(text, 2), RangeError); // inside the pair
  assert.throws(() => toCodePointOffset(text, 5), RangeError);
  assert.throws(() => toUtf16Offset(text, 4), RangeError);
});

test("mapOffset moves an offset through a change list", () => {
  const changes = [
    {from: 1, to: 3, insert: "XYZ"},
    {from: 5, to: 5, insert: "😀"},
  ];
  assert.deepEqual(
    [0, 1, 2, 3, 5, 6].map((o) => mapOffset(o, changes)),
    [0, 1, 1, 4, 6, 9],
  );
});

test("the embedded op type computes what ot-text-unicode computes", () => {
  const rng = seeded(20240521);
  for (let i = 0; i < 4000; i++) {
    const doc = randomText(rng, 20);
    const a = randomOp(rng, doc);
    const b = randomOp(rng, doc);
    const c = randomOp(rng, ot.apply(doc, a));
    const raw = randomParts(rng, ot.codePointLength(doc));
    const context = JSON.stringify({doc, a, b, c, raw});
    assert.deepEqual(ot.normalize(raw), npm.normalize(copy(raw)), context);
    assert.equal(ot.apply(doc, a), npm.apply(doc, copy(a)), context);
    for (const side of ["left", "right"]) {
      assert.deepEqual(ot.transform(a, b, side), npm.transform(copy(a), copy(b), side), context);
    }
    assert.deepEqual(ot.compose(a, c), npm.compose(copy(a), copy(c)), context);
    for (let p = 0; p <= ot.codePointLength(doc); p++) {
      assert.equal(ot.transformPosition(p, a), npm.transformPosition(p, copy(a)), context);
    }
    // Convergence, the property the whole protocol rests on.
    assert.equal(
      ot.apply(ot.apply(doc, a), ot.transform(b, a, "left")),
      ot.apply(ot.apply(doc, b), ot.transform(a, b, "right")),
      context,
    );
  }
});

// -- seeded generators (the same shapes as tests/rooms/test_ot.py's) --------------------------

const ALPHABET = ["a", "b", "c", " ", "\n", "é", "ß", "😀", "🎉", "𝄞"];

function seeded(seed) {
  // mulberry32: small, fast and reproducible
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const randint = (rng, low, high) => low + Math.floor(rng() * (high - low + 1));

function randomText(rng, maxLength) {
  let text = "";
  for (let n = randint(rng, 0, maxLength); n > 0; n--)
    text += ALPHABET[randint(rng, 0, ALPHABET.length - 1)];
  return text;
}

/** Random parts valid for a document of `length` code points, not normalized. */
function randomParts(rng, length) {
  const parts = [];
  let remaining = length;
  for (;;) {
    const roll = rng();
    if (roll < 0.15) break;
    if (roll < 0.45 && remaining) {
      const n = randint(rng, 1, rng() < 0.8 ? Math.min(remaining, 8) : remaining);
      parts.push(n);
      remaining -= n;
    } else if (roll < 0.7 && remaining) {
      const n = randint(rng, 1, rng() < 0.8 ? Math.min(remaining, 5) : remaining);
      parts.push({d: n});
      remaining -= n;
    } else {
      parts.push(randomText(rng, 6) || "x");
    }
  }
  return parts;
}

const randomOp = (rng, doc) => ot.normalize(randomParts(rng, ot.codePointLength(doc)));

// npm's normalize() mutates the delete objects it merges.
const copy = (value) => JSON.parse(JSON.stringify(value));
