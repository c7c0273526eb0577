// The REST API, as the signed-in person: every call carries the account token in the
// Authorization header (never in a URL) and turns an error reply into an ApiError whose
// message is the server's `detail` sentence.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export async function call(method, path, { token = null, body = undefined } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "The relay cannot be reached. Check your connection.");
  }
  const reply = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = reply && typeof reply.detail === "string" ? reply.detail : response.statusText;
    throw new ApiError(response.status, detail || `Error ${response.status}`);
  }
  return reply;
}

export class Api {
  constructor(token, onSignedOut) {
    this.token = token;
    this.onSignedOut = onSignedOut;
  }

  async request(method, path, body) {
    try {
      return await call(method, path, { token: this.token, body });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.onSignedOut();
      throw error;
    }
  }

  devices() { return this.request("GET", "/devices"); }
  pairings() { return this.request("GET", "/pairings"); }
  createDevice(name, type) { return this.request("POST", "/devices", { name, type }); }
  rotateToken(id) { return this.request("POST", `/devices/${id}/token`); }
  pairingCode(hostId) { return this.request("POST", `/pair?host_device_id=${hostId}`); }
  confirmCode(code, clientId) {
    return this.request("POST", "/pair/confirm", { code, client_device_id: clientId });
  }
}
