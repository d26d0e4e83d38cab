// The client's protocol state machine against a scripted server: paths a live server reaches
// only by accident of timing (acks racing broadcasts, version_too_old, rejected ops, gaps) are
// played here message by message.
import assert from "node:assert/strict";
import {test} from "node:test";

import {CollabClient} from "../../rooms/static/rooms/collab-client.js";
import {nextEvent, scriptedWebSocket} from "./support.mjs";

const ID = "client-one";

/**
 * A client on a scripted socket, initialised with `code` (and `initFields`); reconnects only
 * when told to.
 */
function start(code = "hello", extra = {}, initFields = {}) {
  const {ScriptedSocket, sockets} = scriptedWebSocket();
  const doc = new CollabClient({
    url: "ws://server.test/ws/room",
    name: "alice",
    clientId: ID,
    WebSocket: ScriptedSocket,
    minReconnectDelayMs: 60_000, // never fires within a test: reconnect() is called instead
    ...extra,
  });
  const errors = [];
  const changes = [];
  doc.on("error", (error) => errors.push(error));
  doc.on("change", (change) => changes.push(change));
  sockets[0].open();
  sockets[0].deliver(init({code, ...initFields}));
  return {doc, sockets, errors, changes, socket: () => sockets.at(-1)};
}

function init(fields) {
  return {
    type: "init",
    room_id: "room",
    user_id: `u${Math.random()}`,
    name: "alice",
    version: 0,
    users: [],
    cursors: [],
    ...fields,
  };
}

const op = (version, op, client = "someone-else", seq = 1) => ({
  type: "op",
  version,
  op,
  user: "u2",
  client,
  seq,
});

test("connects in ops mode with its client id and name", () => {
  const {doc, sockets} = start();
  const params = sockets[0].url.searchParams;
  assert.equal(params.get("mode"), "ops");
  assert.equal(params.get("client"), ID);
  assert.equal(params.get("name"), "alice");
  assert.equal(params.has("version"), false);
  assert.equal(doc.status, "connected");
  doc.close();
});

test("one op in flight, later edits pending; remote ops transform both (protocol.md 7.6)", () => {
  const {doc, socket, changes} = start("a😀b");
  doc.applyLocalChange(4, 4, "X"); // after "b": UTF-16 offset 4, code point 3
  assert.deepEqual(socket().sentOfType("op"), [{type: "op", version: 0, seq: 1, op: [3, "X"]}]);
  doc.applyLocalChange(0, 0, "Y");
  doc.applyLocalChange(1, 1, "Z");
  assert.equal(socket().sentOfType("op").length, 1, "nothing else while one op is in flight");
  assert.equal(doc.text, "YZa😀bX");

  socket().deliver(op(1, [1, "🎉"]));
  assert.equal(doc.text, "YZa🎉😀bX");
  // UTF-16 offsets of the text before: after "YZa" is offset 3.
  assert.deepEqual(changes.at(-1).changes, [{from: 3, to: 3, insert: "🎉"}]);
  assert.equal(changes.at(-1).user, "u2");

  socket().deliver({type: "ack", version: 2, seq: 1});
  assert.deepEqual(socket().sentOfType("op").at(-1), {type: "op", version: 2, seq: 2, op: ["YZ"]});
  assert.equal(doc.hasPendingChanges, true);
  socket().deliver({type: "ack", version: 3, seq: 2});
  assert.equal(doc.hasPendingChanges, false);
  assert.equal(doc.version, 3);
  doc.close();
});

test("status events report the pending flag", () => {
  const {doc, socket} = start();
  const seen = [];
  doc.on("status", (status, {pending}) => seen.push(`${status}:${pending}`));
  doc.applyLocalChange(0, 0, "x");
  socket().deliver({type: "ack", version: 1, seq: 1});
  socket().drop();
  doc.close();
  assert.deepEqual(seen, ["connected:true", "connected:false", "offline:false", "closed:false"]);
});

test("resume: our op in init.ops is our ack; offline edits go out after it", () => {
  const {doc, sockets, socket} = start("hello");
  doc.applyLocalChange(5, 5, " world"); // seq 1, in flight
  doc.applyLocalChange(11, 11, "!"); // pending
  socket().drop();
  assert.equal(doc.status, "offline");
  doc.applyLocalChange(12, 12, "?"); // offline: composed into pending
  doc.reconnect();
  assert.equal(sockets.length, 2);
  const params = socket().url.searchParams;
  assert.equal(params.get("version"), "0");
  assert.equal(params.get("client"), ID);
  socket().open();
  socket().deliver(
    init({
      code: "// hello world",
      version: 2,
      ops: [
        {version: 1, op: [5, " world"], user: "old-me", client: ID, seq: 1},
        {version: 2, op: ["// "], user: "u2", client: "someone-else", seq: 7},
      ],
    }),
  );
  assert.equal(doc.text, "// hello world!?");
  assert.deepEqual(socket().sentOfType("op"), [{type: "op", version: 2, seq: 2, op: [14, "!?"]}]);
  doc.close();
});

test("resume: an in-flight op missing from init.ops is resubmitted with the same seq", () => {
  const {doc, socket} = start("hello");
  doc.applyLocalChange(5, 5, " world");
  socket().drop();
  doc.reconnect();
  socket().open();
  socket().deliver(
    init({
      code: "// hello",
      version: 1,
      ops: [{version: 1, op: ["// "], user: "u2", client: "someone-else", seq: 1}],
    }),
  );
  assert.deepEqual(socket().sentOfType("op"), [
    {type: "op", version: 1, seq: 1, op: [8, " world"]},
  ]);
  socket().deliver({type: "ack", version: 2, seq: 1});
  assert.equal(doc.hasPendingChanges, false);
  assert.equal(doc.text, "// hello world");
  doc.close();
});

test("the client secret from init goes out on every reconnect, with the op in flight", () => {
  const {doc, sockets, socket} = start("hello");
  assert.equal(sockets[0].url.searchParams.has("client_secret"), false, "none known yet");
  assert.equal(doc.clientSecret, null);
  sockets[0].deliver(init({code: "hello", client_secret: "secret-1"})); // as a real init has
  assert.equal(doc.clientSecret, "secret-1");
  doc.applyLocalChange(5, 5, "!"); // seq 1, in flight
  for (const secret of ["secret-1", "secret-2"]) {
    socket().drop();
    doc.reconnect();
    const params = socket().url.searchParams;
    assert.equal(params.get("client"), ID);
    assert.equal(params.get("client_secret"), secret);
    socket().open();
    // A new key on the server issues a new secret: the next connection sends that one.
    socket().deliver(init({code: "hello", version: 0, ops: [], client_secret: "secret-2"}));
    assert.deepEqual(socket().sentOfType("op"), [{type: "op", version: 0, seq: 1, op: [5, "!"]}]);
  }
  doc.close();
});

test("a clientSecret option is sent from the first connection on", () => {
  const {sockets, doc} = start("hello", {clientSecret: "kept-by-the-app"});
  assert.equal(sockets[0].url.searchParams.get("client_secret"), "kept-by-the-app");
  doc.close();
});

test("forbidden before init refuses the client id: final, with its message, not read-only", () => {
  const {doc, sockets, errors} = start("abc");
  doc.applyLocalChange(3, 3, "d");
  sockets[0].drop();
  doc.reconnect();
  sockets[1].open();
  const message = "client id 'client-one' is taken in this room: pass its client_secret";
  sockets[1].deliver({type: "error", code: "forbidden", message});
  sockets[1].drop(4403);
  assert.equal(doc.readOnly, false);
  assert.equal(doc.status, "closed");
  assert.deepEqual(errors.at(-1), {code: "forbidden", message, closeCode: 4403});
  assert.equal(errors.filter((error) => error.code === "forbidden").length, 1, "reported once");
});

test("a duplicate ack ahead of its broadcast waits for the broadcast, which acks the op", () => {
  const {doc, socket, errors} = start("hello");
  doc.applyLocalChange(0, 0, "> "); // seq 1
  socket().drop();
  doc.reconnect();
  socket().open();
  socket().deliver(init({code: "hello", version: 0, ops: []})); // committed after this init
  assert.deepEqual(socket().sentOfType("op"), [{type: "op", version: 0, seq: 1, op: ["> "]}]);
  doc.applyLocalChange(7, 7, "!"); // pending
  // The lost connection's copy was committed at 2, after someone else's change at 1.
  socket().deliver({type: "ack", version: 2, seq: 1, duplicate: true});
  assert.equal(doc.version, 0);
  socket().deliver(op(1, [5, " world"]));
  socket().deliver(op(2, ["> "], ID, 1));
  assert.equal(doc.version, 2);
  // Our pending "!" and the remote " world" were at one spot: ours goes first (side left).
  assert.equal(doc.text, "> hello! world");
  assert.deepEqual(socket().sentOfType("op").at(-1), {
    type: "op",
    version: 2,
    seq: 2,
    op: [7, "!"],
  });
  assert.deepEqual(errors, []);
  doc.close();
});

test("a duplicate ack at the next version acks; the late broadcast is then ignored", () => {
  const {doc, socket, errors} = start("hello");
  doc.applyLocalChange(0, 0, "> ");
  socket().drop();
  doc.reconnect();
  socket().open();
  socket().deliver(init({code: "hello", version: 0, ops: []}));
  socket().deliver({type: "ack", version: 1, seq: 1, duplicate: true});
  assert.equal(doc.hasPendingChanges, false);
  socket().deliver(op(1, ["> "], ID, 1));
  socket().deliver(op(2, [7, "!"]));
  assert.equal(doc.text, "> hello!");
  assert.deepEqual(errors, []);
  doc.close();
});

test("version_too_old: unconfirmed edits are rebased onto the reloaded text, seq reused", () => {
  const {doc, socket, errors, changes} = start("hello");
  doc.applyLocalChange(5, 5, " world"); // seq 1, never committed
  doc.applyLocalChange(11, 11, "!");
  socket().drop();
  doc.reconnect();
  socket().open();
  socket().deliver(init({code: "// header\nhello", version: 1500, last_seq: 0}));
  socket().deliver({type: "error", code: "version_too_old", message: "too old"});
  assert.equal(doc.text, "// header\nhello world!");
  assert.equal(doc.version, 1500);
  assert.deepEqual(socket().sentOfType("op"), [
    {type: "op", version: 1500, seq: 1, op: [15, " world!"]},
  ]);
  assert.deepEqual(changes.at(-1).changes, [{from: 0, to: 0, insert: "// header\n"}]);
  assert.equal(changes.at(-1).reset, true);
  assert.deepEqual(errors, [], "the expected version_too_old is not reported");
  doc.close();
});

test("version_too_old: an in-flight op with seq <= last_seq is dropped as committed", () => {
  const {doc, socket} = start("hello");
  doc.applyLocalChange(5, 5, " world"); // seq 1, committed meanwhile
  doc.applyLocalChange(11, 11, "!");
  socket().drop();
  doc.reconnect();
  socket().open();
  socket().deliver(init({code: "// hello world", version: 2000, last_seq: 1}));
  assert.equal(doc.text, "// hello world!");
  assert.deepEqual(socket().sentOfType("op"), [{type: "op", version: 2000, seq: 2, op: [14, "!"]}]);
  doc.close();
});

test("a version gap makes the client resume from its last version", () => {
  const {doc, sockets, socket, errors} = start("hello");
  socket().deliver(op(1, ["a"]));
  socket().deliver(op(3, ["c"]));
  assert.equal(sockets[0].closedByClient, true);
  assert.equal(doc.status, "offline");
  assert.equal(errors[0].code, "protocol");
  doc.reconnect();
  assert.equal(socket().url.searchParams.get("version"), "1");
  doc.close();
});

test("a refused op (too_large) is taken back; later edits are kept", () => {
  const {doc, socket, errors} = start("abc");
  doc.applyLocalChange(3, 3, "HUGE");
  doc.applyLocalChange(0, 0, "Y");
  socket().deliver({type: "error", code: "too_large", message: "the document would exceed"});
  assert.equal(doc.text, "Yabc");
  assert.deepEqual(socket().sentOfType("op").at(-1), {type: "op", version: 0, seq: 1, op: ["Y"]});
  assert.equal(errors.at(-1).code, "too_large");
  doc.close();
});

test("init's access 'view' makes the client read-only before anything is refused", () => {
  const {ScriptedSocket, sockets} = scriptedWebSocket();
  const doc = new CollabClient({url: "ws://server.test/ws/room", WebSocket: ScriptedSocket});
  const seen = [];
  doc.on("ready", ({access}) => seen.push([access, doc.readOnly]));
  sockets[0].open();
  sockets[0].deliver(init({code: "abc", access: "view"}));
  assert.deepEqual(seen, [["view", true]]);
  assert.equal(doc.access, "view");
  assert.throws(() => doc.applyLocalChange(0, 0, "x"), /read-only/);
  doc.setCursor(1, 1);
  doc.setTyping(true);
  assert.deepEqual(sockets[0].sent, [], "nothing the server would refuse is sent");
  doc.close();
});

test("init's access 'edit' leaves the client editable; without it access is unknown", () => {
  const {doc} = start("abc", {}, {access: "edit"});
  assert.equal(doc.access, "edit");
  assert.equal(doc.readOnly, false);
  doc.applyLocalChange(0, 0, "x");
  assert.equal(doc.text, "xabc");
  doc.close();
  const older = start("abc").doc; // a server that does not say
  assert.equal(older.access, null);
  assert.equal(older.readOnly, false);
  older.close();
});

test("forbidden (a view token) reverts local edits and makes the client read-only", () => {
  const {doc, socket} = start("abc");
  doc.applyLocalChange(0, 0, "x");
  socket().deliver({type: "error", code: "forbidden", message: "view token"});
  assert.equal(doc.text, "abc");
  assert.equal(doc.readOnly, true);
  assert.equal(doc.hasPendingChanges, false);
  assert.throws(() => doc.applyLocalChange(0, 0, "y"), /read-only/);
  doc.close();
});

test("access: view (a demotion) takes back unsent edits, leaves the op in flight to the server", () => {
  const {doc, socket, changes} = start("abc", {}, {access: "edit"});
  const accessEvents = [];
  doc.on("access", (event) => accessEvents.push(event));
  doc.applyLocalChange(3, 3, "1"); // in flight
  doc.applyLocalChange(4, 4, "2"); // pending: never sent
  socket().deliver({type: "access", access: "view"});
  assert.deepEqual(accessEvents, [{access: "view"}]);
  assert.equal(doc.readOnly, true);
  assert.equal(doc.access, "view");
  assert.equal(doc.text, "abc1");
  assert.equal(changes.at(-1).reset, true);
  assert.throws(() => doc.applyLocalChange(0, 0, "y"), /read-only/);
  // The server acknowledges the op it handled before the change: it stays.
  socket().deliver({type: "ack", version: 1, seq: 1});
  assert.equal(doc.text, "abc1");
  assert.equal(doc.hasPendingChanges, false);
  assert.equal(socket().sentOfType("op").length, 1);
  doc.close();
});

test("access: edit (a promotion) lets the client edit again, without reconnecting", () => {
  const {doc, sockets, socket} = start("abc", {}, {access: "view"});
  assert.equal(doc.readOnly, true);
  socket().deliver({type: "access", access: "edit"});
  assert.equal(doc.readOnly, false);
  assert.equal(doc.access, "edit");
  doc.applyLocalChange(0, 0, "x");
  assert.deepEqual(socket().sentOfType("op").at(-1).op, ["x"]);
  assert.equal(sockets.length, 1);
  doc.close();
});

for (const [closeCode, code] of [
  [4404, "not_found"],
  [4403, "forbidden"],
  [4400, "bad_request"],
]) {
  test(`close ${closeCode} is final: error state, no reconnect`, () => {
    const {doc, sockets, errors} = start();
    sockets[0].drop(closeCode);
    assert.equal(doc.status, "closed");
    assert.deepEqual(doc.error, errors.at(-1));
    assert.equal(doc.error.code, code);
    assert.equal(doc.error.closeCode, closeCode);
    doc.reconnect();
    assert.equal(sockets.length, 1, "no new connection");
    assert.throws(() => doc.applyLocalChange(0, 0, "x"), /closed/);
  });
}

test("after close 4503 (a service is down) it retries within a second, whatever its backoff", async () => {
  const {doc, sockets} = start(); // backoff of a minute: only 4503 may shorten it
  // Bounded well below the minute the backoff would wait.
  const retried = nextEvent(doc, "status", (status) => status === "reconnecting", 5000);
  sockets[0].drop(4503);
  assert.equal(doc.status, "offline");
  await retried;
  assert.equal(sockets.length, 2);
  doc.close();
});

test("our cursor goes out in code points of the confirmed text, coalesced", async () => {
  const {doc, socket} = start("a😀b");
  doc.setCursor(4, 4);
  assert.deepEqual(socket().sentOfType("cursor"), [
    {type: "cursor", anchor: 3, head: 3, version: 0},
  ]);
  doc.applyLocalChange(0, 0, "XY"); // in flight: the server does not have it yet
  const next = socket().nextSent("cursor");
  doc.setCursor(6, 6);
  doc.setCursor(2, 5); // replaces the one above before it is sent
  // After "XY" (local 2) is where the insert went (0); after "😀" (local 5 = cp 4) is cp 2.
  assert.deepEqual(await next, {type: "cursor", anchor: 0, head: 2, version: 0});
  assert.equal(socket().sentOfType("cursor").length, 2);
  doc.close();
});

test("our cursor is sent again, exactly, once the edits it was mapped through are confirmed", async () => {
  const {doc, socket} = start("ab");
  doc.applyLocalChange(2, 2, "c"); // in flight
  doc.setCursor(3, 3); // after our own "c": the server's text has no "c" yet
  assert.deepEqual(socket().sentOfType("cursor"), [
    {type: "cursor", anchor: 2, head: 2, version: 0},
  ]);
  doc.applyLocalChange(3, 3, "d"); // pending behind "c"
  const second = socket().nextSent("cursor");
  doc.setCursor(4, 4);
  assert.deepEqual(await second, {type: "cursor", anchor: 2, head: 2, version: 0});
  const exact = socket().nextSent("cursor");
  socket().deliver({type: "ack", version: 1, seq: 1}); // "d" goes out: still not exact
  socket().deliver({type: "ack", version: 2, seq: 2});
  assert.deepEqual(await exact, {type: "cursor", anchor: 4, head: 4, version: 2});
  assert.equal(socket().sentOfType("cursor").length, 3);
  doc.close();
});

test("remote cursors arrive in UTF-16 offsets of the local text, also ahead of their op", () => {
  const {doc, socket} = start("hello");
  doc.applyLocalChange(0, 0, "😀"); // unconfirmed: shifts every remote cursor by 2 UTF-16 units
  const cursors = [];
  doc.on("cursor", (cursor) => cursors.push(cursor));
  socket().deliver({type: "cursor", user: "u2", anchor: 1, head: 5, version: 0});
  assert.deepEqual(cursors.at(-1), {user: "u2", anchor: 3, head: 7});
  // A cursor for version 1 before op 1 is delivered waits for it.
  socket().deliver({type: "cursor", user: "u3", anchor: 6, head: 6, version: 1});
  assert.equal(cursors.length, 1);
  socket().deliver(op(1, [5, "!"]));
  assert.deepEqual(cursors.at(-1), {user: "u3", anchor: 8, head: 8});
  assert.deepEqual(doc.cursors, [
    {user: "u2", anchor: 3, head: 7},
    {user: "u3", anchor: 8, head: 8},
  ]);
  socket().deliver({type: "leave", user: {id: "u2", name: "bob"}, users: []});
  assert.deepEqual(
    doc.cursors.map((c) => c.user),
    ["u3"],
  );
  doc.close();
});

test("complete() converts the column to code points and resolves with the items", async () => {
  const {doc, socket} = start("x = 1\nd😀ef");
  const items = doc.complete(2, 4); // after "d😀e"
  const [request] = socket().sentOfType("complete");
  assert.deepEqual(request, {type: "complete", id: request.id, line: 2, column: 3});
  socket().deliver({type: "completions", id: request.id, items: [{name: "def"}]});
  assert.deepEqual(await items, [{name: "def"}]);
  const lost = doc.complete(1, 0);
  socket().drop();
  await assert.rejects(lost, /disconnected/);
  doc.close();
});

test("completions() says when an answer is incomplete or stale", async () => {
  const {doc, socket} = start("import os\nos.pa");
  const lastRequest = () => socket().sentOfType("complete").at(-1);
  const items = [{label: "pardir"}];

  const quick = doc.completions(2, 5);
  socket().deliver({type: "completions", id: lastRequest().id, items, incomplete: true});
  assert.deepEqual(await quick, {items, incomplete: true, stale: false});

  const full = doc.completions(2, 5);
  socket().deliver({type: "completions", id: lastRequest().id, items});
  assert.deepEqual(await full, {items, incomplete: false, stale: false});

  // The text moves on while the server answers: the answer is for the old text.
  const moved = doc.completions(2, 5);
  doc.applyLocalChange(15, 15, "t");
  socket().deliver({type: "completions", id: lastRequest().id, items});
  assert.equal((await moved).stale, true);

  // Asked with an edit unconfirmed: the server completed on a text without it.
  const early = doc.completions(2, 6);
  socket().deliver({type: "completions", id: lastRequest().id, items});
  assert.equal((await early).stale, true);
  doc.close();
});

test("an op in flight when a rate_limited error comes is resent with its seq", async () => {
  const {doc, socket} = start("abc");
  doc.applyLocalChange(3, 3, "d");
  const resent = socket().nextSent("op");
  socket().deliver({type: "error", code: "rate_limited", message: "slow down"});
  // Safe either way: a (client, seq) the server already has gets a duplicate ack.
  assert.deepEqual(await resent, {type: "op", version: 0, seq: 1, op: [3, "d"]});
  doc.close();
});

test("silence makes the client ping, then give the connection up and resume", async () => {
  const {doc, sockets, socket} = start("abc", {idleMs: 30});
  assert.deepEqual(await socket().nextSent("ping"), {type: "ping"});
  await nextEvent(doc, "status", (status) => status === "offline");
  assert.equal(sockets[0].closedByClient, true);
  doc.close();
});

test("typing is sent on change and refreshed while it lasts", () => {
  const {doc, socket} = start();
  doc.setTyping(true);
  doc.setTyping(true); // unchanged and recent: not repeated
  doc.setTyping(false);
  assert.deepEqual(
    socket()
      .sentOfType("typing")
      .map((m) => m.typing),
    [true, false],
  );
  doc.close();
});

test("a presence delta (big rooms) updates the user list and fires join, leave and users", async () => {
  const {doc, socket} = start();
  const [bob, carol, dave] = [
    {id: "u2", name: "bob", color: "#e6194b"},
    {id: "u3", name: "carol", color: "#3cb44b"},
    {id: "u4", name: "dave", color: "#4363d8"},
  ];
  socket().deliver({type: "join", user: bob, users: [...doc.users, bob]});
  socket().deliver({type: "join", user: carol, users: [...doc.users, carol]});
  socket().deliver({type: "cursor", user: "u2", anchor: 0, head: 0, version: doc.version});
  const events = [];
  for (const kind of ["join", "leave", "users"]) {
    doc.on(kind, (value) => events.push([kind, kind === "users" ? value.length : value.user.id]));
  }
  const renamed = {...carol, name: "caroline"};
  socket().deliver({type: "presence", joined: [dave, renamed], left: [bob], count: 3});
  const others = doc.users.filter((user) => user.id !== doc.userId);
  assert.deepEqual(others, [renamed, dave]); // a rename keeps its place, arrivals come last
  assert.deepEqual(events, [
    ["leave", "u2"],
    ["join", "u4"],
    ["join", "u3"],
    ["users", doc.users.length],
  ]);
  assert.equal(doc.cursors.filter((cursor) => cursor.user === "u2").length, 0);
  // A leave of a user the client never listed (it came and went) changes nothing else.
  socket().deliver({type: "presence", joined: [], left: [{id: "u9", name: "x"}], count: 3});
  assert.deepEqual(
    doc.users.filter((user) => user.id !== doc.userId),
    [renamed, dave],
  );
  doc.close();
});

test("join and leave update the user list", async () => {
  const {doc, socket} = start();
  const users = [{id: "u2", name: "bob"}];
  const joined = nextEvent(doc, "join");
  socket().deliver({type: "join", user: users[0], users});
  assert.deepEqual(await joined, {user: users[0], users});
  assert.deepEqual(doc.users, users);
  doc.close();
});
