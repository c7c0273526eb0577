// The SimBridge console: sign in, see and add devices, pair, send from a host, watch the feed.
//
// Where things live: the account token in sessionStorage (this tab only, gone when it
// closes; sent only in the Authorization header). The console's device id and the last seq it
// saw in localStorage (not secrets). Its device token only in memory: a new one is issued at
// each start, which also retires any other tab's.

import { Api, ApiError, call } from "./api.js";
import { drawDevices } from "./devices.js";
import { $, clockTime, h, randomId, show } from "./dom.js";
import { describeCommand, describeError, describeEvent, describeSim } from "./feed.js";
import { Link } from "./link.js";

const SESSION_KEY = "simbridge.session";
const CONSOLE_NAME = "Browser console";
const FEED_LIMIT = 200;
const REFRESH_MS = 15000;
const SENT_LIMIT = 100; // commands remembered to describe their answers

const app = {
  session: null, // {token, userId, username}
  api: null,
  link: null,
  consoleId: null,
  devices: new Map(), // id -> device as GET /devices lists it, online state kept live
  pairings: [],
  codes: new Map(), // host id -> {code, until}
  sent: new Map(), // req_id -> command frame this console sent, the latest SENT_LIMIT
  refreshTimer: null,
  live: false, // whether the console's own socket is greeted
};

// --- signing in -------------------------------------------------------------------------------
let authMode = "login";

function setAuthMode(mode) {
  authMode = mode;
  $("tab-login").setAttribute("aria-selected", String(mode === "login"));
  $("tab-register").setAttribute("aria-selected", String(mode === "register"));
  $("auth-submit").textContent = mode === "login" ? "Sign in" : "Create account";
  $("auth-form").password.autocomplete = mode === "login" ? "current-password" : "new-password";
  show($("auth-error"), false);
}

async function submitAuth(event) {
  event.preventDefault();
  const form = event.target;
  const credentials = { username: form.username.value.trim(), password: form.password.value };
  const button = $("auth-submit");
  button.disabled = true;
  try {
    if (authMode === "register") await call("POST", "/auth/register", { body: credentials });
    const reply = await call("POST", "/auth/login", { body: credentials });
    const session = { token: reply.token, userId: reply.user_id, username: credentials.username };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    form.reset();
    await start(session);
  } catch (error) {
    $("auth-error").textContent = error.message;
    show($("auth-error"), true);
  } finally {
    button.disabled = false;
  }
}

function signOut() {
  if (app.link) app.link.close();
  clearInterval(app.refreshTimer);
  sessionStorage.removeItem(SESSION_KEY);
  Object.assign(app, { session: null, api: null, link: null, consoleId: null, pairings: [], live: false });
  app.devices.clear();
  app.codes.clear();
  app.sent.clear();
  $("devices").replaceChildren();
  $("feed").replaceChildren();
  show($("feed-empty"), true);
  show($("session"), false);
  show($("app-view"), false);
  show($("auth-view"), true);
}

// --- the console as a client device -------------------------------------------------------------
const consoleKey = (userId) => `simbridge.console.${userId}`;

function remembered(userId) {
  try {
    return JSON.parse(localStorage.getItem(consoleKey(userId))) ?? {};
  } catch {
    return {};
  }
}

function remember(userId, record) {
  localStorage.setItem(consoleKey(userId), JSON.stringify(record));
}

// The device this browser is, with a fresh device token: the one remembered here if the
// account still has it, else a new client device named "Browser console".
async function consoleDevice() {
  const { deviceId, seq } = remembered(app.session.userId);
  const devices = await app.api.devices();
  app.devices = new Map(devices.map((device) => [device.id, device]));
  const known = devices.find((d) => d.id === deviceId && d.type === "client");
  if (known) {
    const { device_token: token } = await app.api.rotateToken(known.id);
    return { id: known.id, token, since: Number.isInteger(seq) ? seq : 0 };
  }
  const created = await app.api.createDevice(CONSOLE_NAME, "client");
  remember(app.session.userId, { deviceId: created.id, seq: 0 });
  return { id: created.id, token: created.device_token, since: 0 };
}

async function connect() {
  if (app.link) app.link.close();
  const device = await consoleDevice();
  const { userId } = app.session;
  app.consoleId = device.id;
  app.link = new Link({
    deviceId: device.id,
    token: device.token,
    since: device.since,
    onFrame: handleFrame,
    onState: linkState,
    onSeq: (seq) => remember(userId, { deviceId: device.id, seq }),
    onRefused: checkConsoleDevice,
  });
  app.link.open();
}

const STATES = {
  connecting: ["connecting", "Connecting…"],
  live: ["live", "Live"],
  offline: ["offline", "Reconnecting…"],
  replaced: ["offline", "Paused"],
  revoked: ["offline", "Paused"],
  removed: ["offline", "Stopped"],
};

function linkState(state) {
  const [look, text] = STATES[state];
  $("status").dataset.state = look;
  $("status").textContent = text;
  app.live = state === "live";
  const self = app.devices.get(app.consoleId);
  if (self && self.is_online !== app.live) {
    self.is_online = app.live; // presence frames are about the peers, not this device
    renderDevices();
  }
  if (state === "live") banner(null);
  if (state === "offline") refresh(); // signs out if the account token is no longer valid
  if (state === "replaced" || state === "revoked") {
    banner("This console is open in another tab or window.", "Use it here", reconnect);
  }
  if (state === "removed") banner("This console's device was deleted.", "Set it up again", reconnect);
}

// Its sockets keep closing before their greeting: a page cannot tell a refused handshake (a
// deleted device, a token rotated meanwhile) from a network failure, so ask the REST API.
// Deleted: stop and say so. Online: another tab holds it. Offline: a fresh token (this
// console's device tokens are issued per start anyway). Relay unreachable: keep trying.
async function checkConsoleDevice(link) {
  let devices;
  try {
    devices = await app.api.devices(); // a 401 here signs out
  } catch {
    return;
  }
  if (app.link !== link || link.stopped) return;
  const self = devices.find((device) => device.id === link.deviceId);
  if (!self) {
    link.halt("removed");
  } else if (self.is_online) {
    link.halt("replaced");
  } else {
    try {
      const { device_token: token } = await app.api.rotateToken(self.id);
      link.token = token;
    } catch {
      // the next check asks again
    }
  }
}

async function reconnect() {
  try {
    await connect();
  } catch (error) {
    if (app.session) banner(error.message, "Try again", reconnect);
  }
}

function banner(text, action, onAction) {
  const element = $("banner");
  if (!text) {
    show(element, false);
    return;
  }
  const button = h("button", { type: "button", class: "secondary small", onclick: onAction }, action);
  element.replaceChildren(text, " ", button);
  show(element, true);
}

// --- frames from the relay ----------------------------------------------------------------------
function handleFrame(frame, receivedAt, note) {
  if (frame.type === "presence") {
    presence(frame.device_id, frame.online === true);
  } else if (frame.type === "event") {
    const described = describeEvent(frame, app.sent.get(frame.req_id));
    if (note === "replayed") described.title += " (while you were away)";
    addEntry(described, receivedAt, frame.event);
    if (frame.event === "SIM_INFO" && Array.isArray(frame.sims)) showSims(frame.sims);
  } else if (frame.type === "queued") {
    const host = app.devices.get(frame.target_device_id);
    const title = `${host?.name ?? "The host"} is offline: sent when it is back`;
    addEntry({ tone: "info", kind: "queued", title }, receivedAt, "queued");
  } else if (typeof frame.error === "string") {
    addEntry(describeError(frame), receivedAt, "error");
  } else if (frame.type === "connected" && note === "rewound") {
    const title = "The relay started afresh: events kept for this console before it are gone";
    addEntry({ tone: "bad", kind: "gap", title }, receivedAt);
  } else if (frame.type === "connected" && frame.gap) {
    addEntry({ tone: "bad", kind: "gap", title: "Some older events are no longer kept" }, receivedAt);
  }
}

function presence(deviceId, online) {
  const device = app.devices.get(deviceId);
  if (!device) return;
  if (device.is_online !== online) {
    device.is_online = online;
    if (!online) device.last_seen = new Date().toISOString();
    const title = `${device.name} is ${online ? "online" : "offline"}`;
    addEntry({ tone: online ? "ok" : "bad", kind: "presence", title }, Date.now(), "presence");
    renderDevices();
  }
}

function addEntry({ tone, kind, title, detail }, receivedAt, name = kind) {
  const feed = $("feed");
  const entry = h(
    "li",
    { class: "entry", "data-tone": tone, "data-event": name, "data-received-at": receivedAt },
    h("time", {}, clockTime(new Date(receivedAt))),
    h("div", { class: "what" }, h("span", { class: "kind" }, kind), title),
    detail ? h("div", { class: "detail" }, detail) : null,
  );
  feed.prepend(entry);
  requestAnimationFrame(() => {
    entry.dataset.shownAt = Date.now(); // the frame that shows it: the feed's own latency
  });
  while (feed.childElementCount > FEED_LIMIT) feed.lastElementChild.remove();
  show($("feed-empty"), false);
}

function showSims(sims) {
  $("sims").replaceChildren(...sims.map((card) => h("li", {}, describeSim(card))));
  show($("sims"), sims.length > 0);
  const select = $("sim-select");
  const slots = sims.map((card) => card.slot ?? card.sim).filter(Number.isInteger);
  if (slots.length) {
    select.replaceChildren(...slots.map((slot) => h("option", { value: slot }, `SIM ${slot}`)));
  }
}

// --- devices and pairings -----------------------------------------------------------------------
async function refresh() {
  if (!app.api) return;
  try {
    const [devices, pairings] = await Promise.all([app.api.devices(), app.api.pairings()]);
    app.devices = new Map(devices.map((device) => [device.id, device]));
    app.pairings = pairings;
    const self = app.devices.get(app.consoleId);
    if (self) self.is_online = app.live; // the list may have been read before the greeting
    renderDevices();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) console.warn(error.message);
  }
}

// The device list, the count and the host and client choices, from the state of the moment.
const renderDevices = () => drawDevices(app, { onCode: newCode });

async function newCode(host) {
  try {
    const { code, expires_in_seconds: seconds } = await app.api.pairingCode(host.id);
    app.codes.set(host.id, { code, until: Date.now() + seconds * 1000 });
    $("pair-form").code.value = code;
    renderDevices();
  } catch (error) {
    addEntry({ tone: "bad", kind: "error", title: error.message }, Date.now());
  }
}

async function submitPairing(event) {
  event.preventDefault();
  const form = event.target;
  const clientId = Number(form.client.value);
  show($("pair-error"), false);
  try {
    const paired = await app.api.confirmCode(form.code.value.trim(), clientId);
    form.reset();
    app.codes.delete(paired.host_device_id);
    const host = app.devices.get(paired.host_device_id);
    const client = app.devices.get(clientId);
    const title = `${host?.name ?? "Host"} paired with ${clientId === app.consoleId ? "this console" : client?.name}`;
    addEntry({ tone: "ok", kind: "paired", title }, Date.now(), "paired");
    await refresh();
    if (clientId === app.consoleId) app.link.reopen(); // for the new host's presence
  } catch (error) {
    $("pair-error").textContent = error.message;
    show($("pair-error"), true);
  }
}

async function submitDevice(event) {
  event.preventDefault();
  const form = event.target;
  try {
    const { name, type } = form.elements;
    const created = await app.api.createDevice(name.value.trim(), type.value);
    form.reset();
    $("new-token-name").textContent = created.name;
    $("new-token-value").textContent = created.device_token;
    show($("new-token"), true);
    await refresh();
  } catch (error) {
    addEntry({ tone: "bad", kind: "error", title: error.message }, Date.now());
  }
}

// --- commands -----------------------------------------------------------------------------------
function command(cmd, fields = {}) {
  const hostId = Number($("host-select").value);
  const frame = { type: "command", cmd, req_id: randomId(), to_device_id: hostId, ...fields };
  if ($("queue-offline").checked) frame.offline = "queue"; // contract §7, kept a day by default
  const host = app.devices.get(hostId);
  if (!app.link || !app.link.send(frame)) {
    addEntry({ tone: "bad", kind: "error", title: "Not connected to the relay: nothing was sent" }, Date.now());
    return false;
  }
  addEntry(describeCommand(frame, host?.name ?? `#${hostId}`), Date.now(), cmd);
  app.sent.set(frame.req_id, frame);
  if (app.sent.size > SENT_LIMIT) app.sent.delete(app.sent.keys().next().value);
  return true;
}

const sim = () => Number($("sim-select").value);

function submitSms(event) {
  event.preventDefault();
  const form = event.target;
  const sent = command("SEND_SMS", { sim: sim(), to: form.to.value.trim(), body: form.body.value });
  if (sent) form.body.value = "";
}

function submitCall(event) {
  event.preventDefault();
  command("MAKE_CALL", { sim: sim(), to: event.target.to.value.trim() });
}

function selectSendTab(tab) {
  $("tab-sms").setAttribute("aria-selected", String(tab === "sms"));
  $("tab-call").setAttribute("aria-selected", String(tab === "call"));
  show($("sms-form"), tab === "sms");
  show($("call-form"), tab === "call");
}

// --- start --------------------------------------------------------------------------------------
async function start(session) {
  app.session = session;
  app.api = new Api(session.token, signOut);
  $("who").textContent = session.username;
  show($("auth-view"), false);
  show($("app-view"), true);
  show($("session"), true);
  try {
    await connect();
    await refresh();
    app.refreshTimer = setInterval(refresh, REFRESH_MS);
  } catch (error) {
    if (app.session) banner(error.message, "Try again", () => location.reload());
  }
}

function wire() {
  $("auth-form").addEventListener("submit", submitAuth);
  $("tab-login").addEventListener("click", () => setAuthMode("login"));
  $("tab-register").addEventListener("click", () => setAuthMode("register"));
  $("logout").addEventListener("click", signOut);
  $("device-form").addEventListener("submit", submitDevice);
  $("pair-form").addEventListener("submit", submitPairing);
  $("sms-form").addEventListener("submit", submitSms);
  $("call-form").addEventListener("submit", submitCall);
  $("ask-sims").addEventListener("click", () => command("GET_SIMS"));
  $("tab-sms").addEventListener("click", () => selectSendTab("sms"));
  $("tab-call").addEventListener("click", () => selectSendTab("call"));
  $("new-token-close").addEventListener("click", () => show($("new-token"), false));
  $("feed-clear").addEventListener("click", () => {
    $("feed").replaceChildren();
    show($("feed-empty"), true);
  });
}

wire();
let saved = null;
try {
  saved = JSON.parse(sessionStorage.getItem(SESSION_KEY));
} catch {
  saved = null;
}
if (saved && saved.token) start(saved);
else show($("auth-view"), true);
