// nvr's live player: a camera's WebSocket feed (GET /api/v1/cameras/{id}/live) into a <video> through
// Media Source Extensions. Each binary message is "headers CRLF CRLF mp4-bytes" (nvr/live/framing.py):
// an init (a new SourceBuffer when its codecs differ from the current one) or a media segment, whose
// X-Wall-Clock and X-Media-Time map the video's timeline to the capture wall clock.

const SEPARATOR = [13, 10, 13, 10];
const MAX_HEADER = 4096;
const LIVE_EDGE_S = 1.5; // behind the newest buffered frame by more than this: jump to it
const KEEP_S = 30; // buffered media kept behind the playhead

export function parseMessage(buffer) {
  const bytes = new Uint8Array(buffer);
  const limit = Math.min(bytes.length - 3, MAX_HEADER);
  for (let i = 0; i < limit; i++) {
    if (bytes[i] === SEPARATOR[0] && bytes[i + 1] === SEPARATOR[1] && bytes[i + 2] === SEPARATOR[2]
        && bytes[i + 3] === SEPARATOR[3]) {
      const headers = {};
      for (const line of new TextDecoder().decode(bytes.subarray(0, i)).split("\r\n")) {
        const at = line.indexOf(": ");
        if (at > 0) headers[line.slice(0, at)] = line.slice(at + 2);
      }
      return { headers, body: bytes.subarray(i + 4) };
    }
  }
  throw new Error("a live message without its header block");
}

export class LivePlayer {
  constructor(video, url, { onState = () => {} } = {}) {
    this.video = video;
    this.url = url;
    this.onState = onState;
    this.queue = [];
    this.clock = []; // [{media, wall}] media seconds on the video's timeline -> capture ms
    this.mime = null;
    this.sourceBuffer = null;
    this.ws = null;
    this.stats = { messages: 0, skipped: 0, inits: 0 };
    this.ended = null;
  }

  start() {
    this.ws = new WebSocket(new URL(this.url, location.href).href.replace(/^http/, "ws"));
    this.ws.binaryType = "arraybuffer";
    this.ws.onmessage = (e) => this._message(e.data);
    this.ws.onclose = (e) => { this.ended = this.ended || `closed (${e.code})`; this.onState("ended", this.ended); };
    this.onState("connecting");
  }

  stop() {
    if (this.ws) this.ws.close();
    this.ws = null;
  }

  // The capture wall time (ms since the epoch) of the frame at video time t, null before any media.
  wallClockAt(t = this.video.currentTime) {
    let best = null;
    for (const point of this.clock) {
      if (point.media <= t + 1e-3) best = point;
    }
    return best ? best.wall + (t - best.media) * 1000 : null;
  }

  _message(data) {
    if (typeof data === "string") {
      this.ended = JSON.parse(data).end;
      this.onState("ended", this.ended);
      return;
    }
    const { headers, body } = parseMessage(data);
    this.stats.messages++;
    if (headers.Type === "init") {
      this.stats.inits++;
      if (headers["Content-Type"] !== this.mime) {
        this._newSource(headers["Content-Type"], body);
        return;
      }
    } else {
      this.stats.skipped = Number(headers["X-Skipped"] || 0);
      this.clock.push({ media: Number(headers["X-Media-Time"]), wall: Date.parse(headers["X-Wall-Clock"]) });
      if (this.clock.length > 600) this.clock.splice(0, this.clock.length - 600);
    }
    this.queue.push(body);
    this._append();
  }

  _newSource(mime, init) {
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      this.ended = `this browser can't play ${mime}`;
      this.onState("unsupported", this.ended);
      this.stop();
      return;
    }
    this.mime = mime;
    this.queue = [init];
    this.sourceBuffer = null;
    const source = new MediaSource();
    source.addEventListener("sourceopen", () => {
      this.sourceBuffer = source.addSourceBuffer(mime);
      this.sourceBuffer.mode = "segments";
      this.sourceBuffer.addEventListener("updateend", () => this._append());
      this._append();
    }, { once: true });
    this.video.src = URL.createObjectURL(source);
    this.video.play().catch(() => {});
  }

  _append() {
    const sb = this.sourceBuffer;
    if (!sb || sb.updating) return;
    const v = this.video;
    if (v.buffered.length) {
      const end = v.buffered.end(v.buffered.length - 1);
      if (end - v.currentTime > LIVE_EDGE_S) v.currentTime = Math.max(v.buffered.start(v.buffered.length - 1), end - 0.3);
      if (v.currentTime - v.buffered.start(0) > KEEP_S * 2) {
        sb.remove(0, v.currentTime - KEEP_S);
        return;
      }
    }
    const next = this.queue.shift();
    if (next) {
      sb.appendBuffer(next);
      this.onState("playing");
    }
  }
}
