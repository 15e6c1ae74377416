// nvr's recorded-footage player: a range's HLS playlist (GET /api/v1/cameras/{id}/vod.m3u8) played through
// Media Source Extensions from any instant. Each media segment's URI says where it sits on the playlist's
// timeline (?at=ms) and its EXT-X-PROGRAM-DATE-TIME when it was captured, so the player maps both ways:
// a clicked wall-clock time to a media position, and the frame on screen back to its capture time.

const AHEAD_S = 20; // media fetched ahead of the playhead
// Media segments start LEAD_S after their ?at= (nvr.playback.hls.LEAD_S: room for frames decoded before a
// segment's wall start), so a position on the media timeline is at + LEAD_S.
const LEAD_S = 10;

export function parsePlaylist(text, base) {
  const items = [];
  let init = null, wall = null, duration = null, cut = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("#EXT-X-MAP:")) init = new URL(line.match(/URI="([^"]+)"/)[1], base).href;
    else if (line.startsWith("#EXT-X-PROGRAM-DATE-TIME:")) wall = Date.parse(line.slice(25));
    else if (line.startsWith("#EXTINF:")) duration = parseFloat(line.slice(8));
    else if (line === "#EXT-X-DISCONTINUITY") cut = true;
    else if (line && !line.startsWith("#")) {
      const uri = new URL(line, base);
      items.push({ uri: uri.href, at: Number(uri.searchParams.get("at")) / 1000 + LEAD_S, duration, wall, init, cut });
      cut = false;
    }
  }
  return items;
}

export class VodPlayer {
  constructor(video) {
    this.video = video;
    this.items = [];
    this.next = 0;
    this.loading = false;
    this.generation = 0;
    this.frameS = null; // one frame's duration, measured from the frames presented (cameras differ)
    this._presented = 0; // presentedFrames at the last frame seen
    this._watchFrames();
  }

  _watchFrames() {
    if (!this.video.requestVideoFrameCallback) return; // older browsers: frame step falls back to 1/15 s
    let last = null;
    const seen = (_now, meta) => {
      const d = last == null ? 0 : meta.mediaTime - last;
      // Only consecutive frames of normal playback count: a seek or a skipped frame is not a frame's duration.
      if (d > 0.001 && d < 0.5 && meta.presentedFrames === this._presented + 1) this.frameS = d;
      last = meta.mediaTime;
      this._presented = meta.presentedFrames;
      this.video.requestVideoFrameCallback(seen);
    };
    this.video.requestVideoFrameCallback(seen);
  }

  // Pause and show the next frame.
  step() {
    this.video.pause();
    this.video.currentTime += this.frameS || 1 / 15;
  }

  async load(playlistUrl) {
    const resp = await fetch(playlistUrl, { credentials: "same-origin" });
    if (!resp.ok) throw new Error((await resp.json().catch(() => ({}))).detail || `HTTP ${resp.status}`);
    this.items = parsePlaylist(await resp.text(), new URL(playlistUrl, location.href));
  }

  // The capture time (ms) of the frame at video time t, null outside the footage.
  wallClockAt(t = this.video.currentTime) {
    const s = this.items.find((i) => t >= i.at - 1e-3 && t < i.at + i.duration);
    return s ? s.wall + (t - s.at) * 1000 : null;
  }

  // Where wall time w is on the media timeline, and the segment it is in (the next one when w is in a gap).
  locate(w) {
    let i = this.items.findIndex((s) => w < s.wall + s.duration * 1000);
    if (i < 0) i = this.items.length - 1;
    const s = this.items[i];
    return { index: i, media: s.at + Math.max(0, (w - s.wall) / 1000) };
  }

  async playFrom(wallMs) {
    const { index, media } = this.locate(wallMs);
    const generation = ++this.generation;
    const first = await fetch(this.items[index].init, { credentials: "same-origin" });
    const mime = first.headers.get("X-Codecs");
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) throw new Error(`this browser can't play ${mime}`);
    const source = new MediaSource();
    this.video.src = URL.createObjectURL(source);
    await new Promise((ok) => source.addEventListener("sourceopen", ok, { once: true }));
    this.sb = source.addSourceBuffer(mime);
    this.sb.mode = "segments";
    await this._append(await first.arrayBuffer());
    this.initUri = this.items[index].init;
    this.first = this.next = index;
    await this._fill(generation);
    this.video.currentTime = media;
    this.video.play().catch(() => {});
    this.video.ontimeupdate = () => this._fill(generation);
    // Between two discontinuity sequences the media timeline may hold a short hole: step over it.
    this.video.onwaiting = () => {
      const b = this.video.buffered, t = this.video.currentTime;
      for (let i = 0; i < b.length; i++) {
        if (b.start(i) > t) {
          this.video.currentTime = b.start(i);
          break;
        }
      }
    };
  }

  // Put the playhead on wall time w: a seek when that footage is loaded already, a fresh start when not.
  async seekWall(w) {
    const { index, media } = this.locate(w);
    if (this.sb && index >= this.first && index < this.next) this.video.currentTime = media;
    else await this.playFrom(w);
  }

  _append(bytes) {
    return new Promise((ok, fail) => {
      this.sb.addEventListener("updateend", ok, { once: true });
      this.sb.addEventListener("error", fail, { once: true });
      this.sb.appendBuffer(bytes);
    });
  }

  async _fill(generation) {
    if (this.loading) return;
    this.loading = true;
    try {
      const horizon = (this.video.currentTime || this.items[this.next]?.at || 0) + AHEAD_S;
      while (generation === this.generation && this.next < this.items.length && this.items[this.next].at < horizon) {
        const s = this.items[this.next];
        if (s.init !== this.initUri) {
          const resp = await fetch(s.init, { credentials: "same-origin" });
          const mime = resp.headers.get("X-Codecs");
          if (this.sb.changeType) this.sb.changeType(mime);
          await this._append(await resp.arrayBuffer());
          this.initUri = s.init;
        }
        const resp = await fetch(s.uri, { credentials: "same-origin" });
        if (!resp.ok) throw new Error(`segment: HTTP ${resp.status}`);
        await this._append(await resp.arrayBuffer());
        this.next++;
      }
    } finally {
      this.loading = false;
    }
  }

  stop() {
    this.generation++;
    this.video.ontimeupdate = this.video.onwaiting = null;
    this.video.removeAttribute("src");
    this.video.load();
  }
}
