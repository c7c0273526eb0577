// The console's own socket. The page is a client device: it offers its device token as the
// subprotocol `bearer.<token>` (a browser can set no header, and a URL ends up in logs), and
// it opens with `since` so that it gets its paired devices' presence and whatever it missed
// while away (contract §6, §8). Dropped sockets are reopened with capped, jittered backoff.

const SUBPROTOCOL = "simbridge";
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 15000;
// Closes after which reopening would only fight: replaced by another socket for this device,
// its token revoked (rotated by another tab), or the device removed.
const FINAL_CLOSES = { 4000: "replaced", 4001: "revoked", 4002: "removed" };

export class Link {
  constructor({ deviceId, token, since, onFrame, onState, onSeq }) {
    Object.assign(this, { deviceId, token, since, onFrame, onState, onSeq });
    this.ws = null;
    this.replayUntil = 0; // the greeting's seq: frames up to it are replayed, not live
    this.failures = 0;
    this.timer = null;
    this.stopped = false;
  }

  open() {
    clearTimeout(this.timer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/ws/client/${this.deviceId}?since=${this.since}`;
    const ws = new WebSocket(url, [SUBPROTOCOL, `bearer.${this.token}`]);
    this.ws = ws;
    this.onState("connecting");
    ws.addEventListener("message", (message) => this.receive(message.data));
    ws.addEventListener("close", (event) => this.closed(ws, event));
  }

  receive(data) {
    const receivedAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    let replayed = false;
    if (frame.type === "connected") {
      this.failures = 0;
      this.replayUntil = Number.isInteger(frame.seq) ? frame.seq : 0;
      this.onState("live");
    } else if (Number.isInteger(frame.seq) && frame.seq > this.since) {
      replayed = frame.seq <= this.replayUntil; // kept while this console was away
      this.since = frame.seq;
      this.onSeq(frame.seq);
    }
    this.onFrame(frame, receivedAt, replayed);
  }

  closed(ws, event) {
    if (this.ws !== ws) return; // a socket this link already replaced
    this.ws = null;
    if (this.stopped) return;
    const final = FINAL_CLOSES[event.code];
    if (final) {
      this.onState(final);
      return;
    }
    const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.failures);
    this.failures += 1;
    const wait = delay / 2 + Math.random() * (delay / 2);
    this.onState("offline", wait);
    this.timer = setTimeout(() => this.open(), wait);
  }

  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // Open again now (after a new pairing: presence frames come for the pairings of the moment).
  reopen() {
    const old = this.ws;
    this.ws = null;
    if (old) old.close(1000);
    this.open();
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}
