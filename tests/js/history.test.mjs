// collab-client.js's history API against the real server (COLLAB_SERVER=http://host:port): the
// text at a version or time, pages, blame, diffs, restore, and authorship kept live from the ops.
import assert from "node:assert/strict";
import {test} from "node:test";

import {CollabClient, ot} from "../../rooms/static/rooms/collab-client.js";
import {
  SERVER,
  SKIP_LIVE,
  WebSocket,
  converged,
  createRoom,
  history,
  nextEvent,
  roomState,
  until,
  within,
} from "./support.mjs";

const live = {skip: SKIP_LIVE, timeout: 30_000};

async function connect(t, url, options = {}) {
  const doc = new CollabClient({url, WebSocket, minReconnectDelayMs: 20, ...options});
  t.after(() => doc.close());
  await nextEvent(doc, "ready");
  return doc;
}

async function rest(path) {
  const response = await within(fetch(`${SERVER}${path}`), `GET ${path}`);
  assert.equal(response.status, 200, path);
  return response.json();
}

/** The author (client id) of every code point, from a doc's view (UTF-16 runs of its text). */
function authorsOfView(text, runs) {
  const authors = [];
  let index = 0;
  for (const character of text) {
    const run = runs.find(({from, to}) => from <= index && index < to);
    authors.push(run ? run.author : "");
    index += character.length;
  }
  return authors;
}

/** The same from the server's encoding (code point runs). */
function authorsOfAnswer({authors, runs}) {
  const out = [];
  for (let i = 0; i < runs.length; i += 2) {
    for (let n = 0; n < runs[i]; n++) out.push(authors[runs[i + 1]].id);
  }
  return out;
}

test("authorship kept from the ops matches the server's, under concurrent edits", live, async (t) => {
  const {url, roomId} = await createRoom("start 😀\n");
  const alice = await connect(t, url, {name: "alice", clientId: "alice-js-01", authorship: true});
  const bob = await connect(t, url, {name: "bob", clientId: "bob-js-0001", authorship: true});
  await until([alice, bob], ["authorship"], () => alice.authorship && bob.authorship, "authorship");
  // Both type at the same time, in several places, emoji included.
  for (let round = 0; round < 15; round++) {
    alice.applyLocalChange(0, 0, `a${round}😀`);
    bob.applyLocalChange(bob.text.length, bob.text.length, `\nb${round}`);
    if (round % 5 === 4) bob.applyLocalChange(2, 4, "");
    await new Promise((resolve) => setImmediate(resolve));
  }
  await converged([alice, bob]);
  const server = await rest(`/rooms/${roomId}/authorship`);
  assert.equal(server.version, alice.version);
  const expected = authorsOfAnswer(server);
  const lineVersions = [];
  for (let i = 0; i < server.lines.length; i += 4) {
    for (let n = 0; n < server.lines[i]; n++) lineVersions.push(server.lines[i + 1]);
  }
  for (const doc of [alice, bob]) {
    const {runs, lines, authors} = doc.authorship;
    assert.deepEqual(authorsOfView(doc.text, runs), expected);
    assert.deepEqual(
      lines.map(({version}) => version),
      lineVersions,
    );
    assert.equal(authors.get("alice-js-01").name, "alice");
    assert.equal(authors.get("bob-js-0001").name, "bob");
    assert.match(authors.get("bob-js-0001").color, /^#[0-9a-f]{6}$/);
  }
  // Unconfirmed edits are ours, with no version yet.
  alice.applyLocalChange(0, 0, "Z");
  const mine = alice.authorship;
  assert.equal(mine.runs[0].author, "alice-js-01");
  assert.equal(mine.lines[0].version, null);
});

test("history requests: text at a version and a time, pages, blame, diff", live, async (t) => {
  const {url, roomId} = await createRoom("one\n");
  const doc = await connect(t, url, {name: "carol", clientId: "carol-js-01"});
  doc.applyLocalChange(4, 4, "two\n");
  await converged([doc]);
  doc.applyLocalChange(0, 3, "ONE");
  await converged([doc]);
  const atOne = await doc.textAt(1);
  assert.deepEqual([atOne.version, atOne.code], [1, "one\ntwo\n"]);
  const now = await doc.textAt({at: new Date(Date.now() + 60_000).toISOString()});
  assert.equal(now.version, 2);
  const page = await doc.changes(0, 1);
  assert.deepEqual(
    page.ops.map((entry) => entry.version),
    [1],
  );
  const blame = await doc.blame();
  assert.deepEqual(
    blame.lines.map((line) => line.users.map((user) => user.name)),
    [["carol"], ["carol"], []],
  );
  assert.deepEqual(blame, await rest(`/rooms/${roomId}/blame`));
  const diff = await doc.diff(0);
  assert.deepEqual(diff.hunks[0].lines, ["-one", "+ONE", "+two"]);
  assert.equal((await doc.times()).version, 2);
  await assert.rejects(doc.textAt(7), (error) => error.code === "bad_message");
  await assert.rejects(doc.history("nothing"), (error) => error.code === "bad_message");
});

test("restore is one change everyone receives, and the history stays", live, async (t) => {
  const {url, roomId} = await createRoom("v0\n");
  const editor = await connect(t, url, {name: "dan"});
  const other = await connect(t, url, {name: "erin"});
  editor.applyLocalChange(3, 3, "v1\n");
  await converged([editor, other]);
  editor.applyLocalChange(0, 2, "V0");
  await converged([editor, other]);
  const received = nextEvent(other, "change", ({version}) => version === 3);
  const answer = await editor.restore(0);
  assert.deepEqual(answer, {version: 3, restored: 0});
  assert.equal((await received).text, "v0\n");
  assert.equal(editor.text, "v0\n");
  assert.equal(editor.version, 3);
  const {ops} = await history(roomId);
  assert.deepEqual(
    ops.map((entry) => entry.version),
    [1, 2, 3],
  );
  assert.equal((await roomState(roomId)).code, "v0\n");
  assert.equal(ot.apply(ot.apply("v0\n", ops[0].op), ops[1].op), "V0\nv1\n");
});
