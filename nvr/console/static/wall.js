// The wall: the cameras a person may see, 1/4/9/16 live tiles (substreams where declared), each with its
// capture clock and its health from the status API.
import { LivePlayer } from "/console/liveplayer.js";
import { api, every, h, onLeave, shown } from "/console/ui.js";

export async function showWall(app, count) {
  const { cameras } = await api("GET", "/api/v1/cameras");
  const visible = cameras.filter((c) => c.enabled).slice(0, count);
  const side = Math.ceil(Math.sqrt(count));
  const wall = h("div", { class: "wall", id: "wall", style: { gridTemplateColumns: `repeat(${side}, 1fr)` } });
  app.replaceChildren(wall);
  const players = [];
  for (const cam of visible) {
    const clock = h("span", { class: "clock" }), health = h("span", { class: "health" });
    const tile = h("div", { class: "tile", dataset: { camera: cam.id } },
                   h("video", { muted: true, playsinline: true }),
                   h("span", { class: "label" }, h("a", { href: `#camera/${encodeURIComponent(cam.id)}` }, cam.name || cam.id)),
                   health, clock);
    tile.querySelector("video").muted = true;
    wall.append(tile);
    const stream = cam.live_url && count > 1 ? "?stream=sub" : "";
    const player = new LivePlayer(tile.querySelector("video"), `/api/v1/cameras/${encodeURIComponent(cam.id)}/live${stream}`,
                                  { onState: (s, why) => { tile.dataset.state = s; if (why) tile.title = why; } });
    players.push({ player, camera: cam.id, clock, health });
    player.start();
    onLeave(() => player.stop());
  }
  every(250, () => {
    for (const p of players) p.clock.textContent = shown(p.player.wallClockAt());
  });
  const refresh = async () => {
    for (const p of players) {
      try {
        const st = await api("GET", `/api/v1/cameras/${encodeURIComponent(p.camera)}/status`, undefined, { quiet: true });
        p.health.className = `health ${st.health || st.state}`;
        p.health.textContent = st.problem ? `${st.health}: ${st.problem}` : (st.health || st.state);
      } catch (e) {
        p.health.textContent = e.message;
      }
    }
  };
  refresh();
  every(10_000, refresh);
}
