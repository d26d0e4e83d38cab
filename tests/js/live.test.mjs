// collab-client.js against the real server (COLLAB_SERVER=http://host:port): convergence,
// UTF-16 edges, offline edits, lost acks, duplicate resubmissions, late joiners, final closes.
import assert from "node:assert/strict";
import {test} from "node:test";

import {CollabClient, ot, toUtf16Offset} from "../../rooms/static/rooms/collab-client.js";
import {
  SERVER,
  SKIP_LIVE,
  WebSocket,
  converged,
  createRoom,
  history,
  nextEvent,
  rawConnection,
  roomState,
  tappedWebSocket,
} from "./support.mjs";

const live = {skip: SKIP_LIVE, timeout: 30_000};

/** A connected client plus an editor-like mirror kept only from the events it emits. */
async function connect(t, url, options = {}) {
  const doc = new CollabClient({url, WebSocket, minReconnectDelayMs: 20, ...options});
  t.after(() => doc.close());
  const editor = {text: null};
  doc.on("ready", ({text}) => (editor.text = text));
  doc.on("change", ({changes, text}) => {
    // Apply back to front: every offset refers to the text before the change.
    for (const {from, to, insert} of [...changes].reverse()) {
      editor.text = editor.text.slice(0, from) + insert + editor.text.slice(to);
    }
    assert.equal(editor.text, text, "the change list must turn the old text into the new one");
  });
  const edit = (from, to, insert) => {
    doc.applyLocalChange(from, to, insert);
    editor.text = editor.text.slice(0, from) + insert + editor.text.slice(to);
  };
  const replace = (text) => {
    doc.replaceText(text);
    editor.text = text;
  };
  await nextEvent(doc, "ready");
  return {doc, editor, edit, replace};
}

/** Let the event loop run (messages flow) without waiting for anything in particular. */
const yieldToIo = () => new Promise((resolve) => setImmediate(resolve));

async function assertConverged(clients, roomId) {
  const docs = clients.map((client) => client.doc);
  await converged(docs);
  const server = await roomState(roomId);
  for (const {doc, editor} of clients) {
    assert.equal(doc.text, server.code);
    assert.equal(doc.version, server.version);
    assert.equal(editor.text, doc.text);
  }
  return server.code;
}

test(
  "two clients converge after concurrent edits at one position, emoji included",
  live,
  async (t) => {
    const {url, roomId} = await createRoom("a😀b");
    const alice = await connect(t, url, {name: "alice"});
    const bob = await connect(t, url, {name: "bob"});
    // Both insert right after the emoji (UTF-16 offset 3) before either hears of the other.
    alice.edit(3, 3, "🎉");
    bob.edit(3, 3, "🐍");
    bob.edit(0, 1, "A"); // replace "a"
    alice.edit(6, 6, "!"); // the end of "a😀🎉b": 1 + 2 + 2 + 1 UTF-16 units
    const text = await assertConverged([alice, bob], roomId);
    // Concurrent inserts at one spot end up in reverse commit order; either order is a merge.
    assert.ok(text === "A😀🐍🎉b!" || text === "A😀🎉🐍b!", text);
  },
);

test("two clients converge after many concurrent edits at random positions", live, async (t) => {
  const {url, roomId} = await createRoom("def f(x):\n    return x  # 😀\n");
  const clients = [await connect(t, url), await connect(t, url)];
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const pieces = ["x", "é", "😀", "🎉", "\n", "  ", "ab"];
  for (let round = 0; round < 60; round++) {
    for (const client of clients) {
      const text = client.doc.text;
      const length = ot.codePointLength(text);
      const start = Math.floor(random() * (length + 1));
      const end = Math.min(length, start + (random() < 0.3 ? Math.floor(random() * 3) : 0));
      const insert = random() < 0.8 ? pieces[Math.floor(random() * pieces.length)] : "";
      client.edit(toUtf16Offset(text, start), toUtf16Offset(text, end), insert);
    }
    await yieldToIo();
  }
  await assertConverged(clients, roomId);
});

test("replaceText diffs a textarea's new value; concurrent replacements merge", live, async (t) => {
  const {url, roomId} = await createRoom("first line\nsecond line\n");
  const alice = await connect(t, url);
  const bob = await connect(t, url);
  alice.replace("first line 😀\nsecond line\n");
  bob.replace("first line\nsecond 🐍 line\n");
  const text = await assertConverged([alice, bob], roomId);
  assert.equal(text, "first line 😀\nsecond 🐍 line\n");
});

test("edits made offline are delivered after the reconnect; nothing is lost", live, async (t) => {
  const {url, roomId} = await createRoom("shared\n");
  const {TappedSocket, tap} = tappedWebSocket();
  // A long backoff keeps alice offline until the test calls reconnect().
  const alice = await connect(t, url, {WebSocket: TappedSocket, minReconnectDelayMs: 60_000});
  const bob = await connect(t, url);
  const offline = nextEvent(alice.doc, "status", (status) => status === "offline");
  tap.sockets.at(-1).terminate();
  await offline;
  alice.edit(0, 0, "alice 1 😀\n");
  alice.edit(alice.doc.text.length, alice.doc.text.length, "alice 2\n");
  bob.edit(bob.doc.text.length, bob.doc.text.length, "bob 🐍\n");
  await nextEvent(bob.doc, "status", (status, {pending}) => !pending);
  assert.equal(alice.doc.status, "offline");
  assert.equal(alice.doc.hasPendingChanges, true);
  alice.doc.reconnect();
  const text = await assertConverged([alice, bob], roomId);
  assert.equal(text, "alice 1 😀\nshared\nalice 2\nbob 🐍\n");
});

test("an op whose ack is lost is not applied twice", live, async (t) => {
  const {url, roomId} = await createRoom("x");
  const {TappedSocket, tap} = tappedWebSocket();
  const alice = await connect(t, url, {WebSocket: TappedSocket});
  const bob = await connect(t, url);
  tap.dropIncoming = (message) => message.type === "ack";
  const ackArrived = tap.next((message) => message.type === "ack", "alice's ack");
  alice.edit(1, 1, " once");
  // The server committed it (bob sees it, alice's ack arrives), but alice's client never sees
  // the ack; then her socket dies.
  await nextEvent(bob.doc, "change");
  await ackArrived;
  tap.dropIncoming = () => false;
  tap.sockets.at(-1).terminate();
  const text = await assertConverged([alice, bob], roomId);
  assert.equal(text, "x once");
  const mine = (await history(roomId)).ops.filter((entry) => entry.client === alice.doc.clientId);
  assert.deepEqual(
    mine.map((entry) => entry.seq),
    [1],
  );
  // Resumed: init.ops carried the op back as our ack, so it was not sent again.
  const acks = tap.received.filter((message) => message.type === "ack");
  assert.equal(acks.length, 1, "the server acked one op only");
});

test(
  "a resubmitted op an earlier connection committed is acked as a duplicate, once",
  live,
  async (t) => {
    const {url, roomId} = await createRoom("base");
    const {TappedSocket, tap} = tappedWebSocket();
    const alice = await connect(t, url, {WebSocket: TappedSocket, minReconnectDelayMs: 60_000});
    const bob = await connect(t, url);
    // 1. Alice's op never leaves (held), and her connection dies.
    tap.holdOps = true;
    alice.edit(4, 4, " + edit");
    const offline = nextEvent(alice.doc, "status", (status) => status === "offline");
    tap.sockets.at(-1).terminate();
    await offline;
    // 2. She resumes; nothing of hers is committed, so she resubmits seq 1 (held again).
    const resumed = nextEvent(alice.doc, "status", (status) => status === "connected");
    alice.doc.reconnect();
    await resumed;
    assert.equal(tap.held.length, 2);
    const [original, resubmission] = tap.held.map(({data}) => JSON.parse(data));
    assert.equal(resubmission.seq, original.seq);
    // 3. The first frame reaches the server late, on another connection with her client id
    //    (as if the dead connection had delivered it): its broadcast is her ack.
    const ghost = await rawConnection(url, {
      client: alice.doc.clientId,
      client_secret: alice.doc.clientSecret,
    });
    t.after(() => ghost.socket.close());
    const acked = nextEvent(alice.doc, "status", (status, {pending}) => !pending);
    ghost.socket.send(tap.held[0].data);
    assert.equal((await ghost.next("ack")).duplicate, undefined);
    await acked;
    // 4. Now the resubmission arrives: the server answers it as a duplicate and changes nothing.
    const duplicate = tap.next((message) => message.type === "ack", "the resubmission's ack");
    tap.holdOps = false;
    tap.held[1].socket.send(tap.held[1].data);
    const {type, version, seq, duplicate: isDuplicate} = await duplicate;
    assert.deepEqual(
      {type, version, seq, isDuplicate},
      {type: "ack", version: original.version + 1, seq: 1, isDuplicate: true},
    );
    alice.edit(alice.doc.text.length, alice.doc.text.length, "!");
    const text = await assertConverged([alice, bob], roomId);
    assert.equal(text, "base + edit!");
    const mine = (await history(roomId)).ops.filter((entry) => entry.client === alice.doc.clientId);
    assert.deepEqual(
      mine.map((entry) => entry.seq),
      [1, 2],
    );
  },
);

test(
  "our client id is bound: another client naming it is refused, ours resumes with the secret",
  live,
  async (t) => {
    const {url, roomId} = await createRoom("mine\n");
    const {TappedSocket, tap} = tappedWebSocket();
    const alice = await connect(t, url, {WebSocket: TappedSocket, minReconnectDelayMs: 60_000});
    const bob = await connect(t, url);
    alice.edit(5, 5, "alice\n");
    await assertConverged([alice, bob], roomId);
    assert.match(alice.doc.clientSecret, /^[A-Za-z0-9_-]{43}$/);

    // Someone who saw alice's client id in an op broadcast tries to use it.
    const impostor = new CollabClient({url, WebSocket, clientId: alice.doc.clientId});
    t.after(() => impostor.close());
    const refused = await nextEvent(impostor, "error");
    assert.equal(refused.code, "forbidden");
    assert.equal(refused.closeCode, 4403);
    assert.match(refused.message, /client_secret/);
    assert.equal(impostor.status, "closed");

    // Alice loses her connection, edits offline and resumes: her secret goes with her.
    const offline = nextEvent(alice.doc, "status", (status) => status === "offline");
    tap.sockets.at(-1).terminate();
    await offline;
    alice.edit(0, 0, "# ");
    alice.doc.reconnect();
    const text = await assertConverged([alice, bob], roomId);
    assert.equal(text, "# mine\nalice\n");
    assert.equal(
      new URL(tap.sockets.at(-1).url).searchParams.get("client_secret"),
      alice.doc.clientSecret,
    );
  },
);

test("a client joining late gets the same text", live, async (t) => {
  const {url, roomId} = await createRoom("");
  const alice = await connect(t, url);
  const bob = await connect(t, url);
  alice.edit(0, 0, "print('😀')\n");
  bob.edit(0, 0, "# 🐍\n");
  const text = await assertConverged([alice, bob], roomId);
  const carol = await connect(t, url);
  assert.equal(carol.doc.text, text);
  assert.equal(carol.doc.version, alice.doc.version);
  assert.ok(carol.doc.users.length >= 3);
});

test("an unknown room closes 4404: a final error state, no reconnect", live, async (t) => {
  const {TappedSocket, tap} = tappedWebSocket();
  const doc = new CollabClient({
    url: `${SERVER.replace(/^http/, "ws")}/ws/no-such-room-${Date.now()}`,
    WebSocket: TappedSocket,
    minReconnectDelayMs: 20,
  });
  t.after(() => doc.close());
  const error = await nextEvent(doc, "error");
  assert.deepEqual(error, {code: "not_found", message: "no such room", closeCode: 4404});
  assert.equal(doc.status, "closed");
  assert.equal(tap.sockets.length, 1);
  assert.equal(doc._reconnectTimer, null, "no reconnect is scheduled");
});
