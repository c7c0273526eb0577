// What a frame from the relay means to a person: a short title, a detail line and a tone.
// The relay does not interpret events, so unknown ones are shown as they came.

const MAX_DETAIL = 240;

function compact(value) {
  const text = JSON.stringify(value);
  return text.length > MAX_DETAIL ? `${text.slice(0, MAX_DETAIL)}…` : text;
}

function parts(...items) {
  return items.filter((item) => item !== undefined && item !== null && item !== "").join(" · ");
}

function sim(frame, asked = undefined) {
  const slot = frame.sim ?? frame.slot ?? asked?.sim;
  return slot === undefined ? undefined : `SIM ${slot}`;
}

// Each takes the event and the command it answers (by req_id), if this console sent it: a
// phone's answer need not repeat the number.
const EVENTS = {
  SMS_SENT: (f, asked) =>
    failed(f)
      ? ["bad", "SMS not sent", parts(to(f, asked), f.error ?? f.reason)]
      : ["ok", "SMS sent", parts(to(f, asked), sim(f, asked))],
  SMS_DELIVERED: (f, asked) =>
    failed(f)
      ? ["bad", "SMS not delivered", parts(to(f, asked), f.error ?? f.reason)]
      : ["ok", "SMS delivered", parts(to(f, asked), sim(f, asked))],
  INCOMING_SMS: (f) => ["info", `SMS from ${f.from ?? "unknown"}`, parts(sim(f), f.body)],
  INCOMING_CALL: (f) => ["info", `Call from ${f.from ?? "unknown"}`, sim(f)],
  CALL_STATE: (f, asked) => [
    f.error ? "bad" : "info",
    `Call ${f.state ?? "update"}`,
    parts(f.to ?? asked?.to ?? f.from ?? f.number, sim(f, asked), f.error),
  ],
  SIM_INFO: (f) => [
    "ok",
    `${Array.isArray(f.sims) ? f.sims.length : 0} SIM card(s)`,
    Array.isArray(f.sims) ? f.sims.map(describeSim).join(" · ") : "",
  ],
};

function failed(frame) {
  return frame.status === "error" || frame.status === "failed" || Boolean(frame.error);
}

function to(frame, asked) {
  const number = frame.to ?? asked?.to;
  return number ? `to ${number}` : undefined;
}

export function describeSim(card) {
  const slot = card.slot ?? card.sim ?? "?";
  return parts(`SIM ${slot}`, card.carrier, card.number);
}

const ERRORS = {
  target_offline: "The host is offline: nothing was sent",
  "not paired": "This console is not paired with that host",
  "no paired host": "This console is not paired with any host",
  rate_limited: "Too many commands at once: slow down",
};

// -> {tone, kind, title, detail}; `asked`: the command it answers, if this console sent it
export function describeEvent(frame, asked) {
  const known = EVENTS[frame.event];
  const [tone, title, detail] = known
    ? known(frame, asked)
    : ["info", String(frame.event), compact(frame)];
  return { tone, kind: String(frame.event), title, detail };
}

export function describeError(frame) {
  const title = ERRORS[frame.error] ?? `The relay refused the frame: ${frame.error}`;
  return { tone: "bad", kind: "error", title, detail: frame.req_id ? `request ${frame.req_id}` : "" };
}

export function describeCommand(frame, hostName) {
  const what = {
    SEND_SMS: parts(`SMS to ${frame.to}`, sim(frame)),
    MAKE_CALL: parts(`Call ${frame.to}`, sim(frame)),
    GET_SIMS: "Ask for the SIM cards",
  }[frame.cmd];
  return {
    tone: "out",
    kind: frame.cmd,
    title: `${what ?? frame.cmd} → ${hostName}`,
    detail: frame.cmd === "SEND_SMS" ? frame.body : "",
  };
}
