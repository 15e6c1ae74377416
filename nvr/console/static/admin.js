// The admin pages: cameras (#admin/cameras), retention rules with their preview (#admin/retention), people and
// API tokens (#admin/people). Every value from the API is set as text (h()); a refusal is said in words by api().
// Secrets typed by the person (camera credentials, passwords) are never put back into the page: the forms are
// cleared once saved, and a camera's URLs are shown only as the API redacts them.
import { api, cameraList, everyCamera, h, onLeave, say, shown } from "/console/ui.js";

const enc = encodeURIComponent;
const ROLES = ["viewer", "evidence", "admin"];

export async function showAdmin(app, sub) {
  let here = true; // false once the person went to another page: a late answer then draws nothing
  onLeave(() => { here = false; });
  const live = () => here;
  const view = VIEWS[sub];
  if (!view) {
    app.replaceChildren(h("h2", {}, "Admin"), h("p", {}, "No such admin page: ", sub));
    return;
  }
  if (sub !== "cameras" && !everyCamera()) {
    app.replaceChildren(h("h2", {}, "Admin"), h("p", {}, "This page concerns every camera: your scope doesn't allow it."));
    return;
  }
  await view(app, live);
}

// ---------------------------------------------------------------------- helpers

// An action of a button or form: the default prevented, a failure said in words (api() already says its own).
const act = (f) => async (ev) => {
  if (ev && ev.type === "submit") ev.preventDefault();
  try {
    await f(ev);
  } catch (err) {
    if (document.getElementById("message").hidden) say(err.message);
  }
};

const button = (label, attrs, f) => h("button", { type: "button", ...attrs, onclick: act(f) }, label);
const field = (label, input, note) => h("label", {}, h("span", {}, label), input, note ? h("small", {}, note) : null);
const select = (name, options, value, attrs = {}) =>
  h("select", { name, ...attrs }, options.map((o) => h("option", { value: o, selected: o === value }, o)));
const scope = (cams) => (cams == null ? "every camera" : cams.join(", "));
const yes = (b) => (b ? "yes" : "no");
const time = (rfc) => (rfc ? shown(Date.parse(rfc)) : "");

// A table: headings, then rows of [attrs, ...cells] (a cell is text or an element).
function table(id, heads, rows, empty = "none") {
  return h("table", { class: "admin-table", id },
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows.map(([attrs, ...cells]) => h("tr", attrs, cells.map((c) => h("td", {}, c))))
      : h("tr", { class: "empty" }, h("td", { colspan: heads.length }, empty))));
}

export function bytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = Number(n), i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

// A key/value list of an object's plain values (objects as compact JSON).
function facts(id, obj, keys = Object.keys(obj || {})) {
  return h("dl", { class: "facts", id }, keys.filter((k) => k in (obj || {})).flatMap((k) => {
    const v = obj[k];
    return [h("dt", {}, k.replaceAll("_", " ")),
            h("dd", {}, v == null ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v))];
  }));
}

// ---------------------------------------------------------------------- cameras

async function camerasPage(app, live) {
  const list = h("div", { id: "camera-list" });
  const editor = h("div", { id: "camera-editor" });
  const render = async () => {
    const { cameras } = await api("GET", "/api/v1/cameras");
    if (!live()) return;
    list.replaceChildren(table("cameras", ["id", "name", "url", "enabled", "state", "source", ""],
      cameras.map((c) => [{ dataset: { camera: c.id, enabled: c.enabled, state: c.state } },
        h("a", { href: `#camera/${enc(c.id)}` }, c.id), c.name || "",
        h("span", { class: "url" }, c.url, c.live_url ? h("small", {}, `live: ${c.live_url}`) : null),
        yes(c.enabled), c.state, c.source,
        h("span", { class: "actions" },
          button("Edit", { class: "edit" }, () => openEditor(c)),
          button(c.enabled ? "Disable" : "Enable", { class: c.enabled ? "disable" : "enable" }, async () => {
            await api("PATCH", `/api/v1/cameras/${enc(c.id)}`, { enabled: !c.enabled });
            say(c.enabled ? `Camera ${c.id} disabled: it is no longer recorded.` : `Camera ${c.id} enabled.`, "info");
            await render();
          }),
          button("Remove", { class: "remove danger" }, async () => {
            if (!confirm(`Remove camera ${c.id}? Recording stops; its footage and ledger are kept.`)) return;
            await api("DELETE", `/api/v1/cameras/${enc(c.id)}`);
            if (editor.dataset.camera === c.id) closeEditor();
            say(`Camera ${c.id} removed (its footage and ledger are kept).`, "info");
            await render();
          }))])));
  };
  const closeEditor = () => { editor.replaceChildren(); delete editor.dataset.camera; };
  const openEditor = (cam) => {
    const form = cameraForm("camera-edit", cam);
    editor.dataset.camera = cam.id;
    form.addEventListener("submit", act(async () => {
      const body = cameraChanges(form, cam);
      if (!Object.keys(body).length) return say("Nothing changed.", "info");
      await api("PATCH", `/api/v1/cameras/${enc(cam.id)}`, body);
      form.reset();
      closeEditor();
      say("Saved.", "info");
      await render();
    }));
    editor.replaceChildren(h("h3", {}, `Edit camera ${cam.id}`), form);
    form.querySelector("input[name=name]").focus();
  };
  const parts = [h("h2", {}, "Cameras"), list, editor];
  if (everyCamera()) {
    const add = cameraForm("add-camera", null);
    add.addEventListener("submit", act(async () => {
      const body = cameraBody(add);
      await api("POST", "/api/v1/cameras", body);
      add.reset(); // the URL may hold a password: not kept in the page
      say(`Saved. Camera ${body.id} registered; recording starts.`, "info");
      await render();
    }));
    parts.push(h("h3", {}, "Add camera"), add);
  } else {
    parts.push(h("p", { class: "note" }, "Registering a camera concerns every camera: your scope doesn't allow it."));
  }
  await render();
  if (!live()) return;
  app.replaceChildren(h("div", { class: "admin", id: "admin-cameras" }, parts));
}

// The form of a new camera (cam null) or of a change to cam: the URLs of an existing camera are never filled
// in (the API shows them redacted): an empty URL field keeps the URL.
function cameraForm(id, cam) {
  const keep = (url) => (url ? `${url} (leave empty to keep)` : "none (leave empty for none)");
  const inputs = [
    cam ? null : field("Id", h("input", { name: "id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.-]*",
                                          maxlength: 64, autocomplete: "off" })),
    field("Name", h("input", { name: "name", value: cam ? cam.name || "" : "", maxlength: 200, autocomplete: "off" })),
    field("URL", h("input", { name: "url", required: !cam, autocomplete: "off", spellcheck: "false",
                              placeholder: cam ? keep(cam.url) : "rtsp://user:password@host/stream" })),
    field("Live URL", h("input", { name: "live_url", autocomplete: "off", spellcheck: "false",
                                   placeholder: cam ? keep(cam.live_url) : "optional substream for the wall" })),
    cam && cam.live_url ? field("Remove live URL", h("input", { type: "checkbox", name: "no_live_url" })) : null,
    field("Audio", h("input", { type: "checkbox", name: "audio", checked: cam ? cam.audio : false })),
    field("RTSP transport", select("rtsp_transport", ["tcp", "udp"], cam ? cam.rtsp_transport : "tcp")),
    field("Timestamps", select("timestamps", ["auto", "camera", "arrival"], cam ? cam.timestamps : "auto")),
    field("Segment seconds", h("input", { name: "segment_seconds", type: "number", min: 1, max: 600, step: "any",
                                          value: cam && cam.segment_seconds != null ? cam.segment_seconds : "",
                                          placeholder: "the config's default" })),
  ];
  return h("form", { id, class: "admin-form", autocomplete: "off" }, inputs,
           h("div", { class: "buttons" }, h("button", { type: "submit" }, cam ? "Save" : "Add camera"),
             cam ? h("button", { type: "button", class: "cancel",
                                 onclick: (e) => e.target.closest("form").parentElement.replaceChildren() }, "Cancel")
               : null));
}

const value = (form, name) => form.elements[name] && form.elements[name].value.trim();
const checked = (form, name) => Boolean(form.elements[name] && form.elements[name].checked);

function cameraBody(form) {
  const body = { id: value(form, "id"), url: value(form, "url"), audio: checked(form, "audio"),
                 rtsp_transport: value(form, "rtsp_transport"), timestamps: value(form, "timestamps") };
  if (value(form, "name")) body.name = value(form, "name");
  if (value(form, "live_url")) body.live_url = value(form, "live_url");
  if (value(form, "segment_seconds")) body.segment_seconds = Number(value(form, "segment_seconds"));
  return body;
}

// Only what the person changed.
function cameraChanges(form, cam) {
  const body = {};
  if (value(form, "name") !== (cam.name || "")) body.name = value(form, "name");
  if (value(form, "url")) body.url = value(form, "url");
  if (value(form, "live_url")) body.live_url = value(form, "live_url");
  else if (checked(form, "no_live_url")) body.live_url = "";
  if (checked(form, "audio") !== cam.audio) body.audio = checked(form, "audio");
  for (const k of ["rtsp_transport", "timestamps"]) if (value(form, k) !== cam[k]) body[k] = value(form, k);
  const seg = value(form, "segment_seconds") ? Number(value(form, "segment_seconds")) : null;
  if (seg !== (cam.segment_seconds ?? null)) body.segment_seconds = seg;
  return body;
}

// ---------------------------------------------------------------------- retention

async function retentionPage(app, live) {
  const status = h("div", { id: "retention-status" });
  const textarea = h("textarea", { id: "rules", rows: 12, spellcheck: "false" });
  const simple = Object.fromEntries(["max_age", "max_bytes", "min_age"].map((k) =>
    [k, h("input", { name: k, id: `default-${k.replace("_", "-")}`, autocomplete: "off",
                     placeholder: { max_age: "e.g. 30d", max_bytes: "e.g. 500GiB", min_age: "e.g. 1d" }[k] })]));
  const previewBtn = h("button", { type: "button", id: "preview" }, "Preview");
  const saveBtn = h("button", { type: "button", id: "save", disabled: true }, "Save");
  const runBtn = h("button", { type: "button", id: "run-sweep", class: "danger" }, "Run sweep now");
  const saveNote = h("small", { id: "save-note" }, "Save needs a preview of exactly these rules first.");
  const previewOut = h("div", { id: "preview-out" });
  const sweepOut = h("div", { id: "sweep-out" });
  let previewed = null; // the editor's text the shown preview was made of

  const refreshSave = () => {
    const ok = previewed !== null && textarea.value === previewed;
    saveBtn.disabled = !ok;
    saveNote.textContent = ok ? "The preview shown is of these rules." : "Save needs a preview of exactly these rules first.";
  };
  const parsed = () => {
    try {
      const rules = JSON.parse(textarea.value);
      if (rules === null || typeof rules !== "object" || Array.isArray(rules)) throw new Error("not an object");
      return rules;
    } catch (e) {
      throw new Error(`The rules are not a JSON object: ${e.message}`);
    }
  };
  const fillSimple = () => {
    let d = {};
    try { d = (parsed().default || {}); } catch { return; }
    for (const [k, input] of Object.entries(simple)) input.value = d[k] ?? "";
  };
  const setEditor = (rules) => {
    textarea.value = JSON.stringify(rules, null, 2);
    fillSimple();
    refreshSave();
  };
  textarea.addEventListener("input", () => { fillSimple(); refreshSave(); });
  for (const [k, input] of Object.entries(simple)) {
    input.addEventListener("input", () => {
      let rules;
      try { rules = parsed(); } catch (e) { return say(e.message); }
      rules.default = { ...(rules.default || {}) };
      if (input.value.trim()) rules.default[k] = input.value.trim();
      else delete rules.default[k];
      textarea.value = JSON.stringify(rules, null, 2);
      refreshSave();
    });
  }

  const render = async () => {
    const r = await api("GET", "/api/v1/retention");
    if (!live()) return null;
    const eff = Object.entries(r.effective || {});
    status.replaceChildren(
      h("h3", {}, "Rules in force"),
      facts("rules-meta", r, ["version", "source", "changed", "changed_by", "min_age_floor"]),
      h("pre", { id: "rules-in-force" }, JSON.stringify(r.rules, null, 2)),
      h("h3", {}, "Effective rule per camera"),
      table("effective", ["camera", "max age", "max bytes", "min age"],
            eff.map(([cam, rule]) => [{ dataset: { camera: cam } }, cam, rule.max_age ?? "—", rule.max_bytes ?? "—",
                                      rule.min_age ?? "—"])),
      h("h3", {}, "Sweep"),
      facts("sweep-status", r.sweep));
    return r;
  };

  previewBtn.addEventListener("click", act(async () => {
    const text = textarea.value;
    const rules = parsed();
    previewed = null;
    refreshSave();
    const pv = await api("POST", "/api/v1/retention/preview", { rules });
    if (!live()) return;
    previewed = text;
    previewOut.replaceChildren(previewReport(pv));
    refreshSave();
    say(textarea.value === text ? "Preview shown: nothing was deleted. Save makes these rules the rules in force." : "", "info");
  }));
  saveBtn.addEventListener("click", act(async () => {
    if (previewed === null || textarea.value !== previewed) return refreshSave();
    const saved = await api("PUT", "/api/v1/retention", JSON.parse(previewed));
    previewed = null;
    setEditor(saved.rules);
    previewOut.replaceChildren();
    await render();
    say("Saved.", "info");
  }));
  runBtn.addEventListener("click", act(async () => {
    if (!confirm("Run a retention sweep now? It deletes what the rules in force allow (not the rules in the editor).")) return;
    runBtn.disabled = true;
    try {
      const report = await api("POST", "/api/v1/retention/run");
      if (!live()) return;
      sweepOut.replaceChildren(sweepReport(report));
      say(`Sweep ${report.run} done: ${report.deleted_segments} segments deleted.`, "info");
      await render();
    } finally {
      runBtn.disabled = false;
    }
  }));

  const r = await render();
  if (!r || !live()) return;
  setEditor(r.rules);
  app.replaceChildren(h("div", { class: "admin", id: "admin-retention" },
    h("h2", {}, "Retention"),
    h("div", { class: "columns" },
      h("section", { class: "panel" }, status),
      h("section", { class: "panel" },
        h("h3", {}, "Edit the rules"),
        h("div", { class: "admin-form simple" },
          field("Default max age", simple.max_age), field("Default max bytes", simple.max_bytes),
          field("Default min age", simple.min_age)),
        field("Rules (RetentionRules JSON: default, cameras, quota_bytes, high_watermark, low_watermark)", textarea),
        h("div", { class: "buttons" }, previewBtn, saveBtn, saveNote),
        previewOut,
        h("h3", {}, "Sweep now"),
        h("div", { class: "buttons" }, runBtn, h("small", {}, "with the rules in force")),
        sweepOut))));
}

function previewReport(pv) {
  const cams = Object.entries(pv.cameras || {});
  return h("div", { class: "report", id: "preview-report",
                    dataset: { deleteCount: pv.delete_count, deleteBytes: pv.delete_bytes, heldBytes: pv.held_bytes,
                               usageBefore: pv.usage_before, usageAfter: pv.usage_after } },
    h("h4", {}, `Preview at ${time(pv.at)}: a sweep would delete ${pv.delete_count} segments (${bytes(pv.delete_bytes)})`),
    table("preview-totals", ["delete count", "delete bytes", "held bytes", "usage before", "usage after",
                             "pending bytes", "quota unmet"],
          [[{}, String(pv.delete_count), bytes(pv.delete_bytes), bytes(pv.held_bytes), bytes(pv.usage_before),
            bytes(pv.usage_after), pv.pending_bytes == null ? "—" : bytes(pv.pending_bytes),
            pv.quota_unmet == null ? "—" : yes(pv.quota_unmet)]]),
    table("preview-cameras", ["camera", "delete count", "delete bytes", "held", "locked", "usage before",
                              "usage after", "oldest deleted", "newest deleted", "by rule"],
          cams.map(([cam, c]) => [{ dataset: { camera: cam, deleteCount: c.delete_count } }, cam, String(c.delete_count),
            bytes(c.delete_bytes), bytes(c.held_bytes), bytes(c.locked_bytes), bytes(c.usage_before),
            bytes(c.usage_after), time(c.oldest), time(c.newest), JSON.stringify(c.rules || {})]),
          "no footage"));
}

function sweepReport(r) {
  const cams = Object.entries(r.cameras || {});
  return h("div", { class: "report", id: "sweep-report",
                    dataset: { run: r.run, deletedSegments: r.deleted_segments, deletedBytes: r.deleted_bytes } },
    h("h4", {}, `Sweep ${r.run} (${r.trigger}): ${r.deleted_segments} segments deleted (${bytes(r.deleted_bytes)})`),
    facts("sweep-facts", r, ["started", "finished", "usage_before", "usage_after", "pending_left", "failed_count",
                             "quota_unmet", "free_needed", "legal_holds", "error"]),
    cams.length ? table("sweep-cameras", ["camera", "segments", "bytes", "by rule"],
                        cams.map(([cam, c]) => [{}, cam, String(c.segments), bytes(c.bytes), JSON.stringify(c.rules || {})]))
      : null,
    r.failed && r.failed.length ? table("sweep-failed", ["segment", "error"], r.failed.map((f) => [{}, f.segment, f.error])) : null);
}

// ---------------------------------------------------------------------- people and tokens

async function peoplePage(app, live) {
  const users = h("div", { id: "user-list" });
  const tokens = h("div", { id: "token-list" });
  const shownOnce = h("div", { id: "new-token-slot" });
  onLeave(() => shownOnce.replaceChildren()); // a token is shown once: not kept when the page is left

  const patch = async (name, body, words) => {
    await api("PATCH", `/api/v1/users/${enc(name)}`, body);
    say(words, "info");
    await renderUsers();
  };
  const renderUsers = async () => {
    const list = (await api("GET", "/api/v1/users")).users;
    if (!live()) return;
    users.replaceChildren(table("users", ["name", "role", "cameras", "disabled", "created", "set cameras", "new password", ""],
      list.map((u) => {
        const role = select("role", ROLES, u.role, { class: "role", "aria-label": `role of ${u.name}` });
        role.addEventListener("change", act(async () => {
          try {
            await patch(u.name, { role: role.value }, `Saved: ${u.name} is now ${role.value}.`);
          } catch (e) {
            role.value = u.role;
            throw e;
          }
        }));
        const cams = h("form", { class: "inline cameras" },
          h("input", { name: "cameras", value: (u.cameras || []).join(", "), placeholder: "empty: every camera",
                       "aria-label": `cameras of ${u.name}` }),
          h("button", { type: "submit" }, "Set"));
        cams.addEventListener("submit", act(() => patch(u.name, { cameras: cameraList(cams.elements.cameras.value) },
                                                        `Saved: cameras of ${u.name}.`)));
        const pw = h("form", { class: "inline password" },
          h("input", { name: "password", type: "password", autocomplete: "new-password", minlength: 10,
                       placeholder: "10 characters or more", "aria-label": `new password of ${u.name}` }),
          h("button", { type: "submit" }, "Set"));
        pw.addEventListener("submit", act(async () => {
          const password = pw.elements.password.value;
          pw.reset();
          await patch(u.name, { password }, `Saved: new password of ${u.name} (their sessions ended).`);
        }));
        return [{ dataset: { user: u.name, role: u.role, disabled: u.disabled }, class: u.disabled ? "disabled" : null },
          u.name, role, scope(u.cameras), yes(u.disabled), time(u.created), cams, pw,
          button(u.disabled ? "Enable" : "Disable", { class: u.disabled ? "enable" : "disable" },
                 () => patch(u.name, { disabled: !u.disabled },
                             u.disabled ? `${u.name} enabled.` : `${u.name} disabled: their sessions ended.`))];
      })));
  };
  const renderTokens = async () => {
    const list = (await api("GET", "/api/v1/tokens")).tokens;
    if (!live()) return;
    tokens.replaceChildren(table("tokens", ["name", "role", "cameras", "created", "revoked", ""],
      list.map((t) => [{ dataset: { token: t.name, revoked: t.revoked != null }, class: t.revoked ? "revoked" : null },
        t.name, t.role, scope(t.cameras), time(t.created), t.revoked ? time(t.revoked) : "",
        t.revoked ? "" : button("Revoke", { class: "revoke danger" }, async () => {
          if (!confirm(`Revoke token ${t.name}? Machines using it are refused from now on.`)) return;
          await api("DELETE", `/api/v1/tokens/${enc(t.name)}`);
          say(`Token ${t.name} revoked.`, "info");
          await renderTokens();
        })])));
  };

  const addUser = h("form", { id: "add-user", class: "admin-form", autocomplete: "off" },
    field("Name", h("input", { name: "name", required: true, maxlength: 64, autocomplete: "off" })),
    field("Role", select("role", ROLES, "viewer")),
    field("Cameras", h("input", { name: "cameras", placeholder: "a, b (empty: every camera)" })),
    field("Password", h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" }),
          "10 characters or more"),
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Add user")));
  addUser.addEventListener("submit", act(async () => {
    const body = { name: value(addUser, "name"), role: value(addUser, "role"),
                   cameras: cameraList(value(addUser, "cameras")), password: addUser.elements.password.value };
    try {
      await api("POST", "/api/v1/users", body);
    } finally {
      addUser.elements.password.value = ""; // never kept in the page, refused or not
    }
    addUser.reset();
    say(`Saved. User ${body.name} added.`, "info");
    await renderUsers();
  }));

  const addToken = h("form", { id: "add-token", class: "admin-form", autocomplete: "off" },
    field("Name", h("input", { name: "name", required: true, maxlength: 64, autocomplete: "off" })),
    field("Role", select("role", ROLES, "viewer")),
    field("Cameras", h("input", { name: "cameras", placeholder: "a, b (empty: every camera)" })),
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Create token")));
  addToken.addEventListener("submit", act(async () => {
    const body = { name: value(addToken, "name"), role: value(addToken, "role"),
                   cameras: cameraList(value(addToken, "cameras")) };
    const made = await api("POST", "/api/v1/tokens", body);
    addToken.reset();
    shownOnce.replaceChildren(h("div", { class: "once" },
      h("p", {}, `Token ${made.name} (${made.role}, ${scope(made.cameras)}): shown only this once. Copy it now; `
                 + "nvr keeps only its hash."),
      h("code", { id: "new-token" }, made.token),
      button("Hide", { class: "hide" }, () => shownOnce.replaceChildren())));
    say(`Saved. Token ${made.name} created.`, "info");
    await renderTokens();
  }));

  await Promise.all([renderUsers(), renderTokens()]);
  if (!live()) return;
  app.replaceChildren(h("div", { class: "admin", id: "admin-people" },
    h("h2", {}, "People"),
    h("section", { class: "panel" }, h("h3", {}, "Users"), users, h("h3", {}, "Add user"), addUser),
    h("section", { class: "panel" }, h("h3", {}, "API tokens"),
      h("p", { class: "note" }, "Tokens are for machines; people log in with a name and a password."),
      tokens, shownOnce, h("h3", {}, "Create token"), addToken)));
}

const VIEWS = { cameras: camerasPage, retention: retentionPage, people: peoplePage };
