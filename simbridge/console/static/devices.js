// The devices card and the choices that follow from it: each device with its online dot, when
// it was last seen and its live pairing code; the paired hosts to send from; the clients a
// code can be confirmed for (this console first). Drawn again whole from the state it is given:
// {devices: Map id -> device, pairings, consoleId, codes: Map host id -> {code, until}}.

import { $, clockTime, h, relativeTime, show } from "./dom.js";

const pairedHosts = (app) =>
  app.pairings.filter((p) => p.client_device_id === app.consoleId).map((p) => p.host_device_id);

export function drawDevices(app, { onCode }) {
  const paired = new Set(pairedHosts(app));
  const devices = [...app.devices.values()].sort(
    (a, b) => (a.type === b.type ? a.id - b.id : a.type === "host" ? -1 : 1),
  );
  $("devices").replaceChildren(...devices.map((device) => deviceRow(app, device, paired, onCode)));
  const online = devices.filter((d) => d.is_online).length;
  $("device-count").textContent = `${online} of ${devices.length} online`;
  renderChoices(app, paired);
}

function deviceRow(app, device, paired, onCode) {
  const isConsole = device.id === app.consoleId;
  const code = app.codes.get(device.id);
  const meta = [device.is_online ? "online" : relativeTime(device.last_seen)];
  if (paired.has(device.id)) meta.push("paired with this console");
  const actions = h("div", { class: "device-actions" });
  if (device.type === "host") {
    actions.append(
      h("button", { type: "button", class: "ghost small", onclick: () => onCode(device) }, "Pairing code"),
    );
  }
  return h(
    "li",
    { class: "device", "data-device-id": device.id, "data-online": String(device.is_online) },
    h("span", { class: "dot", title: device.is_online ? "online" : "offline" }),
    h(
      "div",
      { class: "device-name" },
      device.name,
      h("span", { class: "badge" }, isConsole ? "this console" : device.type),
    ),
    actions,
    h(
      "div",
      { class: "device-meta" },
      `#${device.id} · ${meta.join(" · ")}`,
      code && code.until > Date.now()
        ? h("span", {}, " · code ", h("span", { class: "code" }, code.code), ` until ${clockTime(new Date(code.until))}`)
        : null,
    ),
  );
}

function renderChoices(app, paired) {
  const hosts = [...paired].map((id) => app.devices.get(id)).filter(Boolean);
  const hostSelect = $("host-select");
  const chosen = hostSelect.value;
  hostSelect.replaceChildren(
    ...hosts.map((host) =>
      h("option", { value: host.id }, `${host.name}${host.is_online ? "" : " (offline)"}`),
    ),
  );
  if (hosts.some((host) => String(host.id) === chosen)) hostSelect.value = chosen;
  const none = hosts.length === 0;
  show($("send-hint"), none);
  for (const control of document.querySelectorAll(".send button, .send select")) {
    if (!control.closest(".tabs")) control.disabled = none;
  }

  const clientSelect = $("pair-client");
  const previous = clientSelect.value;
  const clients = [...app.devices.values()].filter((d) => d.type === "client");
  clients.sort((a, b) => (a.id === app.consoleId ? -1 : b.id === app.consoleId ? 1 : a.id - b.id));
  clientSelect.replaceChildren(
    ...clients.map((client) =>
      h("option", { value: client.id }, client.id === app.consoleId ? "This console" : client.name),
    ),
  );
  if (clients.some((client) => String(client.id) === previous)) clientSelect.value = previous;
}
