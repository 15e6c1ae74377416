// A camera's day: the timeline of recorded ranges, gaps, holds and deleted-by-retention ranges; a click plays
// from that instant, a drag selects a range for the evidence tools (hold, export, verify); up to three more
// cameras play beside it, kept on the same capture time.
// #camera/<id>?day=YYYY-MM-DD&with=a,b  (a UTC day), ?from=ISO&to=ISO (any window: the zoom), or neither
// (the last 30 minutes).
import { api, every, h, iso, may, onLeave, say, shown } from "/console/ui.js";
import { VodPlayer } from "/console/vodplayer.js";

const DAY = 86_400_000;
const MAX_WITH = 3; // a camera and three beside it: four in sync
const SYNC_MS = 400; // a camera beside drifting further than this from the first is put back on its time
const enc = encodeURIComponent;
const utcInput = (ms) => new Date(Math.round(ms)).toISOString().slice(0, 23); // <input type="datetime-local" step="0.001">
const fromInput = (v) => Date.parse(`${v}Z`);

const MAX_WINDOW = DAY; // the longest playlist the API serves

function windowOf(params) {
  const from = Date.parse(params.get("from") || ""), to = Date.parse(params.get("to") || "");
  if (from < to && to - from <= MAX_WINDOW) return { start: from, end: to, day: null, zoomed: true };
  const day = params.get("day");
  if (day && /^\d{4}-\d{2}-\d{2}$/.test(day)) {
    const start = Date.parse(`${day}T00:00:00Z`);
    return { start, end: start + DAY, day };
  }
  const end = Date.now();
  return { start: end - 30 * 60_000, end, day: null };
}

function link(id, params) {
  const q = params.toString();
  return `#camera/${enc(id)}${q ? `?${q}` : ""}`;
}

export async function showCamera(app, id, params) {
  const { start, end, day, zoomed } = windowOf(params);
  const span = end - start;
  const q = `start=${new Date(start).toISOString()}&end=${new Date(end).toISOString()}`;
  const path = `/api/v1/cameras/${enc(id)}`;
  const [cam, tl, all, holds] = await Promise.all([
    api("GET", path), api("GET", `${path}/timeline?${q}`), api("GET", "/api/v1/cameras"),
    may("evidence") ? api("GET", "/api/v1/holds?state=active") : Promise.resolve({ holds: [] })]);
  const others = all.cameras.filter((c) => c.id !== id);
  const beside = (params.get("with") || "").split(",").filter((c) => others.some((o) => o.id === c)).slice(0, MAX_WITH);

  // The heading, the day picker and the cameras beside.
  const dayInput = h("input", { type: "date", id: "day", value: day || new Date(end).toISOString().slice(0, 10) });
  const go = (changes) => {
    const p = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) (v ? p.set(k, v) : p.delete(k));
    location.hash = link(id, p);
  };
  dayInput.addEventListener("change", () => go({ day: dayInput.value, from: "", to: "" }));
  const picker = h("div", { class: "pick" },
    h("label", {}, "Day (UTC) ", dayInput),
    h("button", { type: "button", id: "recent", onclick: () => go({ day: "", from: "", to: "" }) }, "Last 30 minutes"),
    h("button", { type: "button", id: "zoom-in", onclick: () => {
      if (sel.hidden) return say("drag across the timeline to select what to zoom to", "info");
      go({ day: "", from: iso(+sel.dataset.start), to: iso(+sel.dataset.end) });
    } }, "Zoom to selection"),
    h("button", { type: "button", id: "zoom-out", onclick: () => {
      const mid = (start + end) / 2, half = Math.min(MAX_WINDOW, span * 4) / 2;
      go({ day: "", from: iso(mid - half), to: iso(Math.min(mid + half, Date.now())) });
    } }, "Zoom out"),
    h("span", { class: "with" }, "Play beside: ", others.map((o) => {
      const box = h("input", { type: "checkbox", value: o.id, checked: beside.includes(o.id),
                               disabled: !beside.includes(o.id) && beside.length >= MAX_WITH });
      box.addEventListener("change", () => {
        const next = box.checked ? [...beside, o.id] : beside.filter((c) => c !== o.id);
        go({ with: next.join(",") });
      });
      return h("label", {}, box, o.name || o.id);
    })));

  // The timeline: what was recorded, the gaps, what retention deleted, the holds; the selection on top.
  const bar = h("div", { class: "timeline", id: "timeline", dataset: { start, end } });
  const pct = (ms) => `${(Math.min(Math.max(ms, start), end) - start) / span * 100}%`;
  const mark = (kind, s, e, title, data = {}) => {
    const el = h("div", { class: kind, title, dataset: { start: s, end: e, ...data } });
    el.style.left = pct(s);
    el.style.width = `calc(${pct(e)} - ${pct(s)})`;
    bar.append(el);
    return el;
  };
  const ranges = (list) => list.map((r) => [Date.parse(r.start), Date.parse(r.end)]);
  for (const [s, e] of ranges(tl.recorded)) mark("rec", s, e, `recorded ${shown(s)} – ${shown(e)}`);
  for (const [s, e] of ranges(tl.gaps)) mark("gap", s, e, `nothing recorded ${shown(s)} – ${shown(e)}`);
  for (const [s, e] of ranges(tl.deleted || [])) mark("deleted", s, e, `deleted by retention ${shown(s)} – ${shown(e)}`);
  const markHold = (hold) => {
    const s = Date.parse(hold.start), e = hold.end ? Date.parse(hold.end) : end;
    if (e > start && s < end) {
      const el = mark("hold", s, e, `hold ${hold.case_id ?? ""}: ${hold.reason ?? ""} (${shown(s)} – ${hold.end ? shown(e) : "open"})`,
                      { hold: hold.id });
      el.addEventListener("pointerdown", (ev) => { ev.stopPropagation(); showHold(hold, el); });
    }
  };
  for (const hold of holds.holds.filter((x) => x.cameras == null || x.cameras.includes(id))) markHold(hold);
  const sel = h("div", { class: "selection", id: "selection", hidden: true });
  bar.append(sel);

  const videos = h("div", { class: `vods n${1 + beside.length}` });
  const main = { camera: id, video: h("video", { id: "vod", muted: true, playsinline: true }), clock: h("span", { class: "clock", id: "vclock" }) };
  const players = [main, ...beside.map((c, i) => ({ camera: c, video: h("video", { id: `vod${i + 1}`, muted: true, playsinline: true }),
                                                     clock: h("span", { class: "clock" }) }))];
  for (const p of players) {
    const name = p.camera === id ? (cam.name || cam.id) : (others.find((o) => o.id === p.camera).name || p.camera);
    videos.append(h("div", { class: "vod", dataset: { camera: p.camera } }, p.video, h("span", { class: "label" }, name), p.clock));
    p.player = new VodPlayer(p.video);
    onLeave(() => p.player.stop());
  }
  const controls = h("div", { class: "controls" },
    [1, 2, 4, 8].map((r) => h("button", { type: "button", dataset: { rate: r }, onclick: () => { for (const p of players) p.video.playbackRate = r; } }, `${r}×`)),
    h("button", { type: "button", id: "pause", onclick: () => { for (const p of players) (main.video.paused ? p.video.play() : p.video.pause()); } }, "play / pause"),
    h("button", { type: "button", id: "step", onclick: () => { for (const p of players) p.player.step(); } }, "frame ▸"));

  app.replaceChildren(h("section", { class: "day" },
    h("h2", {}, `${cam.name || cam.id}: ${day ? `${day} (UTC)` : zoomed ? `${shown(start)} – ${shown(end)}` : "the last 30 minutes"}`), picker, bar,
    h("div", { class: "axis" }, h("span", {}, shown(start)), h("span", {}, "click: play from there · drag: select a range"),
      h("span", {}, shown(end))),
    videos, controls, footageTools(id, path, sel, start, end),
    may("evidence") ? evidencePanel(id, (hold) => markHold(hold)) : ""));

  // Click to play, drag to select.
  const at = (e) => { const box = bar.getBoundingClientRect(); return start + ((e.clientX - box.left) / box.width) * span; };
  let down = null;
  bar.addEventListener("pointerdown", (e) => { down = { x: e.clientX, at: at(e) }; bar.setPointerCapture(e.pointerId); });
  bar.addEventListener("pointermove", (e) => {
    if (down && Math.abs(e.clientX - down.x) > 4) select(sel, Math.min(down.at, at(e)), Math.max(down.at, at(e)), pct);
  });
  bar.addEventListener("pointerup", (e) => {
    if (!down) return;
    const from = down.at, moved = Math.abs(e.clientX - down.x) > 4;
    down = null;
    if (moved) return select(sel, Math.min(from, at(e)), Math.max(from, at(e)), pct);
    const w = Math.round(at(e));
    bar.dataset.clicked = w;
    loaded.then(() => {
      for (const p of players) p.player.playFrom(w).catch((err) => say(`${p.camera}: ${err.message}`));
    });
  });
  // The playlists load while the person looks at the timeline; a click waits for them.
  const loaded = Promise.all(players.map((p) => p.player.load(`/api/v1/cameras/${enc(p.camera)}/vod.m3u8?${q}`)
    .catch((e) => say(`${p.camera}: ${e.message}`))));

  every(200, () => {
    for (const p of players) p.clock.textContent = shown(p.player.wallClockAt());
  });
  // The cameras beside follow the first one's capture time (each stream has its own gaps and timeline).
  every(1000, () => {
    const w = main.player.wallClockAt();
    if (w == null || main.video.paused) return;
    for (const p of players.slice(1)) {
      const ws = p.player.wallClockAt();
      p.video.playbackRate = main.video.playbackRate;
      if (ws == null || Math.abs(ws - w) > SYNC_MS) p.player.seekWall(w).catch(() => {});
    }
  });
}

// What anyone who may see the camera can take away: a clip of the selection, links for other players.
function footageTools(camera, path, sel, start, end) {
  const out = h("p", { id: "links" });
  const chosen = () => (sel.hidden ? [start, Math.min(end, Date.now())] : [+sel.dataset.start, +sel.dataset.end]);
  const clip = h("a", { id: "clip-link", class: "button", href: "#", download: "" }, "Download clip (MP4)");
  clip.addEventListener("click", () => {
    const [s, e] = chosen();
    clip.href = `${path}/clip.mp4?start=${iso(s)}&end=${iso(e)}`;
  });
  const link = async (kind) => {
    const [s, e] = chosen();
    const made = kind === "vod" ? await api("POST", `${path}/vod-links`, { start: iso(s), end: iso(e) })
      : await api("POST", `${path}/live-links`, {});
    const url = new URL(kind === "vod" ? made.playlist : made.mp4, location.href).href;
    out.replaceChildren(`${kind === "vod" ? "HLS playlist" : "live MP4"} for ffplay, VLC or Safari, valid until ${shown(Date.parse(made.expires))}: `,
                        h("code", { id: `${kind}-url` }, url));
  };
  const list = h("div", { id: "segments" });
  // The stored segments of the selection, a page at a time: their hashes, sizes and bytes as stored.
  const listSegments = async (cursor) => {
    const [s, e] = chosen();
    const got = await api("GET", `${path}/segments?start=${iso(s)}&end=${iso(e)}&limit=100${cursor ? `&cursor=${cursor}` : ""}`);
    let body = list.querySelector("tbody");
    if (!cursor || !body) {
      body = h("tbody");
      list.replaceChildren(h("table", { class: "report" }, h("thead", {}, h("tr", {},
        ["segment", "start (UTC)", "seconds", "bytes", "SHA-256 of the footage", ""].map((t) => h("th", {}, t)))), body));
    }
    list.querySelector(".more")?.remove();
    body.append(...got.segments.map((g) => h("tr", { dataset: { segment: g.id, sha256: g.sha256 } },
      h("td", {}, `#${g.seq}`), h("td", {}, shown(Date.parse(g.start))), h("td", {}, g.duration.toFixed(2)),
      h("td", {}, String(g.size)), h("td", {}, h("code", { title: g.sha256 }, `${g.sha256.slice(0, 16)}…`)),
      h("td", {}, h("a", { href: g.content_url, download: "" }, "bytes")))));
    if (!body.children.length) list.replaceChildren(h("p", {}, "No stored segment in this range."));
    if (got.next_cursor) {
      list.append(h("button", { type: "button", class: "more", onclick: () => listSegments(got.next_cursor).catch(() => {}) },
                    "More segments"));
    }
  };
  return h("div", { class: "tools" }, "The selection (or the whole window): ", clip,
    h("button", { type: "button", id: "vod-link", onclick: () => link("vod").catch(() => {}) }, "Link for a player"),
    h("button", { type: "button", id: "live-link", onclick: () => link("live").catch(() => {}) }, "Live link for a player"),
    h("button", { type: "button", id: "list-segments", onclick: () => listSegments(null).catch(() => {}) }, "List its segments"),
    out, list);
}

// A hold's details and its release (a reason is required; the release is audited).
function showHold(hold, el) {
  const box = document.getElementById("evidence-out");
  if (!box) return;
  const reason = h("input", { name: "reason", required: true, maxlength: 1000 });
  const form = h("form", { id: "release-form" }, h("p", {}, `Hold ${hold.id}, case ${hold.case_id ?? "(withheld)"}: ` +
    `${hold.reason ?? ""} · ${shown(Date.parse(hold.start))} – ${hold.end ? shown(Date.parse(hold.end)) : "open"} · placed by ` +
    `${hold.created_by}`), h("label", {}, "Release, because ", reason), h("button", { type: "submit" }, "Release hold"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("DELETE", `/api/v1/holds/${enc(hold.id)}?reason=${enc(reason.value)}`);
      el.remove();
      box.replaceChildren(h("p", { id: "hold-released" }, `hold ${hold.id} released`));
    } catch { /* said already */ }
  });
  box.replaceChildren(form);
}

// The selected range, shown on the timeline and in the evidence panel's from/to inputs.
function select(sel, s, e, pct) {
  sel.hidden = false;
  sel.style.left = pct(s);
  sel.style.width = `calc(${pct(e)} - ${pct(s)})`;
  sel.dataset.start = Math.round(s);
  sel.dataset.end = Math.round(e);
  const from = document.getElementById("sel-from"), to = document.getElementById("sel-to");
  if (from) {
    from.value = utcInput(s);
    to.value = utcInput(e);
  }
}

// Holds, exports and verification of the selected range (evidence role).
function evidencePanel(camera, onHold) {
  const out = h("div", { id: "evidence-out" });
  const range = () => {
    const s = fromInput(document.getElementById("sel-from").value), e = fromInput(document.getElementById("sel-to").value);
    if (!(s < e)) throw new Error("select a range on the timeline first (drag across it), or type its from and to");
    return { start: new Date(s).toISOString(), end: new Date(e).toISOString() };
  };
  const attempt = (f) => async (ev) => {
    ev.preventDefault();
    try {
      await f(ev.target.closest("form"));
    } catch (e) {
      if (e.message !== "unauthenticated") say(e.message);
    }
  };
  const caseFields = () => [
    h("label", {}, "Case id ", h("input", { name: "case_id", required: true, maxlength: 128 })),
    h("label", {}, "Reason ", h("input", { name: "reason", required: true, maxlength: 1000 }))];

  const holdForm = h("form", { id: "hold-form" }, h("h4", {}, "Hold"), caseFields(),
    h("button", { type: "submit" }, "Place hold"));
  holdForm.addEventListener("submit", attempt(async (form) => {
    const d = new FormData(form);
    const hold = await api("POST", "/api/v1/holds", { ...range(), cameras: [camera], case_id: d.get("case_id"), reason: d.get("reason") });
    say(`Hold ${hold.id} placed: footage of ${shown(Date.parse(hold.start))} – ${shown(Date.parse(hold.end))} is kept.`, "info");
    out.replaceChildren(h("p", { id: "hold-placed", dataset: { hold: hold.id } }, `hold ${hold.id} (case ${hold.case_id})`));
    onHold(hold);
  }));

  const exportForm = h("form", { id: "export-form" }, h("h4", {}, "Export"), caseFields(),
    h("button", { type: "submit" }, "Export case bundle"));
  exportForm.addEventListener("submit", attempt(async (form) => {
    const d = new FormData(form);
    let job = await api("POST", "/api/v1/exports", { ...range(), cameras: [camera], case_id: d.get("case_id"), reason: d.get("reason") });
    const status = h("p", { id: "export-status" }), began = Date.now();
    out.replaceChildren(status);
    const show = () => {
      status.dataset.state = job.state;
      status.textContent = `export ${job.id}: ${job.state} (${Math.round((Date.now() - began) / 1000)} s)` +
        (job.error ? `: ${job.error}` : "");
    };
    show();
    while (job.state === "queued" || job.state === "running") {
      await new Promise((ok) => setTimeout(ok, 1000));
      job = await api("GET", job.status_url);
      show();
    }
    if (job.state === "done") {
      const size = job.size != null ? `${(job.size / 1e6).toFixed(1)} MB, ` : "";
      out.append(h("p", {}, h("a", { id: "bundle-link", href: job.bundle_url, download: "" }, "Download the bundle"),
                   ` (${size}SHA-256 ${job.sha256})`));
      document.getElementById("bundle-link").click();
    } else {
      say(`export ${job.id} failed: ${job.error}`);
    }
  }));

  const verifyForm = h("form", { id: "verify-form" }, h("h4", {}, "Verify"), h("button", { type: "submit" }, "Verify the range"));
  verifyForm.addEventListener("submit", attempt(async () => {
    out.replaceChildren(h("p", {}, "verifying…"));
    const report = await api("POST", "/api/v1/verify", { ...range(), camera });
    out.replaceChildren(verifyReport(report));
  }));

  return h("section", { class: "evidence", id: "evidence" }, h("h3", {}, "Evidence"),
    h("div", { class: "range" },
      h("label", {}, "From (UTC) ", h("input", { type: "datetime-local", step: 0.001, id: "sel-from" })),
      h("label", {}, "To (UTC) ", h("input", { type: "datetime-local", step: 0.001, id: "sel-to" }))),
    h("div", { class: "forms" }, holdForm, exportForm, verifyForm), out);
}

const STATUS_WORDS = {
  ok: "ok: hashes, decryption, ledger and a signed checkpoint all check",
  unanchored: "unanchored: checks, but no signed checkpoint covers it yet",
  tampered: "tampered",
  missing: "missing: the index has it, the store does not",
  "deleted-by-retention": "deleted by a retention rule (its tombstone is in the ledger)",
};

function verifyReport(r) {
  const rows = r.segments.map((s) => h("tr", { class: s.status, dataset: { status: s.status, segment: s.id } },
    h("td", {}, `#${s.seq} ${shown(Date.parse(s.start))}`), h("td", {}, STATUS_WORDS[s.status] || s.status),
    h("td", {}, (s.failed_checks || []).map((f) => `${f.check}: ${f.detail}`).join("; ") ||
      (s.rule ? `rule ${s.rule}, deleted ${s.deleted_at}` : "")),
    h("td", {}, s.checkpoint ?? ""),
    h("td", {}, s.status === "deleted-by-retention" ? "" : [
      h("a", { href: `/api/v1/segments/${enc(s.id)}/content`, download: "" }, "bytes"), " · ",
      h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); recheck(s.id, ev.target); } }, "verify again")])));
  return h("div", { class: "report", id: "verify-report", dataset: { verdict: r.verdict } },
    h("p", {}, `Verdict: ${r.verdict} · ${r.segments.length} segments · ${r.gaps.length} gaps` +
      (r.problems.length ? ` · problems: ${r.problems.map((p) => `${p.check}: ${p.detail}`).join("; ")}` : "")),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "segment"), h("th", {}, "status"), h("th", {}, "failed check / rule"),
      h("th", {}, "checkpoint"), h("th", {}, ""))), h("tbody", {}, rows)));
}

async function recheck(id, where) {
  try {
    const r = await api("GET", `/api/v1/segments/${enc(id)}/verify`);
    const s = r.segments[0];
    where.textContent = `${s.status} at ${shown(Date.parse(r.checked_at))}`;
  } catch { /* said already */ }
}
