// What every page of the console shares: the person's state, requests to the API, messages in words, and a
// small element builder (text is always set as text, never parsed as HTML: names come from people and cameras).

export const state = { me: null, csrf: null, stops: [] };
window.nvrConsole = state; // for a look from the developer tools (and the tests)

export const iso = (ms) => new Date(ms).toISOString();
export const shown = (ms) => (ms == null ? "" : iso(ms).replace("T", " ").slice(0, 23));
export const RANKS = { viewer: 0, evidence: 1, admin: 2 };
export const may = (role) => state.me && RANKS[state.me.role] >= RANKS[role];
// A person scoped to some cameras can't do what concerns every camera (the API answers 403).
export const everyCamera = () => state.me && state.me.cameras == null;

// h("button", {type: "button", onclick: f}, "Save"): attributes, properties starting with "on", children.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    // CSSOM, not a style attribute: the CSP (style-src 'self') drops inline style attributes.
    else if (k === "style") Object.assign(el.style, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

// A problem+json answer in words, for the person in front of the screen.
export async function problemText(resp) {
  try {
    const p = await resp.json();
    return p.detail || p.title || `HTTP ${resp.status}`;
  } catch {
    return `HTTP ${resp.status}`;
  }
}

const message = () => document.getElementById("message");

export function say(text, kind = "error") {
  const m = message();
  m.textContent = text || "";
  m.className = kind;
  m.hidden = !text;
}

// Called when the session is gone (set by console.js).
export const hooks = { loggedOut: () => {} };

// One API request: JSON in and out, the CSRF token on every state-changing one; a refusal is said in words
// and thrown (an Error whose message is the problem's detail).
export async function api(method, path, body, { quiet = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const resp = await fetch(path, { method, headers, credentials: "same-origin",
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401 && path !== "/api/v1/login") {
    hooks.loggedOut("Your session ended: log in again.");
    throw new Error("unauthenticated");
  }
  if (!resp.ok) {
    const text = await problemText(resp);
    if (!quiet) say(text);
    throw new Error(text);
  }
  return resp.status === 204 ? null : resp.json();
}

// Work a page leaves running (players, timers): stopped when the person goes to another page.
export function onLeave(stop) {
  state.stops.push(stop);
}

export function every(ms, f) {
  const t = setInterval(f, ms);
  onLeave(() => clearInterval(t));
  return t;
}

export function leavePage() {
  for (const stop of state.stops.splice(0)) {
    try {
      stop();
    } catch { /* a page's cleanup never keeps the next page from showing */ }
  }
  say("");
}

// The page's main element, emptied, with a heading.
export function page(title) {
  const app = document.getElementById("app");
  app.replaceChildren(h("h2", {}, title));
  return app;
}

// A form's fields as an object; empty fields left out.
export function fields(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) if (v !== "") out[k] = v;
  return out;
}

// "a, b" -> ["a", "b"]; "" -> null (every camera).
export const cameraList = (text) => {
  const list = (text || "").split(",").map((s) => s.trim()).filter(Boolean);
  return list.length ? list : null;
};
