/**
 * collab-client.js — the JavaScript client of the collaborative editing service.
 *
 * One ES module, no build step, no dependencies; runs in browsers and in Node 20+ (pass the `ws`
 * package's class as the `WebSocket` option there). It speaks the ops mode of the wire protocol
 * (/ws/<room>?mode=ops; docs/protocol.md sections 4 and 7) and embeds its own ot-text-unicode
 * implementation, a line-by-line port of the server's rooms/ot.py, so both sides transform
 * identically.
 *
 * Algorithm (ShareDB's client, in brief)
 * - The document the server confirmed is `serverText` at `version`. The local text is that plus
 *   at most one op in flight (sent with a `seq` and its base version, awaiting its ack) plus at
 *   most one pending op (every local edit made meanwhile, composed into one).
 * - An incoming op (version V+1) moves the in-flight and pending ops past it with side "left";
 *   the incoming op is moved past them with side "right" and applied to the local text. This is
 *   what the server does to submitted ops, so every replica converges (protocol section 7.3).
 * - An ack (version V+1, our seq) confirms the in-flight op; the pending op then goes out.
 *   An op or ack whose version is not the next one means a message went missing: the client
 *   reconnects and resumes.
 * - Resume: reconnect with `version=V&client=<same id>&client_secret=<its secret>` (the first
 *   init gave the secret; without it the server refuses a client id it has seen, close 4403).
 *   init.ops lists every op after V; ours (same client and seq) counts as the ack. Then the in-flight op is resubmitted with the SAME
 *   seq (the server drops a (client, seq) it already has) and the pending op follows. If V is too
 *   old, init carries `last_seq` instead: the in-flight op is dropped when seq <= last_seq and the
 *   document is reloaded from init.code; unconfirmed local edits are rebased onto it (below).
 * - Rebase onto a reloaded document: what changed on the server since V is unknown op by op, so
 *   it is approximated by one diff hunk (longest common prefix/suffix) from the text at V to the
 *   fresh text; the unconfirmed local edits are transformed past that hunk and kept as the
 *   pending op. Inserted text is never dropped by a transform; a local delete inside a region
 *   the server rewrote is lost with that region, which is what a concurrent edit would do too.
 * - Offline: edits keep composing into the pending op and go out after the reconnect.
 *   Reconnects back off exponentially with jitter (bounded); closes 4400, 4403 and 4404 are final;
 *   after 4503 (a service behind the server is down) it retries about every second.
 * - Offsets: editors count UTF-16 code units, the protocol counts code points. The public API
 *   takes and emits UTF-16 offsets; everything inside (ops, cursors) counts code points.
 *
 * API
 *   const doc = new CollabClient({url, name?, clientId?, clientSecret?, token?, WebSocket?,
 *                                 minReconnectDelayMs?, maxReconnectDelayMs?, idleMs?,
 *                                 completeTimeoutMs?})
 *     url: "ws://host/ws/<room>" (also http(s):// or, in a browser, relative "/ws/<room>").
 *     clientId: stable id of this instance (8-64 of [A-Za-z0-9_-]); random by default. Never
 *       give two instances the same id: seq restarts at 1 in a new instance and the server
 *       drops a (client, seq) it has seen.
 *     clientSecret: the secret the server gave this client id in this room (doc.clientSecret),
 *       for an application that keeps a client id and its unconfirmed edits across page loads;
 *       without it, a client id the room has seen is refused (close 4403).
 *     token: a private room's link token. An account needs none: in a browser its session
 *       cookie goes with the connection; in Node, send a personal API token in a header through
 *       the WebSocket class: `WebSocket: class extends WS { constructor(url) {
 *       super(url, {headers: {Authorization: `Bearer ${apiToken}`}}); } }`.
 *   doc.on(event, fn) -> unsubscribe function; doc.off(event, fn)
 *     "ready"   {text, version, users, cursors, access}  first init; the text is usable from
 *               here on, and `access` ("edit" | "view") says whether this connection may edit
 *     "change"  {changes, text, version, user}     a remote change (never echoes local edits);
 *               changes: [{from, to, insert}], UTF-16 offsets in the text before, ascending,
 *               not overlapping (CodeMirror's ChangeSpec shape); `reset: true` and user null
 *               when the document was reloaded
 *     "status"  (status, {pending})  "connecting" | "connected" | "reconnecting" | "offline"
 *               | "closed"; also fired when `pending` (unconfirmed local edits) flips
 *     "users" (users), "join" {user, users}, "leave" {user, users}; "users" also fires after a
 *               reconnect, when cursors of users no longer listed are gone from doc.cursors.
 *               In a big room the server sends `presence` deltas instead of whole lists: the
 *               client applies them and fires the same events (one per user, then "users")
 *     "cursor"  {user, anchor, head}  another user's cursor, UTF-16 offsets in the current text
 *     "typing"  {user, typing}
 *     "access"  {access}  the server changed what this connection may do ("edit" | "view"):
 *               an owner changed our role or the room's link access; on "view", local edits
 *               not sent yet are taken back (a "change" event with `reset: true` shows it)
 *     "error"   {code, message[, closeCode]}  server errors (protocol section 11); closes 4400/
 *               4403/4404 (codes "bad_request", "forbidden", "not_found"; final: 4403 also
 *               when an owner removed our access while connected); "protocol"
 *               when the client had to resync or reload; "connect" when no socket could be made
 *   doc.applyLocalChange(from, to, insert)  replace [from, to) (UTF-16, current text) by insert
 *   doc.replaceText(newText)                the same as one diff hunk (for textarea bindings)
 *   doc.setCursor(anchor, head)             UTF-16; sent in code points, latest only, <= 1/50 ms;
 *                                           sent again once the edits it was mapped back through
 *                                           are confirmed (see _sendCursor)
 *   doc.setTyping(typing)
 *   doc.complete(line, column) -> Promise<items>   line from 1, column in UTF-16 units from 0
 *   doc.completions(line, column) -> Promise<{items, incomplete, stale}>   the same, with what
 *               the answer is worth: `incomplete` (the server's time budget ran out: asking again
 *               at the same place shortly usually gets the full answer) and `stale` (the text
 *               changed since asking, or had unconfirmed edits the server did not complete on:
 *               the items may fit another text; ask again once the edits are confirmed)
 *   History (docs/protocol.md, "History"); each resolves the server's answer, or rejects with an
 *   Error whose `code` is the server's error code:
 *   doc.textAt(version) / doc.textAt({at: "2026-11-27T13:47:29Z"}) -> {version, code, ts, time}
 *   doc.changes(since, limit?) -> {version, ops}   a page of the op log (limit <= 1000, def. 500)
 *   doc.times() -> {version, times: [[version, ts]]}   a time axis, a point per 100 versions
 *   doc.blame(version?) -> {version, lines}   doc.diff(from, to?) -> {from, to, hunks}
 *   doc.restore(version) -> {version, restored}   the text of `version` as a new change of ours
 *               (made against the version we have: what others committed since is kept); the
 *               change itself arrives as a "change" event before this resolves
 *   doc.history(get, params) -> the answer to any `history` request
 *   Authorship, with the option `authorship: true`: loaded once per connection, then kept
 *   current from the ops themselves (no more requests):
 *   doc.authorship -> null until loaded, then {runs: [{from, to, author}], lines: [{version,
 *               author, ts}], authors: Map(author -> {id, name, color})} for the current local
 *               text (UTF-16 offsets; author = client id; our unconfirmed edits are ours with
 *               version null; times of changes received live are this machine's clock)
 *     "authorship"  ()  the authorship was loaded or a confirmed change moved it
 *   doc.reconnect()                         retry now instead of after the backoff delay
 *   doc.close()                             unconfirmed edits are dropped: wait for pending false
 *   doc.text, doc.version, doc.users, doc.cursors, doc.status, doc.hasPendingChanges,
 *   doc.clientSecret (keep it with the client id and unconfirmed edits, if you store those),
 *   doc.access ("edit" | "view" from init; null before it, or from a server that does not say),
 *   doc.readOnly (true from init on a view connection, once the server answers `forbidden`, or
 *     while an `access` message says "view"),
 *   doc.error
 *   Also exported: `ot` (the op type), `toCodePointOffset`, `toUtf16Offset`, `mapOffset`,
 *   `opToChanges(text, op)` (an op as editor changes: [{from, to, insert}], UTF-16, e.g. to
 *   replay history entries) and `Authorship` (the authorship algorithm, for clients that keep
 *   it themselves).
 *
 * Usage with a textarea
 *   import {CollabClient, mapOffset} from "/static/rooms/collab-client.js";
 *   const area = document.querySelector("textarea");
 *   const doc = new CollabClient({url: `/ws/${roomId}`, name: "alice"});
 *   doc.on("ready", ({text}) => (area.value = text));
 *   doc.on("change", ({changes, text}) => {
 *     const selection = [area.selectionStart, area.selectionEnd].map((o) => mapOffset(o, changes));
 *     area.value = text;
 *     area.setSelectionRange(...selection);
 *   });
 *   area.addEventListener("input", () => doc.replaceText(area.value));
 *   area.addEventListener("keyup", () => doc.setCursor(area.selectionStart, area.selectionEnd));
 */

// --------------------------------------------------------------------------------------------
// Code points. JS strings are UTF-16; the protocol counts code points. Documents never hold
// NUL or lone surrogates (protocol section 2), so a high surrogate is always followed by its
// low one and one code point is one or two code units.
// --------------------------------------------------------------------------------------------

const isHighSurrogate = (unit) => unit >= 0xd800 && unit <= 0xdbff;
const isLowSurrogate = (unit) => unit >= 0xdc00 && unit <= 0xdfff;

/** True unless `text` contains U+0000 or a lone surrogate (the server refuses both). */
function isValidText(text) {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit === 0 || isLowSurrogate(unit)) return false;
    if (isHighSurrogate(unit)) {
      if (!isLowSurrogate(text.charCodeAt(i + 1))) return false;
      i++;
    }
  }
  return true;
}

/** Number of code points in `text`. */
function codePointLength(text) {
  let length = text.length;
  for (let i = 0; i < text.length; i++) {
    if (isHighSurrogate(text.charCodeAt(i)) && isLowSurrogate(text.charCodeAt(i + 1))) {
      length--;
      i++;
    }
  }
  return length;
}

/** The UTF-16 index `count` code points after UTF-16 index `start`, or -1 past the end. */
function skipCodePoints(text, start, count) {
  let index = start;
  for (let left = count; left > 0; left--) {
    if (index >= text.length) return -1;
    index += isHighSurrogate(text.charCodeAt(index)) && index + 1 < text.length ? 2 : 1;
  }
  return index;
}

/** Code point offset of UTF-16 offset `offset` in `text`; RangeError outside or inside a pair. */
export function toCodePointOffset(text, offset) {
  if (!Number.isInteger(offset) || offset < 0 || offset > text.length) {
    throw new RangeError(`offset ${offset} is outside the text (0..${text.length})`);
  }
  if (isLowSurrogate(text.charCodeAt(offset)) && isHighSurrogate(text.charCodeAt(offset - 1))) {
    throw new RangeError(`offset ${offset} splits a surrogate pair`);
  }
  let surrogatePairs = 0;
  for (let i = 0; i < offset - 1; i++) {
    if (isHighSurrogate(text.charCodeAt(i)) && isLowSurrogate(text.charCodeAt(i + 1))) {
      surrogatePairs++;
      i++;
    }
  }
  return offset - surrogatePairs;
}

/** UTF-16 offset of code point offset `offset` in `text`; RangeError past the end. */
export function toUtf16Offset(text, offset) {
  const index = Number.isInteger(offset) && offset >= 0 ? skipCodePoints(text, 0, offset) : -1;
  if (index < 0) throw new RangeError(`code point offset ${offset} is outside the text`);
  return index;
}

/**
 * Where UTF-16 offset `offset` of the text before `changes` (a "change" event's list) ends up.
 * An insert at the offset leaves it in place, as transformPosition does.
 */
export function mapOffset(offset, changes) {
  let shift = 0;
  for (const {from, to, insert} of changes) {
    if (offset <= from) break;
    if (offset < to) return from + shift;
    shift += insert.length - (to - from);
  }
  return offset + shift;
}

// --------------------------------------------------------------------------------------------
// The ot-text-unicode op type, ported from rooms/ot.py (same rules, same results; see that
// file for the reasoning). An op is a list of parts: a positive integer N (keep N code points),
// a non-empty string (insert it) or {d: N} (delete N code points). transform() and compose()
// accept only normalized ops, like the server: npm's ot-text-unicode does not converge on some
// non-normalized ones.
// --------------------------------------------------------------------------------------------

/** An op (or an op/document pair) that ot-text-unicode semantics do not allow. */
class InvalidOp extends Error {
  name = "InvalidOp";
}

// Part kinds: "skip" (number), "insert" (string), "delete" ({d}).
function kindOf(part) {
  if (typeof part === "number") return "skip";
  if (typeof part === "string") return "insert";
  return "delete";
}

function describe(value) {
  // Never echo a (possibly huge) value in full.
  const text = JSON.stringify(value) ?? String(value);
  return text.length <= 40 ? text : `${text.slice(0, 37)}...`;
}

function checkPart(part, index) {
  if (typeof part === "number") {
    if (!Number.isSafeInteger(part) || part <= 0) {
      throw new InvalidOp(`part ${index}: skip must be a positive integer, got ${part}`);
    }
    return;
  }
  if (typeof part === "string") {
    if (!part) throw new InvalidOp(`part ${index}: insert must not be empty`);
    if (!isValidText(part)) {
      throw new InvalidOp(`part ${index}: insert contains NUL or a lone surrogate`);
    }
    return;
  }
  if (part !== null && typeof part === "object" && !Array.isArray(part)) {
    const keys = Object.keys(part);
    if (keys.length !== 1 || keys[0] !== "d") {
      throw new InvalidOp(`part ${index}: delete must be exactly {"d": <positive integer>}`);
    }
    if (!Number.isSafeInteger(part.d) || part.d <= 0) {
      throw new InvalidOp(
        `part ${index}: delete count must be a positive integer, got ${describe(part.d)}`,
      );
    }
    return;
  }
  throw new InvalidOp(
    `part ${index}: expected a positive integer, a non-empty string or {"d": N}, ` +
      `got ${describe(part)}`,
  );
}

/**
 * Validate `op` and return ot-text-unicode's normalize() of it: adjacent parts of one kind
 * merged, a trailing skip dropped. Zero-length parts are refused, not dropped (the protocol
 * treats them as malformed). The result shares no objects with the input.
 */
function normalize(op) {
  if (!Array.isArray(op)) throw new InvalidOp(`op must be a list, got ${describe(op)}`);
  const result = [];
  op.forEach((part, index) => {
    checkPart(part, index);
    append(result, kindOf(part) === "delete" ? {d: part.d} : part);
  });
  return trim(result);
}

function requireNormalized(op, name) {
  if (!Array.isArray(op)) throw new InvalidOp(`${name} must be a list, got ${describe(op)}`);
  let lastKind = null;
  op.forEach((part, index) => {
    checkPart(part, index);
    const kind = kindOf(part);
    if (kind === lastKind) {
      throw new InvalidOp(`${name} is not normalized (adjacent parts of one kind at ${index})`);
    }
    lastKind = kind;
  });
  if (lastKind === "skip") throw new InvalidOp(`${name} is not normalized (trailing skip)`);
  return op;
}

/** Number of code points `op` reads from the document it applies to (skips + deletes). */
function baseLength(op) {
  let total = 0;
  for (const part of op) {
    if (typeof part === "number") total += part;
    else if (typeof part === "object") total += part.d;
  }
  return total;
}

/**
 * `text` with `op` applied. Refuses an op that reads past the end of the text (npm's package
 * clips an overlong delete; either way the op was made for another document).
 */
function apply(text, op) {
  if (!Array.isArray(op)) throw new InvalidOp(`op must be a list, got ${describe(op)}`);
  const pieces = [];
  let pos = 0; // UTF-16 index into text
  op.forEach((part, index) => {
    checkPart(part, index);
    if (typeof part === "string") {
      pieces.push(part);
      return;
    }
    const count = typeof part === "number" ? part : part.d;
    const end = skipCodePoints(text, pos, count);
    if (end < 0) {
      throw new InvalidOp(
        `op reads ${baseLength(op)} characters but the document has only ` +
          `${codePointLength(text)}`,
      );
    }
    if (typeof part === "number") pieces.push(text.slice(pos, end));
    pos = end;
  });
  pieces.push(text.slice(pos));
  return pieces.join("");
}

/** ot-text-unicode's makeAppend: drop empty parts, merge with a last part of the same kind. */
function append(op, part) {
  const kind = kindOf(part);
  if (kind === "delete" ? part.d === 0 : kind === "skip" ? part === 0 : part === "") return;
  if (op.length) {
    const last = op[op.length - 1];
    if (kindOf(last) === kind) {
      // Replace rather than mutate: delete objects may be shared with the caller's ops.
      op[op.length - 1] = kind === "delete" ? {d: last.d + part.d} : last + part;
      return;
    }
  }
  op.push(part);
}

function trim(op) {
  // append() merges skips, so at most one trailing skip can exist.
  if (op.length && typeof op[op.length - 1] === "number") op.pop();
  return op;
}

function partLength(part) {
  if (typeof part === "number") return part;
  if (typeof part === "string") return codePointLength(part);
  return part.d;
}

/**
 * ot-text-unicode's makeTake: consume an op part by part, splitting parts on demand. Past the
 * end the op behaves as an infinite skip. Offsets into inserts count UTF-16 units (so slicing
 * stays cheap); offsets into skips and deletes count code points.
 */
class Reader {
  constructor(op) {
    this.op = op;
    this.idx = 0;
    this.offset = 0;
  }

  peek() {
    return this.idx < this.op.length ? this.op[this.idx] : undefined;
  }

  /** Take up to `n` code points of the next part (all of it if n is -1); `indivisible` is "i"
   * to take inserts whole, "d" to take deletes whole. */
  take(n, indivisible = "") {
    if (this.idx === this.op.length) return n; // n === -1 callers use takeRest()
    const part = this.op[this.idx];
    const offset = this.offset;
    if (typeof part === "number") {
      const rest = part - offset;
      if (n === -1 || rest <= n) return this.next(rest);
      this.offset = offset + n;
      return n;
    }
    if (typeof part === "string") {
      const end = n === -1 || indivisible === "i" ? -1 : skipCodePoints(part, offset, n);
      if (end < 0 || end === part.length) return this.next(part.slice(offset));
      this.offset = end;
      return part.slice(offset, end);
    }
    const rest = part.d - offset;
    if (n === -1 || indivisible === "d" || rest <= n) return this.next({d: rest});
    this.offset = offset + n;
    return {d: n};
  }

  next(piece) {
    this.idx++;
    this.offset = 0;
    return piece;
  }

  /** Append everything not yet taken (npm's trailing `while (c = take(-1))`). */
  takeRest(out) {
    while (this.idx < this.op.length) append(out, this.take(-1));
  }
}

/**
 * Transform `op` so it applies after `other`; both were made against the same document. `side`
 * breaks ties between inserts at one position: "left" puts `op`'s insert first.
 */
function transform(op, other, side) {
  if (side !== "left" && side !== "right") {
    throw new RangeError(`side must be 'left' or 'right', got ${describe(side)}`);
  }
  requireNormalized(op, "op");
  requireNormalized(other, "other op");
  const left = side === "left";
  const out = [];
  const reader = new Reader(op);
  for (const part of other) {
    if (typeof part === "number") {
      let length = part;
      while (length > 0) {
        const chunk = reader.take(length, "i");
        append(out, chunk);
        // Our inserts take no room in `other`'s base document.
        if (typeof chunk !== "string") length -= partLength(chunk);
      }
    } else if (typeof part === "string") {
      // Two inserts at one spot: the left one goes first.
      if (left && typeof reader.peek() === "string") append(out, reader.take(-1));
      append(out, codePointLength(part));
    } else {
      let length = part.d;
      while (length > 0) {
        const chunk = reader.take(length, "i");
        if (typeof chunk === "number") {
          length -= chunk; // text we kept is gone already; nothing to emit
        } else if (typeof chunk === "string") {
          append(out, chunk);
        } else {
          length -= chunk.d; // both deleted the same text: the delete is already done
        }
      }
    }
  }
  reader.takeRest(out);
  return trim(out);
}

/** One op equivalent to applying `a` then `b`. */
function compose(a, b) {
  requireNormalized(a, "first op");
  requireNormalized(b, "second op");
  const out = [];
  const reader = new Reader(a);
  for (const part of b) {
    if (typeof part === "number") {
      let length = part;
      while (length > 0) {
        const chunk = reader.take(length, "d");
        append(out, chunk);
        // a's deletes are not in b's base document, so they use none of b's skip.
        if (typeof chunk !== "object") length -= partLength(chunk);
      }
    } else if (typeof part === "string") {
      append(out, part);
    } else {
      const length = part.d;
      let offset = 0;
      while (offset < length) {
        const chunk = reader.take(length - offset, "d");
        if (typeof chunk === "number") {
          append(out, {d: chunk}); // b deletes text a kept: delete it from the original
          offset += chunk;
        } else if (typeof chunk === "string") {
          offset += codePointLength(chunk); // b deletes text a inserted: the two cancel out
        } else {
          append(out, chunk);
        }
      }
    }
  }
  reader.takeRest(out);
  return trim(out);
}

/**
 * Where code point `position` ends up after `op`. An insert exactly at the position leaves it in
 * place; a position inside a deleted range moves to the start of that range.
 */
function transformPosition(position, op) {
  if (!Number.isSafeInteger(position) || position < 0) {
    throw new RangeError(`position must be a non-negative integer, got ${describe(position)}`);
  }
  if (!Array.isArray(op)) throw new InvalidOp(`op must be a list, got ${describe(op)}`);
  let cursor = position;
  let pos = 0;
  for (let index = 0; index < op.length && cursor > pos; index++) {
    const part = op[index];
    checkPart(part, index);
    if (typeof part === "number") {
      pos += part;
    } else if (typeof part === "string") {
      // pos tracks the new document too, so it moves with the cursor past the insert.
      const length = codePointLength(part);
      pos += length;
      cursor += length;
    } else {
      cursor -= Math.min(part.d, cursor - pos);
    }
  }
  return cursor;
}

/**
 * A normalized op turning `before` into `after` with one changed hunk: the longest common
 * prefix, then the longest common suffix of the rest (never overlapping the prefix); inside the
 * hunk the delete comes first. Same result as rooms/ot.py's diff (computed on UTF-16 units, then
 * moved off the middle of surrogate pairs, which gives the same code point boundaries).
 */
function diff(before, after) {
  if (before === after) return [];
  const shorter = Math.min(before.length, after.length);
  let prefix = 0;
  while (prefix < shorter && before.charCodeAt(prefix) === after.charCodeAt(prefix)) prefix++;
  if (prefix > 0 && isHighSurrogate(before.charCodeAt(prefix - 1))) prefix--;
  const limit = shorter - prefix;
  let suffix = 0;
  while (
    suffix < limit &&
    before.charCodeAt(before.length - 1 - suffix) === after.charCodeAt(after.length - 1 - suffix)
  ) {
    suffix++;
  }
  if (suffix > 0 && isLowSurrogate(before.charCodeAt(before.length - suffix))) suffix--;
  const deleted = codePointLength(before.slice(prefix, before.length - suffix));
  const inserted = after.slice(prefix, after.length - suffix);
  const out = [];
  if (prefix) out.push(codePointLength(before.slice(0, prefix)));
  if (deleted) out.push({d: deleted});
  if (inserted) out.push(inserted);
  return out;
}

export const ot = Object.freeze({
  InvalidOp,
  apply,
  baseLength,
  codePointLength,
  compose,
  diff,
  isValidText,
  normalize,
  transform,
  transformPosition,
});

// --------------------------------------------------------------------------------------------
// Client helpers
// --------------------------------------------------------------------------------------------

/** `op` (code points, applied to `text`) as editor changes: UTF-16 offsets into `text`. */
export function opToChanges(text, op) {
  const changes = [];
  let pos = 0;
  // A delete and an insert at one spot (in either order) become one replacement.
  let current = null;
  for (const part of op) {
    if (typeof part === "number") {
      pos = skipCodePoints(text, pos, part);
      current = null;
    } else if (typeof part === "string") {
      if (!current) changes.push((current = {from: pos, to: pos, insert: ""}));
      current.insert += part;
    } else {
      if (!current) changes.push((current = {from: pos, to: pos, insert: ""}));
      pos = skipCodePoints(text, pos, part.d);
      current.to = pos;
    }
  }
  return changes;
}

/**
 * The inverse of transformPosition for our own ops: where code point `position` of the text
 * after `op` was in the text before it. Our cursor lives in the local text, but the server knows
 * only the confirmed text, so the cursor is sent mapped back through the unconfirmed ops.
 */
function positionBefore(position, op) {
  let before = 0;
  let after = 0;
  for (const part of op) {
    if (after >= position) break;
    if (typeof part === "number") {
      const step = Math.min(part, position - after);
      before += step;
      after += step;
    } else if (typeof part === "string") {
      after += Math.min(codePointLength(part), position - after);
      // A position inside or right after our own insert maps to where the insert went.
      if (after >= position) return before;
    } else {
      before += part.d;
    }
  }
  return before + (position - after);
}

/** A random client id: 16 characters of the URL-safe alphabet, 96 random bits. */
function randomClientId() {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => alphabet[byte & 63]).join("");
}

const CLIENT_ID_RE = /^[A-Za-z0-9_-]{8,64}$/;
const OPEN = 1; // WebSocket.OPEN, the same in browsers and in `ws`
// Closes after which retrying cannot help (protocol section 4, close codes).
const FINAL_CLOSES = new Map([
  [4400, ["bad_request", "the server refused the connection parameters"]],
  [4403, ["forbidden", "no access to this room: it needs a valid link, or an account invited into it"]],
  [4404, ["not_found", "no such room"]],
]);
// Close 4503: the server is up but Redis or its database is not (protocol section 4). Retry
// about every second whatever the backoff reached, so that editing resumes within a second or
// so of the service's return rather than after a long backoff.
const UNAVAILABLE_CLOSE = 4503;
const UNAVAILABLE_RETRY_MS = 1000;
const CURSOR_INTERVAL_MS = 50;
// The server clears "typing" about 5 s after the last typing:true, so a user who keeps typing
// without sending edits (e.g. composing text in an IME) is re-announced well before that.
const TYPING_REFRESH_MS = 2000;
// Ops kept to move a cursor reported at an older version up to ours.
const RECENT_OPS_KEPT = 200;
const RATE_LIMIT_RETRY_MS = 1000;
const HISTORY_TIMEOUT_MS = 15_000;
const STABLE_CONNECTION_MS = 10_000;

/** The server broke the protocol's ordering (a gap, an unknown ack): resync by reconnecting. */
class ProtocolError extends Error {
  name = "ProtocolError";
}

export class CollabClient {
  constructor({
    url,
    name,
    clientId = randomClientId(),
    clientSecret,
    token,
    WebSocket = globalThis.WebSocket,
    minReconnectDelayMs = 250,
    maxReconnectDelayMs = 10_000,
    idleMs = 20_000,
    completeTimeoutMs = 10_000,
    authorship = false,
  } = {}) {
    if (typeof WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass one as the WebSocket option");
    }
    if (!CLIENT_ID_RE.test(clientId)) {
      throw new TypeError("clientId must be 8-64 characters of A-Z a-z 0-9 _ -");
    }
    // The server would refuse these with a final close 4400; say so before connecting.
    if (
      name !== undefined &&
      !(typeof name === "string" && isValidText(name) && name && codePointLength(name) <= 64)
    ) {
      throw new TypeError("name must be 1-64 characters");
    }
    const base = new URL(url, globalThis.location?.href);
    base.protocol = base.protocol.replace(/^http/, "ws");
    this._url = base;
    this._name = name;
    this._token = token;
    this._WebSocket = WebSocket;
    this.clientId = clientId;
    // Binds clientId in the room: sent on every connection once known (the first init has it).
    this._clientSecret = clientSecret ?? null;
    this._refusal = null; // why the server refused this connection, before its close
    this._minDelay = minReconnectDelayMs;
    this._maxDelay = maxReconnectDelayMs;
    this._idleMs = idleMs;
    this._completeTimeoutMs = completeTimeoutMs;

    this._listeners = new Map();
    this._socket = null;
    this._status = null;
    this._reportedPending = false;
    this._attempt = 0;
    this._reconnectTimer = null;
    this._connectedAt = null; // when the current connection's init arrived
    this._idleTimer = null;
    this._idleSince = 0;

    // Document state (see the header): text = serverText + inflight + pending.
    this._ready = false;
    this._text = "";
    this._serverText = "";
    this._version = null;
    this._inflight = null; // {op, seq}
    this._pending = null; // op
    this._lastSeq = 0;
    this._recentOps = []; // [{version, op}] as committed, for moving old cursors forward
    this._expectVersionTooOld = false;
    this._rateLimitTimer = null;

    this.users = [];
    this.userId = null;
    this.access = null;
    this.readOnly = false;
    this.error = null;
    this._cursors = new Map(); // user -> {anchor, head}, code points of the local text
    this._laterCursors = new Map(); // user -> cursor message for a version not reached yet
    this._myCursor = null; // {anchor, head}, code points of the local text
    this._cursorDirty = false;
    // The cursor last sent was mapped back through unconfirmed edits (see _sendCursor).
    this._cursorApproximate = false;
    this._cursorTimer = null;
    this._cursorSentAt = -Infinity;
    this._typing = false;
    this._typingSentAt = -Infinity;
    this._completions = new Map(); // id -> {resolve, reject, timer, text, unconfirmed}
    this._nextCompletionId = 1;
    this._requests = new Map(); // history and restore requests: id -> {resolve, reject, timer}
    this._nextRequestId = 1;

    // Authorship of the confirmed text (see the Authorship class), when asked for.
    this._trackAuthorship = authorship;
    this._authorship = null;
    this._authorshipWait = null; // {backlog}: confirmed ops that arrive while it loads
    this._authors = new Map(); // client id -> {id, name, color}
    this._clientOfUser = new Map(); // user id -> client id, learned from ops

    this._setStatus("connecting");
    this._connect();
  }

  // -- state ---------------------------------------------------------------------------------

  get text() {
    return this._text;
  }

  /** The last version the server confirmed (null before "ready"). */
  get version() {
    return this._version;
  }

  get status() {
    return this._status;
  }

  /** The secret binding our client id in the room (null until the first init). */
  get clientSecret() {
    return this._clientSecret;
  }

  /** True while local edits are not yet confirmed by the server. */
  get hasPendingChanges() {
    return this._inflight !== null || this._pending !== null;
  }

  /** Other users' cursors: [{user, anchor, head}] in UTF-16 offsets of the current text. */
  get cursors() {
    return Array.from(this._cursors, ([user, cursor]) => this._cursorEvent(user, cursor));
  }

  // -- events --------------------------------------------------------------------------------

  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  _emit(event, ...args) {
    for (const listener of this._listeners.get(event) ?? []) {
      try {
        listener(...args);
      } catch (error) {
        // A broken listener must not leave the protocol state half updated: report it
        // the way an uncaught error would be, outside our message handling.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  _setStatus(status) {
    const pending = this.hasPendingChanges;
    if (status === this._status && pending === this._reportedPending) return;
    this._status = status;
    this._reportedPending = pending;
    this._emit("status", status, {pending});
  }

  // -- editing (public) ----------------------------------------------------------------------

  /** Replace [from, to) (UTF-16 offsets of the current text) with `insert`. */
  applyLocalChange(from, to, insert = "") {
    this._requireEditable();
    if (typeof insert !== "string" || !isValidText(insert)) {
      throw new TypeError("insert must be a string without NUL or lone surrogates");
    }
    if (!(to >= from)) throw new RangeError(`change range ${from}..${to} is reversed`);
    const start = toCodePointOffset(this._text, from);
    const end = toCodePointOffset(this._text, to);
    const op = [];
    append(op, start);
    append(op, {d: end - start});
    append(op, insert);
    this._applyLocal(trim(op));
  }

  /** Make the text `newText` (e.g. a textarea's value after an input event), as one hunk. */
  replaceText(newText) {
    this._requireEditable();
    if (typeof newText !== "string" || !isValidText(newText)) {
      throw new TypeError("the text must be a string without NUL or lone surrogates");
    }
    this._applyLocal(diff(this._text, newText));
  }

  _requireEditable() {
    if (!this._ready) throw new Error("the document is not loaded yet: wait for 'ready'");
    if (this._status === "closed") throw new Error("the client is closed");
    if (this.readOnly) throw new Error("read-only: the server refused edits on this token");
  }

  _applyLocal(op) {
    if (!op.length) return;
    this._text = apply(this._text, op);
    this._pending = this._pending ? compose(this._pending, op) : op;
    this._moveCursors(op);
    this._flush();
    this._setStatus(this._status);
  }

  // -- presence (public) ---------------------------------------------------------------------

  /** Our cursor (UTF-16 offsets of the current text); sent coalesced, at most every 50 ms. */
  setCursor(anchor, head = anchor) {
    if (!this._ready || this.readOnly || this._status === "closed") return;
    this._myCursor = {
      anchor: toCodePointOffset(this._text, anchor),
      head: toCodePointOffset(this._text, head),
    };
    this._cursorDirty = true;
    this._scheduleCursor();
  }

  /** Whether we are typing; sent when it changes, and repeated every 2 s while true. */
  setTyping(typing) {
    typing = Boolean(typing);
    // Typing is ephemeral: nothing is kept for a later connection.
    if (this.readOnly || this._status !== "connected") return;
    const now = Date.now();
    if (typing === this._typing && !(typing && now - this._typingSentAt >= TYPING_REFRESH_MS)) {
      return;
    }
    this._typing = typing;
    this._typingSentAt = now;
    this._send({type: "typing", typing});
  }

  /**
   * Autocomplete at `line` (from 1) and `column` (UTF-16 units from 0) of the current text.
   * The server completes on its own current text, which lacks our unconfirmed edits.
   */
  complete(line, column) {
    return this.completions(line, column).then(({items}) => items);
  }

  /**
   * complete() with what the answer is worth: {items, incomplete, stale}. `incomplete`: the
   * server ran out of time and answered from a quick fallback; asking again at the same place
   * a moment later usually gets the full answer. `stale`: the answer may not fit the current
   * text, because it changed since asking or the server lacked some of our edits when it
   * answered; never show it as the answer for the current text.
   */
  completions(line, column) {
    if (this._status !== "connected") return Promise.reject(new Error("not connected"));
    // Lines end at \n, \r\n or \r, as the server counts them.
    const lineText = this._text.split(/\r\n|\r|\n/)[line - 1];
    let codePointColumn = column;
    // A line or column outside the text goes through as is: the server answers it.
    if (lineText !== undefined && Number.isInteger(column) && column <= lineText.length) {
      try {
        codePointColumn = toCodePointOffset(lineText, column);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    const id = this._nextCompletionId++;
    const message = {type: "complete", id, line, column: codePointColumn};
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._completions.delete(id);
        reject(new Error(`no completions within ${this._completeTimeoutMs} ms`));
      }, this._completeTimeoutMs);
      this._completions.set(id, {
        resolve,
        reject,
        timer,
        text: this._text,
        unconfirmed: this.hasPendingChanges,
      });
      this._send(message);
    });
  }

  // -- history (public) ----------------------------------------------------------------------

  /** The answer to a `history` request: `get` is one of text, changes, times, blame, authorship,
   * diff; `params` its parameters (docs/protocol.md, "History"). */
  history(get, params = {}) {
    return this._request({...params, type: "history", get});
  }

  /** The text at a version (a number) or at a time ({at: ISO 8601}). */
  textAt(when) {
    return this.history("text", typeof when === "number" ? {version: when} : when);
  }

  changes(since, limit = undefined) {
    return this.history("changes", limit === undefined ? {since} : {since, limit});
  }

  times() {
    return this.history("times");
  }

  blame(version = undefined) {
    return this.history("blame", version === undefined ? {} : {version});
  }

  diff(from, to = undefined) {
    return this.history("diff", to === undefined ? {from} : {from, to});
  }

  /** Make the text what it was at `version`, as one new change by us. */
  restore(version) {
    try {
      this._requireEditable();
    } catch (error) {
      return Promise.reject(error);
    }
    return this._request({type: "restore", version, base: this._version});
  }

  _request(message) {
    if (this._status !== "connected") return Promise.reject(new Error("not connected"));
    const id = this._nextRequestId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._requests.delete(id);
        reject(new Error(`no answer within ${HISTORY_TIMEOUT_MS} ms`));
      }, HISTORY_TIMEOUT_MS);
      this._requests.set(id, {resolve, reject, timer});
      this._send({...message, id});
    });
  }

  _onAnswer(message) {
    const waiting = this._requests.get(message.id);
    if (!waiting) return;
    this._requests.delete(message.id);
    clearTimeout(waiting.timer);
    // The envelope goes: what is left is the same body as the REST answer.
    const {type, id, get, ...answer} = message;
    if (type === "error") {
      waiting.reject(Object.assign(new Error(answer.message), {code: answer.code}));
    } else {
      waiting.resolve(answer);
    }
  }

  // -- authorship ------------------------------------------------------------------------------

  /** The authorship of the local text, or null until it is loaded (option `authorship`). */
  get authorship() {
    if (!this._authorship) return null;
    const local = this._authorship.copy();
    let text = this._serverText;
    for (const op of [this._inflight?.op, this._pending]) {
      if (!op) continue;
      local.apply(text, op, this.clientId, null, null);
      text = apply(text, op);
    }
    return {...local.view(this._text), authors: new Map(this._authors)};
  }

  _loadAuthorship() {
    const wait = (this._authorshipWait = {backlog: []});
    this.history("authorship", {version: this._version}).then(
      (answer) => {
        if (this._authorshipWait !== wait) return; // disconnected meanwhile: loaded again later
        this._authorshipWait = null;
        for (const author of answer.authors) {
          if (author.id && !this._authors.has(author.id)) this._authors.set(author.id, author);
        }
        const authorship = Authorship.decode(answer);
        for (const [version, before, op, client, ts] of wait.backlog) {
          if (version > answer.version) authorship.apply(before, op, client, version, ts);
        }
        this._authorship = authorship;
        this._nameAuthors();
        this._emit("authorship");
      },
      () => {
        if (this._authorshipWait === wait) this._authorshipWait = null;
      },
    );
  }

  /** A confirmed op (`before`: the confirmed text it applies to) moves the authorship. */
  _confirmedAuthorship(before, op, client, version, user) {
    if (!this._trackAuthorship) return;
    if (user) this._clientOfUser.set(user, client);
    const ts = Date.now();
    if (this._authorship) {
      this._authorship.apply(before, op, client, version, ts);
      this._nameAuthors();
      this._emit("authorship");
    } else if (this._authorshipWait) {
      this._authorshipWait.backlog.push([version, before, op, client, ts]);
    }
  }

  /** Authors who are here get the name and colour presence shows now. */
  _nameAuthors() {
    for (const user of this.users) {
      const client = this._clientOfUser.get(user.id);
      if (client) this._authors.set(client, {id: client, name: user.name, color: user.color});
    }
  }

  // -- connection (public) -------------------------------------------------------------------

  /** Reconnect now instead of waiting for the backoff delay (e.g. on the browser's "online"). */
  reconnect() {
    if (this._status === "closed" || this._socket) return;
    clearTimeout(this._reconnectTimer);
    this._setStatus(this._ready ? "reconnecting" : "connecting");
    this._connect();
  }

  /** Close for good. Unconfirmed edits are dropped: wait for `pending: false` first. */
  close() {
    if (this._status === "closed") return;
    const socket = this._socket;
    this._detach();
    socket?.close(1000);
    this._stopTimers();
    this._setStatus("closed");
  }

  // -- connection (internal) -----------------------------------------------------------------

  _connect() {
    this._reconnectTimer = null;
    const url = new URL(this._url);
    url.searchParams.set("mode", "ops");
    url.searchParams.set("client", this.clientId);
    if (this._clientSecret !== null) url.searchParams.set("client_secret", this._clientSecret);
    if (this._name !== undefined) url.searchParams.set("name", this._name);
    if (this._token !== undefined) url.searchParams.set("token", this._token);
    // Resume: init then carries every op after our version (protocol section 7.5).
    if (this._ready) url.searchParams.set("version", String(this._version));
    let socket;
    try {
      socket = new this._WebSocket(url.href);
    } catch (error) {
      this._emit("error", {code: "connect", message: String(error?.message ?? error)});
      this._scheduleReconnect();
      return;
    }
    this._socket = socket;
    // Events of a socket we have let go of are ignored: it may still deliver a late message.
    socket.addEventListener("message", (event) => {
      if (this._socket === socket) this._onMessage(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (this._socket === socket) this._onClose(event.code);
    });
    // An error is always followed by a close, which does the work; `ws` (an EventEmitter)
    // would throw an "error" that nobody listens to.
    socket.addEventListener("error", () => {});
    this._touch();
  }

  _onClose(code) {
    const refusal = this._refusal;
    this._detach();
    const final = FINAL_CLOSES.get(code);
    if (!final) {
      this._scheduleReconnect(code === UNAVAILABLE_CLOSE ? UNAVAILABLE_RETRY_MS : this._maxDelay);
      return;
    }
    this._stopTimers();
    this.error = {code: final[0], message: refusal ?? final[1], closeCode: code};
    this._setStatus("closed");
    this._emit("error", this.error);
  }

  /** Let go of the current socket (it may still be open) and forget what it owed us. */
  _detach() {
    this._socket = null;
    this._refusal = null;
    clearTimeout(this._idleTimer);
    clearTimeout(this._rateLimitTimer);
    this._idleTimer = this._rateLimitTimer = null;
    this._expectVersionTooOld = false;
    for (const {reject, timer} of [...this._completions.values(), ...this._requests.values()]) {
      clearTimeout(timer);
      reject(new Error("disconnected"));
    }
    this._completions.clear();
    this._requests.clear();
    this._authorshipWait = null; // loaded again on the next connection, if still missing
  }

  /** Drop the connection and resume on a new one (after a gap, a stall or a bad message). */
  _resync(reason) {
    this._emit("error", {code: "protocol", message: `resyncing: ${reason}`});
    const socket = this._socket;
    this._detach();
    socket?.close();
    this._scheduleReconnect();
  }

  _scheduleReconnect(maxDelay = this._maxDelay) {
    this._setStatus("offline");
    // A connection that stayed up a while starts the backoff over; one that keeps failing
    // right after init (or before it) keeps backing off.
    if (this._connectedAt !== null && Date.now() - this._connectedAt >= STABLE_CONNECTION_MS) {
      this._attempt = 0;
    }
    this._connectedAt = null;
    // Exponential backoff with jitter (half to all of the delay), capped.
    const delay = Math.min(maxDelay, this._minDelay * 2 ** this._attempt);
    this._attempt = Math.min(this._attempt + 1, 30);
    this._reconnectTimer = setTimeout(
      () => {
        this._setStatus(this._ready ? "reconnecting" : "connecting");
        this._connect();
      },
      delay * (0.5 + Math.random() / 2),
    );
  }

  _stopTimers() {
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._cursorTimer);
    this._reconnectTimer = this._cursorTimer = null;
  }

  /**
   * Liveness: heard nothing for idleMs -> ping; nothing for another idleMs -> the connection is
   * dead (a half-open TCP connection never closes by itself), so resync. This also bounds a
   * handshake or an init that never arrives.
   */
  _touch() {
    this._idleSince = Date.now();
    if (this._idleTimer === null) this._armIdle(this._idleMs);
  }

  _armIdle(delay) {
    this._idleTimer = setTimeout(() => {
      this._idleTimer = null;
      const silent = Date.now() - this._idleSince;
      if (silent >= 2 * this._idleMs) {
        this._resync(`nothing heard for ${silent} ms`);
      } else if (silent >= this._idleMs) {
        this._send({type: "ping"});
        this._armIdle(2 * this._idleMs - silent);
      } else {
        this._armIdle(this._idleMs - silent);
      }
    }, delay);
  }

  _send(message) {
    if (this._socket?.readyState !== OPEN) return false;
    this._socket.send(JSON.stringify(message));
    return true;
  }

  // -- receiving -----------------------------------------------------------------------------

  _onMessage(data) {
    this._touch();
    let message;
    try {
      message = JSON.parse(data);
      this._handle(message);
    } catch (error) {
      if (this._socket === null) return; // already resyncing
      // InvalidOp here means an op did not fit our document: our copy and the server's differ,
      // which resuming detects and repairs (see _onResume).
      this._resync(`${error.name}: ${error.message}`);
    }
  }

  _handle(message) {
    switch (message.type) {
      case "init":
        return this._onInit(message);
      case "op":
        this._receiveOp(message);
        return this._flush();
      case "ack":
        return this._onAck(message);
      case "history":
      case "restored":
        return this._onAnswer(message);
      case "join":
      case "leave":
        this.users = message.users;
        this._nameAuthors();
        if (message.type === "leave") this._dropCursor(message.user.id);
        this._emit(message.type, {user: message.user, users: message.users});
        return this._emit("users", message.users);
      case "presence":
        return this._onPresence(message);
      case "cursor":
        return this._onCursor(message);
      case "typing":
        return this._emit("typing", {user: message.user, typing: message.typing});
      case "completions":
        return this._onCompletions(message);
      case "access":
        return this._onAccess(message.access);
      case "error":
        if (this._requests.has(message.id)) return this._onAnswer(message);
        return this._onServerError(message);
      default:
        // pong only resets the idle timer; nothing else reaches an ops-mode connection.
        return undefined;
    }
  }

  /** A big room's presence delta (protocol section 8): users who left, users who joined or
   * were renamed (replaced by id, keeping their place); the same events as `join`/`leave`. */
  _onPresence({joined = [], left = []}) {
    const users = new Map(this.users.map((user) => [user.id, user]));
    for (const user of left) users.delete(user.id);
    for (const user of joined) users.set(user.id, user);
    this.users = [...users.values()];
    this._nameAuthors();
    for (const user of left) {
      this._dropCursor(user.id);
      this._emit("leave", {user, users: this.users});
    }
    for (const user of joined) this._emit("join", {user, users: this.users});
    this._emit("users", this.users);
  }

  _onInit(init) {
    this._connectedAt = Date.now();
    this.userId = init.user_id;
    if (init.client_secret) this._clientSecret = init.client_secret;
    this.users = init.users;
    this._clientOfUser.set(this.userId, this.clientId);
    this._nameAuthors();
    if (init.access === "edit" || init.access === "view") {
      // Known before the first edit: a view connection never shows text it cannot keep.
      this.access = init.access;
      this.readOnly = init.access === "view";
    }
    this._typing = false; // a new connection: the server knows nothing about us
    const first = !this._ready;
    if (first) {
      this._text = this._serverText = init.code;
      this._version = init.version;
      this._ready = true;
    } else if (!Array.isArray(init.ops) && "last_seq" in init) {
      this._onVersionTooOld(init);
    } else {
      this._onResume(init);
    }
    this._cursors.clear();
    this._laterCursors.clear();
    for (const cursor of init.cursors ?? []) {
      if (cursor.user !== this.userId) this._placeCursor(cursor);
    }
    this._setStatus("connected");
    if (first) {
      this._emit("ready", {
        text: this._text,
        version: this._version,
        users: this.users,
        cursors: this.cursors,
        access: this.access,
      });
    } else {
      this._emit("users", this.users);
    }
    // Resubmit the in-flight op with its seq and the new base (the server drops it if it has
    // it already), or send what is pending.
    if (this._inflight) this._sendInflight();
    else this._flush();
    if (this._myCursor) {
      this._cursorDirty = true;
      this._scheduleCursor();
    }
    if (this._trackAuthorship && !this._authorship) this._loadAuthorship();
  }

  /** Resume: init.ops holds every op after our version. */
  _onResume(init) {
    const ops = init.ops ?? [];
    const ours = (entry) =>
      this._inflight && entry.client === this.clientId && entry.seq === this._inflight.seq;
    const committed = ops.some(ours);
    try {
      for (const entry of ops) this._receiveOp(entry);
      if (this._version !== init.version || this._serverText !== init.code) {
        throw new ProtocolError("the resumed document differs from the server's");
      }
    } catch (error) {
      this._emit("error", {code: "protocol", message: `reloading: ${error.message}`});
      this._reload(init.code, init.version, committed ? "committed" : "unconfirmed");
    }
  }

  /** Resume from a version the server no longer has the ops after: reload and rebase. */
  _onVersionTooOld(init) {
    // The error that follows this init is expected, not news for the application.
    this._expectVersionTooOld = true;
    const lastSeq = init.last_seq ?? 0; // null: this client never committed an op
    const committed = this._inflight !== null && this._inflight.seq <= lastSeq;
    this._lastSeq = Math.max(this._lastSeq, lastSeq);
    this._reload(init.code, init.version, committed ? "committed" : "unconfirmed");
  }

  /**
   * Take `code` at `version` as the confirmed document and rebase the unconfirmed local edits
   * onto it (see the header). `inflightFate` says what became of the in-flight op:
   * "committed" (it is in `code`), "unconfirmed" (it is not: keep it) or "rejected" (the server
   * refused it: drop it).
   */
  _reload(code, version, inflightFate) {
    let base = this._serverText;
    let local = null;
    const inflight = this._inflight;
    if (inflight) {
      if (inflightFate === "unconfirmed") {
        local = inflight.op;
      } else {
        base = apply(base, inflight.op);
      }
      // A seq the server never committed is used again: seq grows by 1 per committed op.
      if (inflightFate !== "committed") this._lastSeq = inflight.seq - 1;
    }
    if (this._pending) local = local ? compose(local, this._pending) : this._pending;
    const rebased = local ? transform(local, diff(base, code), "left") : [];
    const before = this._text;
    if (code !== this._serverText || version !== this._version) {
      this._authorship = null; // it described the old document; _onInit loads it again
    }
    this._serverText = code;
    this._version = version;
    this._inflight = null;
    this._pending = rebased.length ? rebased : null;
    this._recentOps = [];
    this._text = rebased.length ? apply(code, rebased) : code;
    this._announceReset(before);
  }

  /** A committed op from the server (live, or an init.ops entry when resuming). */
  _receiveOp({version, op, user, client, seq}) {
    // Already known: the ack of a resubmitted op can come before the op's own broadcast.
    if (version <= this._version) return;
    if (version !== this._version + 1) {
      throw new ProtocolError(`op version ${version} after ${this._version}`);
    }
    // Our in-flight op, committed by a connection we lost: that is its ack.
    if (this._inflight && client === this.clientId && seq === this._inflight.seq) {
      this._commitInflight(version);
      return;
    }
    // Protocol section 7.3: our unconfirmed ops go left of the incoming op, the incoming op right of them.
    let incoming = op;
    let inflight = this._inflight?.op;
    let pending = this._pending;
    if (inflight) [inflight, incoming] = transformBoth(inflight, incoming);
    if (pending) [pending, incoming] = transformBoth(pending, incoming);
    // Everything is computed before anything changes, so a failure leaves the state intact.
    const serverText = apply(this._serverText, op);
    const before = this._text;
    const text = apply(before, incoming);
    const confirmedBefore = this._serverText;
    this._serverText = serverText;
    this._text = text;
    if (inflight) this._inflight.op = inflight;
    this._pending = pending;
    this._advance(version, op);
    this._moveCursors(incoming);
    this._emit("change", {changes: opToChanges(before, incoming), text, version, user});
    // After "change": an editor shows the new text before it redraws the authorship of it.
    this._confirmedAuthorship(confirmedBefore, op, client, version, user);
    this._placeLaterCursors();
  }

  _onAck({version, seq, duplicate}) {
    const inflight = this._inflight;
    if (!inflight || seq !== inflight.seq) {
      // A resubmission of an op we have since seen committed: nothing left to do.
      if (duplicate) return;
      throw new ProtocolError(`ack for seq ${seq}, which is not in flight`);
    }
    if (version !== this._version + 1) {
      // Committed by a connection we lost, at a version whose broadcast has not reached us yet:
      // that broadcast (our client and seq) will count as the ack.
      if (duplicate && version > this._version) return;
      throw new ProtocolError(`ack version ${version} after ${this._version}`);
    }
    this._commitInflight(version);
    this._flush();
  }

  _commitInflight(version) {
    const {op} = this._inflight;
    this._confirmedAuthorship(this._serverText, op, this.clientId, version, this.userId);
    this._serverText = apply(this._serverText, op);
    this._inflight = null;
    clearTimeout(this._rateLimitTimer);
    this._advance(version, op);
    this._setStatus(this._status);
    this._placeLaterCursors();
    if (this._cursorApproximate && !this._pending && this._myCursor) {
      // Everything is confirmed now, so our cursor can be sent exactly where it is.
      this._cursorDirty = true;
      this._scheduleCursor();
    }
  }

  /** Record that the confirmed document moved to `version` by `op`. */
  _advance(version, op) {
    this._version = version;
    this._recentOps.push({version, op});
    if (this._recentOps.length > RECENT_OPS_KEPT) this._recentOps.shift();
  }

  /** Send the pending op if nothing is in flight (one op in flight at a time). */
  _flush() {
    if (this._status !== "connected" || this._inflight || !this._pending || this.readOnly) return;
    this._inflight = {op: this._pending, seq: ++this._lastSeq};
    this._pending = null;
    this._sendInflight();
  }

  _sendInflight() {
    const {op, seq} = this._inflight;
    this._send({type: "op", version: this._version, seq, op});
  }

  _onServerError({code, message}) {
    if (code === "forbidden" && this._status !== "connected") {
      // Before init: the connection itself is refused (our client id with a wrong secret); the
      // close 4403 that follows reports it, with this message.
      this._refusal = message;
      return;
    }
    if (code === "version_too_old" && this._expectVersionTooOld) {
      this._expectVersionTooOld = false;
      return;
    }
    if ((code === "bad_op" || code === "too_large") && this._inflight) {
      // Only an op can cause these, and only one op is in flight: the server refused it and
      // will never apply it. Take it back; later edits are rebased as on a reload.
      this._reload(this._serverText, this._version, "rejected");
      this._flush();
    } else if (code === "forbidden") {
      // A view token: every edit, cursor and typing message is refused. Revert our edits.
      this.readOnly = true;
      if (this.hasPendingChanges) {
        this._pending = null;
        this._reload(this._serverText, this._version, "rejected");
      }
    } else if (code === "rate_limited" && this._inflight && !this._rateLimitTimer) {
      // The dropped message may have been our op. Resending it is safe: a (client, seq) the
      // server already has is answered with a duplicate ack and changes nothing.
      const {seq} = this._inflight;
      this._rateLimitTimer = setTimeout(() => {
        this._rateLimitTimer = null;
        if (this._inflight?.seq === seq && this._status === "connected") this._sendInflight();
      }, RATE_LIMIT_RETRY_MS);
    }
    this._emit("error", {code, message});
  }

  /**
   * The server changed what this connection may do (an owner changed our role or the room's
   * link access). On "view", edits not sent yet are taken back: they could never be applied. An
   * op in flight is left to the server, which acknowledges it (it came first) or refuses it
   * with `forbidden`, which takes it back too.
   */
  _onAccess(access) {
    if (access !== "edit" && access !== "view") return;
    this.access = access;
    this.readOnly = access === "view";
    if (this.readOnly) this._dropPending();
    else this._flush();
    this._emit("access", {access});
  }

  /** After the text was replaced wholesale (not by one op): move the cursors, refresh the
   * status and tell the editor what changed since `before`, marked as a reset. */
  _announceReset(before) {
    const change = diff(before, this._text);
    this._moveCursors(change);
    this._setStatus(this._status);
    if (change.length) {
      this._emit("change", {
        changes: opToChanges(before, change),
        text: this._text,
        version: this._version,
        user: null,
        reset: true,
      });
    }
  }

  _dropPending() {
    if (!this._pending) return;
    const before = this._text;
    this._pending = null;
    this._text = this._inflight ? apply(this._serverText, this._inflight.op) : this._serverText;
    this._announceReset(before);
  }

  _onCompletions({id, items, incomplete}) {
    const waiting = this._completions.get(id);
    if (!waiting) return;
    this._completions.delete(id);
    clearTimeout(waiting.timer);
    waiting.resolve({
      items,
      incomplete: incomplete === true,
      stale: waiting.unconfirmed || waiting.text !== this._text,
    });
  }

  // -- cursors -------------------------------------------------------------------------------

  _onCursor(message) {
    if (message.version > this._version) {
      // The ops it refers to have not reached us yet.
      this._laterCursors.set(message.user, message);
      return;
    }
    this._placeCursor(message);
  }

  /** Store another user's cursor (code points at `version`) in local coordinates. */
  _placeCursor({user, anchor, head, version}) {
    const oldest = this._recentOps.length ? this._recentOps[0].version : this._version + 1;
    if (version < oldest - 1) return; // too old to move forward; the next cursor will do
    const toLocal = (position) => {
      for (const entry of this._recentOps) {
        if (entry.version > version) position = transformPosition(position, entry.op);
      }
      if (this._inflight) position = transformPosition(position, this._inflight.op);
      if (this._pending) position = transformPosition(position, this._pending);
      return position;
    };
    const cursor = {anchor: toLocal(anchor), head: toLocal(head)};
    this._cursors.set(user, cursor);
    this._emit("cursor", this._cursorEvent(user, cursor));
  }

  /** Place the cursors that were waiting for a version we have now reached. */
  _placeLaterCursors() {
    for (const [user, cursor] of this._laterCursors) {
      if (cursor.version <= this._version) {
        this._laterCursors.delete(user);
        this._placeCursor(cursor);
      }
    }
  }

  _dropCursor(user) {
    this._cursors.delete(user);
    this._laterCursors.delete(user);
  }

  _cursorEvent(user, {anchor, head}) {
    return {user, anchor: toUtf16Offset(this._text, anchor), head: toUtf16Offset(this._text, head)};
  }

  /** Move every cursor we hold in local coordinates through `op`, just applied locally. */
  _moveCursors(op) {
    for (const cursor of this._cursors.values()) {
      cursor.anchor = transformPosition(cursor.anchor, op);
      cursor.head = transformPosition(cursor.head, op);
    }
    if (this._myCursor) {
      this._myCursor.anchor = transformPosition(this._myCursor.anchor, op);
      this._myCursor.head = transformPosition(this._myCursor.head, op);
    }
  }

  _scheduleCursor() {
    if (this._cursorTimer !== null) return; // the timer sends the latest cursor
    const wait = this._cursorSentAt + CURSOR_INTERVAL_MS - Date.now();
    if (wait <= 0) {
      this._sendCursor();
    } else {
      this._cursorTimer = setTimeout(() => {
        this._cursorTimer = null;
        this._sendCursor();
      }, wait);
    }
  }

  _sendCursor() {
    if (!this._cursorDirty || this._status !== "connected" || this.readOnly) return;
    // The server knows the confirmed text only: map back through pending, then in-flight.
    // A position in or right after our own unconfirmed insert maps to where the insert goes,
    // so the others see the caret before what we just typed until we send it again, which
    // _commitInflight does once nothing is unconfirmed.
    const toServer = (position) => {
      if (this._pending) position = positionBefore(position, this._pending);
      if (this._inflight) position = positionBefore(position, this._inflight.op);
      return position;
    };
    const {anchor, head} = this._myCursor;
    if (
      this._send({
        type: "cursor",
        anchor: toServer(anchor),
        head: toServer(head),
        version: this._version,
      })
    ) {
      this._cursorDirty = false;
      this._cursorSentAt = Date.now();
      this._cursorApproximate = this.hasPendingChanges;
    }
  }
}

/** [a past b with side left, b past a with side right]: both then apply after the other. */
function transformBoth(a, b) {
  return [transform(a, b, "left"), transform(b, a, "right")];
}

// --------------------------------------------------------------------------------------------
// Authorship: who inserted each code point and which change last touched each line, a port of
// the server's rooms/history/authorship.py (same rules, same results; see that file for the
// reasoning). The server sends it once (a `history` request, get "authorship"); the client then
// applies every confirmed op to it, so it stays current without asking again.
// --------------------------------------------------------------------------------------------

const NOBODY = 0;

/** The op as replacements of the text before it: [start, end, inserted], code points. */
function opHunks(op) {
  const hunks = [];
  let position = 0;
  let current = null;
  for (const part of op) {
    if (typeof part === "number") {
      current = null;
      position += part;
    } else if (typeof part === "string") {
      if (!current) hunks.push((current = [position, position, ""]));
      current[2] += part;
    } else {
      if (!current) hunks.push((current = [position, position, ""]));
      position += part.d;
      current[1] = position;
    }
  }
  return hunks;
}

function countLineBreaks(text, from, to) {
  let count = 0;
  for (let i = text.indexOf("\n", from); i >= 0 && i < to; i = text.indexOf("\n", i + 1)) count++;
  return count;
}

export class Authorship {
  /**
   * authors: keys (client ids; authors[0] is "" for nobody), runs: [[length, author index]]
   * in code points, lines: [[version, author index, ts]] one per line.
   */
  constructor(authors, runs, lines) {
    this.authors = [...authors];
    this._index = new Map(this.authors.map((key, index) => [key, index]));
    this.lengths = runs.map(([length]) => length);
    this.whos = runs.map(([, who]) => who);
    this.versions = lines.map(([version]) => version);
    this.lineAuthors = lines.map(([, who]) => who);
    this.times = lines.map(([, , ts]) => ts);
  }

  static initial(text, ts) {
    const lines = Array.from({length: countLineBreaks(text, 0, text.length) + 1}, () => [
      0,
      NOBODY,
      ts,
    ]);
    return new Authorship([""], text ? [[codePointLength(text), NOBODY]] : [], lines);
  }

  /** From the server's encoding (`authors` may be keys or {id, ...} objects). */
  static decode({authors, runs, lines}) {
    const pairs = [];
    for (let i = 0; i < runs.length; i += 2) pairs.push([runs[i], runs[i + 1]]);
    const records = [];
    for (let i = 0; i < lines.length; i += 4) {
      for (let n = 0; n < lines[i]; n++) records.push([lines[i + 1], lines[i + 2], lines[i + 3]]);
    }
    return new Authorship(
      authors.map((author) => (typeof author === "string" ? author : author.id)),
      pairs,
      records,
    );
  }

  copy() {
    const clone = Object.create(Authorship.prototype);
    clone.authors = [...this.authors];
    clone._index = new Map(this._index);
    clone.lengths = [...this.lengths];
    clone.whos = [...this.whos];
    clone.versions = [...this.versions];
    clone.lineAuthors = [...this.lineAuthors];
    clone.times = [...this.times];
    return clone;
  }

  /** [[length, author index]] with neighbours of one author merged. */
  runs() {
    const merged = [];
    for (let i = 0; i < this.lengths.length; i++) {
      const last = merged[merged.length - 1];
      if (last && last[1] === this.whos[i]) last[0] += this.lengths[i];
      else merged.push([this.lengths[i], this.whos[i]]);
    }
    return merged;
  }

  /** The server's canonical encoding (rooms/history/authorship.py Authorship.encode). */
  encode() {
    const dense = new Map([[NOBODY, 0]]);
    const authors = [""];
    const index = (who) => {
      if (!dense.has(who)) {
        dense.set(who, authors.length);
        authors.push(this.authors[who]);
      }
      return dense.get(who);
    };
    const runs = [];
    for (const [length, who] of this.runs()) runs.push(length, index(who));
    const lines = [];
    for (let i = 0; i < this.versions.length; i++) {
      const n = lines.length;
      const record = [this.versions[i], this.lineAuthors[i], this.times[i]];
      if (
        i > 0 &&
        record[0] === this.versions[i - 1] &&
        record[1] === this.lineAuthors[i - 1] &&
        record[2] === this.times[i - 1]
      ) {
        lines[n - 4]++;
      } else {
        lines.push(1, record[0], index(record[1]), record[2]);
      }
    }
    return {authors, runs, lines};
  }

  /** Record the normalized `op`, applied to `text` (the text before it), as change `version`
   * by `author` (a client id) at `ts`. */
  apply(text, op, author, version, ts) {
    const hunks = opHunks(op);
    if (!hunks.length) return;
    let who = this._index.get(author);
    if (who === undefined) {
      who = this.authors.length;
      this._index.set(author, who);
      this.authors.push(author);
    }
    // Line breaks are single UTF-16 units: the line work runs on UTF-16 indices of `text`.
    const at16 = [];
    let index = 0;
    let position = 0;
    for (const [start, end] of hunks) {
      index = skipCodePoints(text, index, start - position);
      const startIndex = index;
      index = skipCodePoints(text, index, end - start);
      position = end;
      at16.push([startIndex, index]);
    }
    for (let h = hunks.length - 1; h >= 0; h--) {
      const [start, end, inserted] = hunks[h];
      if (end > start) this._delete(start, end - start);
      if (inserted) this._insert(start, codePointLength(inserted), who);
    }
    const groups = [];
    let line = 0;
    let countedTo = 0;
    hunks.forEach(([, , inserted], h) => {
      const [start, end] = at16[h];
      line += countLineBreaks(text, countedTo, start);
      const first = line;
      line += countLineBreaks(text, start, end);
      countedTo = end;
      const last = groups[groups.length - 1];
      if (last && last[3] === first) {
        last[4] += text.slice(last[1], start) + inserted;
        last[1] = end;
        last[3] = line;
      } else {
        groups.push([start, end, first, line, inserted]);
      }
    });
    for (let g = groups.length - 1; g >= 0; g--) this._touchLines(text, ...groups[g], [version, who, ts]);
  }

  _touchLines(text, start, end, first, last, inserted, record) {
    const count = countLineBreaks(inserted, 0, inserted.length) + 1;
    const records = Array.from({length: count}, () => record);
    const lineEnd = (at) => {
      const found = text.indexOf("\n", at);
      return found < 0 ? text.length : found;
    };
    // The start of the line holding `at` (lastIndexOf treats a negative start as 0).
    const lineStart = (at) => (at > 0 ? text.lastIndexOf("\n", at - 1) + 1 : 0);
    const firstStart = lineStart(start);
    const lastStart = lineStart(end);
    const old = (n) => [this.versions[n], this.lineAuthors[n], this.times[n]];
    if (count === 1) {
      if (!inserted && first !== last) {
        if (start === firstStart && end === lastStart) records[0] = old(last);
        else if (start === lineEnd(start) && end === lineEnd(end)) records[0] = old(first);
      }
    } else {
      const keptFirst = inserted[0] === "\n" && start === lineEnd(start);
      if (keptFirst) records[0] = old(first);
      if (inserted[inserted.length - 1] === "\n" && end === lastStart && !(keptFirst && first === last)) {
        records[count - 1] = old(last);
      }
    }
    const span = last - first + 1;
    this.versions.splice(first, span, ...records.map((r) => r[0]));
    this.lineAuthors.splice(first, span, ...records.map((r) => r[1]));
    this.times.splice(first, span, ...records.map((r) => r[2]));
  }

  /** The run the code point at `position` is in, and where that run starts. */
  _runAt(position) {
    let start = 0;
    for (let i = 0; i < this.lengths.length; i++) {
      if (start + this.lengths[i] > position) return [i, start];
      start += this.lengths[i];
    }
    return [this.lengths.length, start];
  }

  _insert(position, length, who) {
    const {lengths, whos} = this;
    if (position === 0) {
      if (whos[0] === who) lengths[0] += length;
      else {
        lengths.unshift(length);
        whos.unshift(who);
      }
      return;
    }
    // The run the insert follows: the one holding the code point before it.
    const [i, start] = this._runAt(position - 1);
    const within = position - start;
    if (whos[i] === who) lengths[i] += length;
    else if (within === lengths[i]) {
      if (i + 1 < lengths.length && whos[i + 1] === who) lengths[i + 1] += length;
      else {
        lengths.splice(i + 1, 0, length);
        whos.splice(i + 1, 0, who);
      }
    } else {
      const rest = lengths[i] - within;
      lengths[i] = within;
      lengths.splice(i + 1, 0, length, rest);
      whos.splice(i + 1, 0, who, whos[i]);
    }
  }

  _delete(position, length) {
    const {lengths, whos} = this;
    let [i, start] = this._runAt(position);
    let within = position - start;
    while (length > 0) {
      const take = Math.min(length, lengths[i] - within);
      lengths[i] -= take;
      length -= take;
      if (lengths[i] === 0) {
        lengths.splice(i, 1);
        whos.splice(i, 1);
      } else i++;
      within = 0;
    }
    if (i > 0 && i < lengths.length && whos[i - 1] === whos[i]) {
      lengths[i - 1] += lengths[i];
      lengths.splice(i, 1);
      whos.splice(i, 1);
    }
  }

  /**
   * For an editor: [{from, to, author}] (UTF-16 offsets of `text`, author keys, nobody's text
   * left out) and [{version, author, ts}] per line (author null for version 0).
   */
  view(text) {
    const runs = [];
    let index = 0;
    for (const [length, who] of this.runs()) {
      const from = index;
      index = skipCodePoints(text, index, length);
      if (who !== NOBODY) runs.push({from, to: index, author: this.authors[who]});
    }
    const lines = this.versions.map((version, n) => ({
      version,
      author: this.lineAuthors[n] === NOBODY ? null : this.authors[this.lineAuthors[n]],
      ts: this.times[n],
    }));
    return {runs, lines};
  }
}
