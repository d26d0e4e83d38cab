/**
 * share.js — the share dialog of the editor page, loaded only for a private room's owners
 * (rooms/pages.py decides, through rooms/access.py; the dialog's markup is
 * templates/rooms/share_dialog.html).
 *
 * People: invite an account by user name or e-mail address, change a role, remove someone.
 * The link: what "anyone with the link" may do (edit, view, nothing), copy it, or replace it with
 * a new one, after which the old one stops working at once, for pages already open too. Every
 * change goes through the REST API (docs/protocol.md, "Accounts and sharing") and reaches the
 * people concerned while they are connected; this page only shows the result.
 *
 * A private room's links carry its tokens in their fragment (`/r/<id>#token=...`). The page
 * knows the edit token from its own fragment and the view token from localStorage (both kept
 * by the page that created the room, or by a new link made here); another browser of the owner
 * has neither and offers to make a new link instead.
 */

const $ = (id) => document.getElementById(id);
const config = JSON.parse($("page-config").textContent);
const roomId = config.roomId;
const api = `/rooms/${encodeURIComponent(roomId)}`;
const VIEW_TOKEN_KEY = `collabsite.viewToken.${roomId}`;
const ROLES = ["owner", "editor", "viewer"];

/** JSON over REST, on the session (writes carry the CSRF token). Throws {status, message}. */
async function request(path, {method = "GET", body} = {}) {
  const headers = {Accept: "application/json", "X-CSRFToken": config.csrfToken};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {method, headers, body: body && JSON.stringify(body)});
  } catch {
    throw {status: 0, message: "The server cannot be reached. Check your connection."};
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw {status: response.status, message: data.error || response.statusText};
  return data;
}

function tokens() {
  return {
    edit: new URLSearchParams(location.hash.slice(1)).get("token"),
    view: localStorage.getItem(VIEW_TOKEN_KEY),
  };
}

function linkWith(token) {
  const url = new URL(`/r/${encodeURIComponent(roomId)}`, location.origin);
  url.hash = new URLSearchParams({token}).toString();
  return url.href;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API outside secure contexts: the link stays selected for Ctrl+C.
  }
  const field = $("share-link-url");
  field.value = text;
  field.hidden = false;
  field.select();
}

function showError(failure) {
  $("share-error").textContent = failure ? failure.message : "";
  $("share-error").hidden = !failure;
}

/** Run a change; show its error, if any; redraw from the server's state either way. */
async function change(work) {
  showError(null);
  let done = false;
  try {
    await work();
    done = true;
  } catch (failure) {
    showError(failure);
  }
  await refresh();
  return done;
}

function option(value, selected) {
  const element = new Option(value[0].toUpperCase() + value.slice(1), value);
  element.selected = value === selected;
  return element;
}

function memberRow(member) {
  const row = document.createElement("li");
  row.className = "share-row";
  row.dataset.username = member.username;
  const who = document.createElement("span");
  who.className = "share-who";
  who.append(Object.assign(document.createElement("strong"), {textContent: member.name}));
  const detail = [member.username, member.email].filter(Boolean).join(" · ");
  who.append(Object.assign(document.createElement("small"), {textContent: detail}));
  row.append(who);
  if (member.creator) {
    row.append(Object.assign(document.createElement("span"), {textContent: "Owner"}));
    return row;
  }
  const role = document.createElement("select");
  role.className = "share-role";
  role.setAttribute("aria-label", `Role of ${member.username}`);
  role.append(...ROLES.map((value) => option(value, member.role)));
  role.onchange = () =>
    change(() =>
      request(`${api}/members/${encodeURIComponent(member.username)}`, {
        method: "PATCH",
        body: {role: role.value},
      }),
    );
  const remove = Object.assign(document.createElement("button"), {
    type: "button",
    className: "button button-danger share-remove",
    textContent: "Remove",
  });
  remove.onclick = () =>
    change(() =>
      request(`${api}/members/${encodeURIComponent(member.username)}`, {method: "DELETE"}),
    );
  row.append(role, remove);
  return row;
}

function renderLink(access) {
  $("share-link-access").value = access;
  const {edit, view} = tokens();
  const copy = $("share-copy-link");
  const copyView = $("share-copy-view-link");
  copy.disabled = access === "none" || !edit;
  copy.textContent = access === "view" ? "Copy link (view only)" : "Copy link";
  copyView.hidden = access !== "edit" || !view;
  const notes = {
    none: "Only the people above can open this room.",
    view: "Whoever has the link can read along, not edit.",
    edit: "Whoever has the link can edit; the read-only link only lets them read.",
  };
  $("share-link-note").textContent =
    access !== "none" && !edit
      ? "This browser does not have the room's link. Make a new one to share it (the old one stops working)."
      : notes[access];
}

async function refresh() {
  let data;
  try {
    data = await request(`${api}/members`);
  } catch (failure) {
    showError(failure);
    return;
  }
  $("share-members").replaceChildren(...data.members.map(memberRow));
  renderLink(data.link_access);
}

function setUp() {
  const dialog = $("share-dialog");
  $("share").onclick = () => {
    showError(null);
    $("share-link-url").hidden = true;
    dialog.showModal();
    refresh();
  };
  $("share-close").onclick = () => dialog.close();
  $("share-invite").onsubmit = (event) => {
    event.preventDefault();
    const invitee = $("share-invitee");
    change(async () => {
      await request(`${api}/members`, {
        method: "POST",
        body: {user: invitee.value.trim(), role: $("share-invite-role").value},
      });
      invitee.value = "";
    });
  };
  $("share-link-access").onchange = (event) =>
    change(() => request(`${api}/link`, {method: "PUT", body: {access: event.target.value}}));
  $("share-copy-link").onclick = () => copyText(linkWith(tokens().edit));
  $("share-copy-view-link").onclick = () => copyText(linkWith(tokens().view));
  $("share-rotate").onclick = async () => {
    const made = await change(async () => {
      const fresh = await request(`${api}/link/rotate`, {method: "POST"});
      // This page's own link becomes the new one; the editor's connection stays (we own it).
      history.replaceState(null, "", `#${new URLSearchParams({token: fresh.token})}`);
      localStorage.setItem(VIEW_TOKEN_KEY, fresh.view_token);
    });
    if (made) {
      await copyText(linkWith(tokens().edit));
      $("share-link-note").textContent = "New link made: the old one no longer opens the room.";
    }
  };
}

setUp();
