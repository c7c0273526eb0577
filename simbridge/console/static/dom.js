// Small DOM helpers. Text always goes in as text nodes: nothing a device sends is parsed as HTML.

export const $ = (id) => document.getElementById(id);

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function show(element, visible) {
  element.hidden = !visible;
}

export function clockTime(date = new Date()) {
  return date.toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  });
}

export function relativeTime(iso) {
  if (!iso) return "never seen";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return "seen just now";
  if (seconds < 3600) return `seen ${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `seen ${Math.floor(seconds / 3600)} h ago`;
  return `seen ${new Date(iso).toLocaleDateString()}`;
}

// 32 hex digits from the browser's CSPRNG (crypto.randomUUID needs a secure context; a relay
// on a LAN is often plain http).
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
