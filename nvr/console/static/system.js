// The system page: what a person may know about the server's health (alarms, their cameras' recording, storage),
// the signing keys a court checks exports with, and for an admin of every camera the recording cluster.
import { api, every, everyCamera, h, may, page, shown } from "/console/ui.js";

const REFRESH_MS = 5000;

export async function showSystem() {
  const app = page("System");
  const out = h("div", { class: "system", id: "system" });
  app.append(out);
  const draw = async () => {
    const [status, keys] = await Promise.all([api("GET", "/api/v1/status"), api("GET", "/api/v1/keys")]);
    // Single node: the API answers 404 with a detail that says so, shown as it is.
    const cluster = may("admin") && everyCamera() ? await api("GET", "/api/v1/cluster", undefined, { quiet: true })
      .catch((e) => ({ single: e.message })) : null;
    out.replaceChildren(alarms(status), cameras(status), storage(status), signingKeys(keys), cluster ? nodes(cluster) : "");
  };
  await draw();
  every(REFRESH_MS, () => draw().catch(() => {}));
}

const table = (id, head, rows) => h("table", { id }, h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))),
                                    h("tbody", {}, rows));
const when = (iso) => (iso ? shown(Date.parse(iso)) : "");

function alarms(status) {
  const list = status.alarms || [];
  return h("section", {}, h("h3", {}, "Alarms"), list.length
    ? h("ul", { id: "alarms" }, list.map((a) => h("li", { class: "alarm" }, a)))
    : h("p", { id: "alarms", dataset: { none: "" } }, "None: everything is recording and stored."));
}

function cameras(status) {
  const rows = Object.entries(status.cameras || {}).sort(([a], [b]) => a.localeCompare(b)).map(([id, c]) =>
    h("tr", { class: c.health, dataset: { camera: id } },
      h("td", {}, h("a", { href: `#camera/${encodeURIComponent(id)}` }, id)), h("td", {}, c.health), h("td", {}, c.state),
      h("td", {}, when(c.last_segment_end)), h("td", {}, when(c.down_since)), h("td", {}, String(c.restarts ?? "")),
      h("td", {}, c.problem || "")));
  return h("section", {}, h("h3", {}, "Recording"),
    table("recording", ["camera", "health", "recorder", "last segment ends (UTC)", "down since (UTC)", "restarts", "problem"], rows));
}

function storage(status) {
  const s = status.storage || {}, facts = [["object store", s.ok ? "ok" : `failing: ${s.error || s.cause || "?"}`]];
  // A camera-scoped person sees only whether storage works; the rest concerns every camera.
  if (status.spool) facts.push(["spool", `${status.spool.files} files, ${mib(status.spool.bytes)} of ${mib(status.spool.limit_bytes)}, ` +
                                         `${mib(status.spool.free_bytes)} free on its disk`]);
  if (status.ingest) facts.push(["ingest", `${status.ingest.segments} segments stored since start, ${status.ingest.errors} errors, ` +
                                           `${status.ingest.gaps} gaps` +
                                           (status.ingest.stalled?.length ? `; stalled: ${status.ingest.stalled.join(", ")}` : "")]);
  return h("section", {}, h("h3", {}, "Storage"),
    h("dl", { id: "storage" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
}

const mib = (n) => (n == null ? "?" : `${(n / 2 ** 20).toFixed(1)} MiB`);

function signingKeys(keys) {
  const rows = keys.keys.map((k) => h("tr", { dataset: { key: k.key_id, current: k.current } },
    h("td", {}, k.key_id), h("td", {}, k.current ? "signing now" : "older, still trusted"),
    h("td", {}, h("code", {}, k.fingerprint_sha256)),
    h("td", {}, h("a", { href: `data:application/x-pem-file,${encodeURIComponent(k.public_key_pem)}`,
                          download: `${k.key_id}.pub.pem` }, "public key (PEM)"))));
  return h("section", {}, h("h3", {}, "Signing keys"),
    h("p", {}, "Checkpoints and export manifests are signed with these Ed25519 keys; a court checks a bundle with the public key."),
    table("keys", ["key", "use", "SHA-256 fingerprint", ""], rows));
}

function nodes(cluster) {
  if (cluster.single) return h("section", {}, h("h3", {}, "Cluster"), h("p", { id: "cluster" }, cluster.single));
  const rows = cluster.nodes.map((n) => h("tr", { class: n.live ? "up" : "down", dataset: { node: n.id } },
    h("td", {}, n.id), h("td", {}, n.address || ""), h("td", {}, n.state), h("td", {}, n.live ? "yes" : "no"),
    h("td", {}, `${Math.round(n.heartbeat_seconds_ago)} s ago`), h("td", {}, `${n.cameras.length} of ${n.capacity}`),
    h("td", {}, n.cameras.map((c) => c.camera).join(", "))));
  return h("section", {}, h("h3", {}, `Cluster (answered by ${cluster.answered_by})`),
    table("cluster", ["node", "address", "state", "live", "heartbeat", "cameras", "which"], rows),
    cluster.unassigned.length ? h("p", { class: "alarm" }, `Recorded by no node: ${cluster.unassigned.join(", ")}`) : "");
}
