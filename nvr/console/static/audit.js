// The audit log (#audit): the hash-chained log of who did what, filtered by actor, action, target and time
// (UTC), a page at a time, oldest first (the API's order); "Next page" continues after the page's last entry.
import { api, h, onLeave, say, shown } from "/console/ui.js";

const fromInput = (v) => (v ? new Date(Date.parse(`${v}Z`)).toISOString() : null); // datetime-local, read as UTC

export async function showAudit(app) {
  let here = true;
  onLeave(() => { here = false; });
  const input = (name, attrs = {}) => h("input", { name, id: `audit-${name}`, autocomplete: "off", ...attrs });
  const form = h("form", { id: "audit-filter", class: "admin-form filter" },
    h("label", {}, h("span", {}, "Actor"), input("actor", { placeholder: "user:root, token:ops, system" })),
    h("label", {}, h("span", {}, "Action"), input("action", { placeholder: "login, camera.update, hold.place" })),
    h("label", {}, h("span", {}, "Target"), input("target", { placeholder: "a camera, user, hold, segment" })),
    h("label", {}, h("span", {}, "From (UTC)"), input("from", { type: "datetime-local", step: 1 })),
    h("label", {}, h("span", {}, "To (UTC)"), input("to", { type: "datetime-local", step: 1 })),
    h("label", {}, h("span", {}, "Page size"), input("limit", { type: "number", min: 1, max: 1000, value: 50 })),
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Show"),
      h("button", { type: "reset", id: "audit-clear" }, "Clear")));
  const info = h("p", { id: "audit-page", class: "note" });
  const list = h("div", { id: "audit-list" });
  const next = h("button", { type: "button", id: "next-page", disabled: true }, "Next page");
  const first = h("button", { type: "button", id: "first-page", disabled: true }, "First page");
  let query = null, pageNo = 1, cursor = null, asked = 0; // asked: the latest request (an earlier answer is dropped)

  const filters = () => {
    const q = new URLSearchParams();
    for (const k of ["actor", "action", "target"]) {
      const v = form.elements[k].value.trim();
      if (v) q.set(k, v);
    }
    const start = fromInput(form.elements.from.value), end = fromInput(form.elements.to.value);
    if (form.elements.from.value && start == null) throw new Error("From: not a date and time");
    if (start) q.set("start", start);
    if (end) q.set("end", end);
    q.set("limit", String(Math.max(1, Math.min(1000, Number(form.elements.limit.value) || 50))));
    return q;
  };

  const load = async (after) => {
    const mine = ++asked;
    const q = new URLSearchParams(query);
    if (after != null) q.set("cursor", after);
    next.disabled = first.disabled = true;
    let page;
    try {
      page = await api("GET", `/api/v1/audit?${q}`);
    } catch (err) {
      if (mine === asked) { next.disabled = !cursor; first.disabled = pageNo === 1; } // the page shown stays
      throw err;
    }
    if (!here || mine !== asked) return;
    cursor = page.next_cursor;
    pageNo = after == null ? 1 : pageNo + 1;
    const shownTable = entriesTable(page.entries);
    Object.assign(shownTable.dataset, { query: String(query), page: pageNo });
    list.replaceChildren(shownTable);
    info.textContent = `Page ${pageNo}: ${page.entries.length} entries${cursor ? "" : " (the end of the log)"}`;
    next.disabled = !cursor;
    first.disabled = pageNo === 1;
  };
  const run = (f) => async (ev) => {
    if (ev) ev.preventDefault();
    try {
      await f();
    } catch (err) {
      if (document.getElementById("message").hidden) say(err.message);
    }
  };
  form.addEventListener("submit", run(async () => {
    say("");
    query = filters();
    await load(null);
  }));
  next.addEventListener("click", run(() => load(cursor)));
  first.addEventListener("click", run(() => load(null)));

  query = filters();
  const shownFirst = load(null);
  app.replaceChildren(h("div", { class: "admin", id: "audit" }, h("h2", {}, "Audit log"), form, info, list,
                         h("div", { class: "buttons pager" }, first, next)));
  await shownFirst;
}

function entriesTable(entries) {
  const rows = entries.map((e) => h("tr", { dataset: { id: e.id, action: e.action, target: e.target, actor: e.actor },
                                            class: e.redacted ? "redacted" : null },
    h("td", { class: "time" }, shown(Date.parse(e.time))),
    h("td", {}, e.actor, e.role ? h("small", {}, ` (${e.role})`) : null),
    h("td", {}, e.action),
    h("td", { class: "target" }, e.target),
    h("td", { class: "detail" }, h("code", {}, JSON.stringify(e.detail ?? {})),
      e.redacted ? h("small", {}, " (cut to your cameras)") : null)));
  return h("table", { class: "admin-table", id: "audit-log" },
    h("thead", {}, h("tr", {}, ["time (UTC)", "actor", "action", "target", "detail"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", { class: "empty" }, h("td", { colspan: 5 }, "no entries"))));
}
