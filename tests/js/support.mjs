// Shared helpers of the client tests: bounded waits, a scripted WebSocket, live-server access.
import WebSocket from "ws";

export const WAIT_MS = 5000;

/** Resolve with `promise`'s value, or reject after `ms` saying what was awaited. */
export function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The next `event` of `doc` whose arguments satisfy `accept`, within a bounded time. */
export function nextEvent(doc, event, accept = () => true, ms = WAIT_MS) {
  let off;
  const seen = new Promise((resolve) => {
    off = doc.on(event, (...args) => {
      if (accept(...args)) resolve(args[0]);
    });
  });
  return within(seen, `"${event}"`, ms).finally(off);
}

/** Wait (event-driven, bounded) until `condition()` holds, checked after each of `events`. */
export function until(docs, events, condition, what, ms = WAIT_MS) {
  if (condition()) return Promise.resolve();
  const offs = [];
  const reached = new Promise((resolve) => {
    for (const doc of docs) {
      for (const event of events) {
        offs.push(
          doc.on(event, () => {
            if (condition()) resolve();
          }),
        );
      }
    }
  });
  return within(reached, what, ms).finally(() => offs.forEach((off) => off()));
}

/** Wait until every client is connected, has nothing unconfirmed and is at one version. */
export function converged(docs, ms = WAIT_MS) {
  const done = () =>
    docs.every(
      (doc) =>
        doc.status === "connected" && !doc.hasPendingChanges && doc.version === docs[0].version,
    );
  const state = () =>
    docs.map((doc) => `${doc.status}/v${doc.version}/pending=${doc.hasPendingChanges}`).join(", ");
  return until(docs, ["change", "status"], done, "convergence", ms).catch((error) => {
    throw new Error(`${error.message} (${state()})`);
  });
}

/**
 * A WebSocket class the test drives by hand: `sockets` lists every instance the client made;
 * `open()`, `deliver(message)` and `drop(code)` play the server's part, `sent` records what the
 * client sent (parsed).
 */
export function scriptedWebSocket() {
  const sockets = [];
  class ScriptedSocket {
    constructor(url) {
      this.url = new URL(url);
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = false;
      this.listeners = new Map();
      this.onSend = null;
      sockets.push(this);
    }

    addEventListener(type, listener) {
      if (!this.listeners.has(type)) this.listeners.set(type, []);
      this.listeners.get(type).push(listener);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      const message = JSON.parse(data);
      this.sent.push(message);
      this.onSend?.(message);
    }

    close() {
      this.readyState = 3;
      this.closedByClient = true;
    }

    emit(type, event) {
      for (const listener of this.listeners.get(type) ?? []) listener(event);
    }

    open() {
      this.readyState = 1;
      this.emit("open", {});
    }

    deliver(message) {
      this.emit("message", {data: JSON.stringify(message)});
    }

    drop(code = 1006) {
      this.readyState = 3;
      this.emit("close", {code});
    }

    sentOfType(type) {
      return this.sent.filter((message) => message.type === type);
    }

    /** The next message of `type` this socket sends, within a bounded time. */
    nextSent(type) {
      return within(
        new Promise((resolve) => {
          this.onSend = (message) => {
            if (message.type === type) resolve(message);
          };
        }),
        `a "${type}" message from the client`,
      );
    }
  }
  return {ScriptedSocket, sockets};
}

// -- live server ------------------------------------------------------------------------------

export const SERVER = process.env.COLLAB_SERVER;
export const SKIP_LIVE = SERVER
  ? false
  : "set COLLAB_SERVER=http://host:port to run against a live server";

export {WebSocket};

/**
 * The `ws` class with a tap for tests: `tap.sockets` lists the sockets the client made,
 * `tap.received` every message they got (`tap.next(accept)` waits for one); while
 * `tap.holdOps` is set, op frames are kept in `tap.held` instead of being sent;
 * `tap.dropIncoming(message)` returning true hides a message from the client.
 */
export function tappedWebSocket() {
  const waiters = new Set();
  const tap = {
    sockets: [],
    received: [],
    held: [],
    holdOps: false,
    dropIncoming: () => false,
    /** The next message received from now on that satisfies `accept` (bounded wait). */
    next(accept, what) {
      let waiter;
      const found = new Promise((resolve) => {
        waiter = (message) => accept(message) && resolve(message);
        waiters.add(waiter);
      });
      return within(found, what).finally(() => waiters.delete(waiter));
    },
  };
  class TappedSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      tap.sockets.push(this);
    }

    addEventListener(type, listener, options) {
      if (type !== "message") return super.addEventListener(type, listener, options);
      return super.addEventListener(
        type,
        (event) => {
          const message = JSON.parse(event.data);
          tap.received.push(message);
          for (const waiter of waiters) waiter(message);
          if (!tap.dropIncoming(message)) listener(event);
        },
        options,
      );
    }

    send(data) {
      if (tap.holdOps && JSON.parse(data).type === "op") tap.held.push({socket: this, data});
      else super.send(data);
    }
  }
  return {TappedSocket, tap};
}

/** A raw ops-mode connection (no client library); resolves with the socket and its init. */
export function rawConnection(url, params) {
  const socket = new WebSocket(`${url}?${new URLSearchParams({mode: "ops", ...params})}`);
  const messages = [];
  const waiters = [];
  socket.on("message", (data) => {
    messages.push(JSON.parse(data));
    waiters.splice(0).forEach((wake) => wake());
  });
  /** The next message of `type` not yet consumed. */
  const next = (type) =>
    within(
      new Promise((resolve) => {
        const look = () => {
          const index = messages.findIndex((message) => message.type === type);
          if (index < 0) return waiters.push(look);
          resolve(messages.splice(index, 1)[0]);
        };
        look();
      }),
      `a "${type}" message on the raw connection`,
    );
  return next("init").then((init) => ({socket, init, next}));
}

/** Create a room through the REST API; returns its WebSocket URL. */
export async function createRoom(code = "") {
  const response = await within(
    fetch(`${SERVER}/rooms`, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({code}),
    }),
    "POST /rooms",
  );
  if (response.status !== 201)
    throw new Error(`POST /rooms: ${response.status} ${await response.text()}`);
  const {ws_url: path, room_id: roomId} = await response.json();
  return {url: SERVER.replace(/^http/, "ws") + path, roomId};
}

/** GET /rooms/<id>: the server's text and version. */
export async function roomState(roomId) {
  const response = await within(fetch(`${SERVER}/rooms/${roomId}`), "GET room");
  if (response.status !== 200) throw new Error(`room: ${response.status} ${await response.text()}`);
  return response.json();
}

/** GET /rooms/<id>/history. */
export async function history(roomId) {
  const response = await within(fetch(`${SERVER}/rooms/${roomId}/history`), "GET history");
  if (response.status !== 200)
    throw new Error(`history: ${response.status} ${await response.text()}`);
  return response.json();
}
