// The nvr console: log in, then the pages a person's role allows. Plain modules, no bundler; every request
// is same-origin with the session cookie, every state-changing one with the session's CSRF token (ui.js).
// Pages: #wall, #camera/<id>, #system, #audit (evidence), #admin/cameras, #admin/retention, #admin/people (admin).
import { showAdmin } from "/console/admin.js";
import { showAudit } from "/console/audit.js";
import { showCamera } from "/console/camera.js";
import { api, everyCamera, h, hooks, leavePage, may, problemText, say, state } from "/console/ui.js";
import { showSystem } from "/console/system.js";
import { showWall } from "/console/wall.js";

const app = document.getElementById("app");
const bar = document.getElementById("bar");
const layout = document.getElementById("layout");

function showLogin(why) {
  leavePage();
  state.me = state.csrf = null;
  bar.hidden = true;
  say(why, "info");
  const form = h("form", { class: "login", id: "login" },
                 h("h1", {}, "nvr"),
                 h("label", {}, "Name ", h("input", { name: "name", autocomplete: "username", required: true })),
                 h("label", {}, "Password ", h("input", { name: "password", type: "password",
                                                           autocomplete: "current-password", required: true })),
                 h("button", { type: "submit" }, "Log in"));
  app.replaceChildren(form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const resp = await fetch("/api/v1/login", {
      method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
      body: JSON.stringify({ name: data.get("name"), password: data.get("password") }) });
    if (!resp.ok) {
      say(await problemText(resp));
      return;
    }
    start(await resp.json());
  });
}
hooks.loggedOut = showLogin;

// The navigation offers what the person's role and scope allow, nothing the API would refuse.
const PAGES = [
  ["#wall", "Wall", () => true],
  ["#system", "System", () => true],
  ["#audit", "Audit log", () => may("evidence")],
  ["#admin/cameras", "Cameras", () => may("admin")],
  ["#admin/retention", "Retention", () => may("admin") && everyCamera()],
  ["#admin/people", "People", () => may("admin") && everyCamera()],
];

function start(me) {
  state.me = { name: me.name, role: me.role, cameras: me.cameras ?? null };
  state.csrf = me.csrf;
  say("");
  bar.hidden = false;
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  document.getElementById("nav").replaceChildren(
    ...PAGES.filter(([, , ok]) => ok()).map(([href, label]) => h("a", { href, id: `nav-${href.slice(1).replace("/", "-")}` }, label)));
  route();
}

function route() {
  if (!state.me) return;
  leavePage();
  const hash = decodeURIComponent(location.hash);
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("here", hash.startsWith(a.getAttribute("href")));
  layout.parentElement.hidden = !(hash === "" || hash === "#wall");
  let shown;
  const cam = hash.match(/^#camera\/([^?]+)(?:\?(.*))?$/);
  if (cam) shown = showCamera(app, cam[1], new URLSearchParams(cam[2] || ""));
  else if (hash === "#system") shown = showSystem();
  else if (hash === "#audit" && may("evidence")) shown = showAudit(app);
  else if (hash.startsWith("#admin/") && may("admin")) shown = showAdmin(app, hash.slice(7));
  else shown = showWall(app, Number(layout.value));
  shown.catch(() => {}); // said already (api() shows the problem in words)
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
