// The console's own socket. The page is a client device: it offers its device token as the
// subprotocol `bearer.<token>` (a browser can set no header, and a URL ends up in logs), and
// it opens with `since` so that it gets its paired devices' presence and whatever it missed
// while away (contract §6, §8). Dropped sockets are reopened with capped, jittered backoff,
// which starts again from its shortest delay only once a socket has stayed up a while: a relay
// that greets and then closes at once is not hammered.

// Test knobs: the browser tests set `globalThis.simbridgeConsoleKnobs` before the page's
// scripts run (nothing in the page does; the CSP lets no other script run).
const KNOBS = globalThis.simbridgeConsoleKnobs ?? {};
const knob = (name, fallback) =>
  Number.isFinite(KNOBS[name]) && KNOBS[name] >= 0 ? KNOBS[name] : fallback;

const SUBPROTOCOL = "simbridge";
const RETRY_FIRST_MS = knob("retryFirstMs", 500);
const RETRY_MAX_MS = knob("retryMaxMs", 15000);
const STABLE_MS = knob("stableMs", 10000); // up this long after its greeting: backoff starts over
const CHECK_AFTER = Math.max(1, knob("checkAfter", 3)); // sockets refused in a row, then ask REST
// Closes after which reopening would only fight: replaced by another socket for this device
// (another tab, or the page reloaded), its token revoked (rotated by another tab), or the
// device removed.
const FINAL_CLOSES = { 4000: "replaced", 4001: "revoked", 4002: "removed" };

export class Link {
  // onFrame(frame, receivedAt, note): note is "replayed" (a frame kept while this console was
  //   away), "rewound" (a greeting whose seq is below the remembered since) or null;
  // onState(state, wait); onSeq(seq): the since to remember;
  // onRefused(link): called after CHECK_AFTER sockets in a row closed before their greeting
  //   (a refused handshake looks like any dropped socket to a page): it may set `link.token`
  //   or `halt` the link.
  constructor({ deviceId, token, since, onFrame, onState, onSeq, onRefused }) {
    Object.assign(this, { deviceId, token, since, onFrame, onState, onSeq, onRefused });
    this.ws = null;
    this.replayUntil = 0; // the greeting's seq: frames up to it are replayed, not live
    this.failures = 0; // sockets since the last one that stayed up STABLE_MS
    this.refused = 0; // sockets in a row closed before their greeting
    this.greeted = false; // whether the current socket was greeted
    this.timer = null;
    this.stableTimer = null;
    this.stopped = false;
  }

  open() {
    clearTimeout(this.timer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/ws/client/${this.deviceId}?since=${this.since}`;
    const ws = new WebSocket(url, [SUBPROTOCOL, `bearer.${this.token}`]);
    this.ws = ws;
    this.greeted = false;
    this.onState("connecting");
    ws.addEventListener("message", (message) => this.receive(ws, message.data));
    ws.addEventListener("close", (event) => this.closed(ws, event));
  }

  receive(ws, data) {
    if (this.ws !== ws) return;
    const receivedAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    let note = null;
    if (frame.type === "connected") {
      this.greeted = true;
      this.refused = 0;
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => {
        if (this.ws === ws) this.failures = 0;
      }, STABLE_MS);
      const latest = Number.isInteger(frame.seq) ? frame.seq : 0;
      if (latest < this.since) {
        // The relay's seqs went back (it restarted without what it kept): what it sends from
        // now on is numbered from `latest`, and a since above it would skip it at the next open.
        note = "rewound";
        this.since = latest;
        this.onSeq(latest);
      }
      this.replayUntil = latest;
      this.onState("live");
    } else if (Number.isInteger(frame.seq) && frame.seq > this.since) {
      if (frame.seq <= this.replayUntil) note = "replayed"; // kept while this console was away
      this.since = frame.seq;
      this.onSeq(frame.seq);
    }
    this.onFrame(frame, receivedAt, note);
  }

  closed(ws, event) {
    if (this.ws !== ws) return; // a socket this link already replaced
    this.ws = null;
    clearTimeout(this.stableTimer);
    if (this.stopped) return;
    const final = FINAL_CLOSES[event.code];
    if (final) {
      this.halt(final);
      return;
    }
    const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.failures);
    this.failures = Math.min(this.failures + 1, 30);
    const wait = delay / 2 + Math.random() * (delay / 2);
    this.onState("offline", wait);
    this.timer = setTimeout(() => this.open(), wait);
    if (!this.greeted) {
      this.refused += 1;
      if (this.refused % CHECK_AFTER === 0 && this.onRefused) this.onRefused(this);
    }
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

  // Stop for good, saying why (a state of FINAL_CLOSES): reopening would only fight.
  halt(state) {
    this.close();
    this.onState(state);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.stableTimer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}
