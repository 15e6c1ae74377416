// The nvr console: log in, then a wall of live cameras. Plain modules, no bundler; every request is
// same-origin with the session cookie; every state-changing request carries the session's CSRF token.
import { LivePlayer } from "/console/liveplayer.js";
import { VodPlayer } from "/console/vodplayer.js";

const app = document.getElementById("app");
const bar = document.getElementById("bar");
const message = document.getElementById("message");
const layout = document.getElementById("layout");
const state = { me: null, csrf: null, players: [], refresh: null, vod: null };
window.nvrConsole = state; // for a look from the developer tools (and the tests)
const iso = (ms) => new Date(ms).toISOString();
const shown = (ms) => (ms == null ? "" : iso(ms).replace("T", " ").slice(0, 23));

// A problem+json answer in words, for the person in front of the screen.
async function problemText(resp) {
  try {
    const p = await resp.json();
    return p.detail || p.title || `HTTP ${resp.status}`;
  } catch {
    return `HTTP ${resp.status}`;
  }
}

function say(text) {
  message.textContent = text || "";
  message.hidden = !text;
}

export async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const resp = await fetch(path, { method, headers, credentials: "same-origin",
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401 && path !== "/api/v1/login") {
    showLogin("Your session ended: log in again.");
    throw new Error("unauthenticated");
  }
  if (!resp.ok) {
    const text = await problemText(resp);
    say(text);
    throw new Error(text);
  }
  return resp.status === 204 ? null : resp.json();
}

function stopPlayers() {
  for (const p of state.players) p.stop();
  state.players = [];
  if (state.vod) state.vod.stop();
  state.vod = null;
  if (state.refresh) clearInterval(state.refresh);
  state.refresh = null;
}

function showLogin(why) {
  stopPlayers();
  state.me = state.csrf = null;
  bar.hidden = true;
  say(why);
  app.innerHTML = `<form class="login" id="login">
    <h1>nvr</h1>
    <label>Name <input name="name" autocomplete="username" required></label>
    <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
    <button type="submit">Log in</button></form>`;
  document.getElementById("login").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const resp = await fetch("/api/v1/login", {
      method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
      body: JSON.stringify({ name: form.get("name"), password: form.get("password") }) });
    if (!resp.ok) {
      say(await problemText(resp));
      return;
    }
    const me = await resp.json();
    start({ name: me.name, role: me.role, cameras: me.cameras, csrf: me.csrf });
  });
}

function start(me) {
  state.me = me;
  state.csrf = me.csrf;
  say("");
  bar.hidden = false;
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  route();
}

async function showWall() {
  stopPlayers();
  const { cameras } = await api("GET", "/api/v1/cameras");
  const count = Number(layout.value);
  const visible = cameras.filter((c) => c.enabled).slice(0, count);
  const side = Math.ceil(Math.sqrt(count));
  app.innerHTML = `<div class="wall" id="wall" style="grid-template-columns: repeat(${side}, 1fr)"></div>`;
  const wall = document.getElementById("wall");
  for (const cam of visible) {
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.dataset.camera = cam.id;
    tile.innerHTML = `<video muted playsinline></video><span class="label"></span>
      <span class="health"></span><span class="clock"></span>`;
    const label = tile.querySelector(".label");
    label.innerHTML = `<a></a>`;
    label.firstChild.textContent = cam.name || cam.id;
    label.firstChild.href = `#camera/${encodeURIComponent(cam.id)}`;
    wall.append(tile);
    const stream = cam.live_url && count > 1 ? "?stream=sub" : "";
    const player = new LivePlayer(tile.querySelector("video"), `/api/v1/cameras/${encodeURIComponent(cam.id)}/live${stream}`,
                                  { onState: (s, why) => { tile.dataset.state = s; if (why) tile.title = why; } });
    player.camera = cam.id;
    player.tile = tile;
    state.players.push(player);
    player.start();
  }
  const tick = async () => {
    for (const p of state.players) {
      const at = p.wallClockAt();
      p.tile.querySelector(".clock").textContent = shown(at);
    }
  };
  const health = async () => {
    for (const p of state.players) {
      try {
        const st = await api("GET", `/api/v1/cameras/${encodeURIComponent(p.camera)}/status`);
        const h = p.tile.querySelector(".health");
        h.className = `health ${st.health || st.state}`;
        h.textContent = st.problem ? `${st.health}: ${st.problem}` : (st.health || st.state);
      } catch { /* said already */ }
    }
  };
  state.refresh = setInterval(tick, 250);
  health();
  setInterval(health, 10_000);
}

// A camera's recent footage: the timeline of recorded ranges and gaps; a click plays from that instant.
async function showCamera(id) {
  stopPlayers();
  const end = Date.now(), start = end - 30 * 60_000;
  const q = `start=${iso(start)}&end=${iso(end)}`;
  const path = `/api/v1/cameras/${encodeURIComponent(id)}`;
  const [cam, tl] = await Promise.all([api("GET", path), api("GET", `${path}/timeline?${q}`)]);
  app.innerHTML = `<section class="day"><h2></h2>
    <div class="timeline" id="timeline" data-start="${start}" data-end="${end}"></div>
    <div class="axis"><span>${shown(start)}</span><span>${shown(end)}</span></div>
    <div class="vod"><video id="vod" muted playsinline></video><span class="clock" id="vclock"></span></div>
    <div class="controls">${[1, 2, 4, 8].map((r) => `<button data-rate="${r}">${r}×</button>`).join("")}
      <button id="step" type="button">frame ▸</button></div></section>`;
  app.querySelector("h2").textContent = `${cam.name || cam.id}: the last 30 minutes`;
  const bar = document.getElementById("timeline");
  const pct = (ms) => `${((ms - start) / (end - start)) * 100}%`;
  for (const [kind, list] of [["rec", tl.recorded], ["gap", tl.gaps]]) {
    for (const r of list) {
      const s = Date.parse(r.start), e = Date.parse(r.end);
      const el = document.createElement("div");
      el.className = kind;
      el.dataset.start = s;
      el.dataset.end = e;
      el.style.left = pct(s);
      el.style.width = `calc(${pct(e)} - ${pct(s)})`;
      el.title = `${kind === "rec" ? "recorded" : "gap"} ${shown(s)} – ${shown(e)}`;
      bar.append(el);
    }
  }
  const video = document.getElementById("vod");
  const player = (state.vod = new VodPlayer(video));
  await player.load(`${path}/vod.m3u8?${q}`).catch((e) => say(e.message));
  bar.addEventListener("click", (e) => {
    const box = bar.getBoundingClientRect();
    const at = start + ((e.clientX - box.left) / box.width) * (end - start);
    bar.dataset.clicked = Math.round(at);
    player.playFrom(at).catch((err) => say(err.message));
  });
  for (const b of app.querySelectorAll("[data-rate]")) b.addEventListener("click", () => { video.playbackRate = Number(b.dataset.rate); });
  document.getElementById("step").addEventListener("click", () => { video.pause(); video.currentTime += 1 / 15; });
  state.refresh = setInterval(() => { document.getElementById("vclock").textContent = shown(player.wallClockAt()); }, 200);
}

function route() {
  if (!state.me) return;
  const m = location.hash.match(/^#camera\/(.+)$/);
  (m ? showCamera(decodeURIComponent(m[1])) : showWall()).catch(() => {});
}

layout.addEventListener("change", route);
window.addEventListener("hashchange", route);
document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/api/v1/logout");
  } finally {
    showLogin("Logged out.");
  }
});

(async () => {
  const resp = await fetch("/api/v1/session", { credentials: "same-origin" });
  if (resp.ok) {
    const me = await resp.json();
    if (me.kind === "user") return start(me);
  }
  showLogin("");
})();
