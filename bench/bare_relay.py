"""The baseline: a minimal `websockets` relay speaking SimBridge's frames, nothing else.

No accounts, no tokens, no database, no logging of messages. It is what "relaying small JSON
messages in Python" costs on this machine, so SimBridge's figures can be read as a ratio to it.

- `WS /ws/host/{id}` and `WS /ws/client/{id}?host={host_id}` (the pairing is in the URL);
  both are greeted with `{"type":"connected","device_id":N}`.
- A client's command goes to its host (a `req_id` is added if it has none); the host's event
  goes back to the client whose command carried the same `req_id`, else to every paired client
  that is online. `{"type":"ping"}` gets `{"type":"pong"}`. An offline target gets the same
  `target_offline` error reply as SimBridge.

Same stack choices as SimBridge where they are not the relay's job: uvloop when installed,
orjson for parsing, no compression, 64 KiB frames, protocol pings every 20 s. The listen
backlog is 2048 (`--backlog`), so that a connection storm measures the relay, not the kernel
dropping handshakes from a full accept queue.

    python -m bench.bare_relay --host 127.0.0.1 --port 8200
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

MAX_MESSAGE_BYTES = 64 * 1024
PING_SECONDS = 20.0


class BareRelay:
    def __init__(self) -> None:
        self.hosts: dict[int, ServerConnection] = {}
        self.clients: dict[int, ServerConnection] = {}
        self.host_of: dict[int, int] = {}  # client id -> its host id
        self.clients_of: dict[int, set[int]] = {}  # host id -> its client ids
        self.asked_by: dict[str, int] = {}  # req_id of a pending command -> client id

    async def handler(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request else "/")
        parts = url.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "ws" or parts[1] not in ("host", "client"):
            await ws.close(1008, "unknown path")
            return
        kind, device_id = parts[1], int(parts[2])
        if kind == "host":
            self.hosts[device_id] = ws
            self.clients_of.setdefault(device_id, set())
        else:
            host_id = int(parse_qs(url.query).get("host", ["0"])[0])
            self.clients[device_id] = ws
            self.host_of[device_id] = host_id
            self.clients_of.setdefault(host_id, set()).add(device_id)
        try:
            await ws.send(orjson.dumps({"type": "connected", "device_id": device_id}).decode())
            if kind == "host":
                await self._host_loop(ws, device_id)
            else:
                await self._client_loop(ws, device_id)
        except ConnectionClosed:
            pass
        finally:
            table = self.hosts if kind == "host" else self.clients
            if table.get(device_id) is ws:
                del table[device_id]

    async def _client_loop(self, ws: ServerConnection, client_id: int) -> None:
        async for raw in ws:
            frame = _parse(raw)
            if frame is None:
                await ws.send('{"error":"invalid JSON"}')
                continue
            kind = frame.get("type")
            if kind == "ping":
                await ws.send('{"type":"pong"}')
                continue
            if kind != "command":
                await ws.send('{"error":"unknown message type"}')
                continue
            req_id = frame.get("req_id")
            if req_id is None:
                req_id = frame["req_id"] = uuid.uuid4().hex
                raw = orjson.dumps(frame).decode()
            host_id = self.host_of[client_id]
            host = self.hosts.get(host_id)
            if host is None:
                error = {"error": "target_offline", "target_device_id": host_id, "req_id": req_id}
                await ws.send(orjson.dumps(error).decode())
                continue
            self.asked_by[str(req_id)] = client_id
            await _forward(host, raw)

    async def _host_loop(self, ws: ServerConnection, host_id: int) -> None:
        async for raw in ws:
            frame = _parse(raw)
            if frame is None:
                await ws.send('{"error":"invalid JSON"}')
                continue
            kind = frame.get("type")
            if kind == "ping":
                await ws.send('{"type":"pong"}')
                continue
            if kind != "event":
                await ws.send('{"error":"unknown message type"}')
                continue
            asker = self.asked_by.pop(str(frame.get("req_id")), None)
            targets = [asker] if asker is not None else sorted(self.clients_of[host_id])
            delivered = False
            for client_id in targets:
                client = self.clients.get(client_id)
                if client is not None:
                    await _forward(client, raw)
                    delivered = True
            if not delivered:
                first = targets[0] if targets else None
                error = {"error": "target_offline", "target_device_id": first}
                await ws.send(orjson.dumps(error).decode())


def _parse(raw: str | bytes) -> dict | None:
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return frame if isinstance(frame, dict) else None


async def _forward(target: ServerConnection, raw: str | bytes) -> None:
    try:
        await target.send(raw)
    except ConnectionClosed:
        pass  # the target left between lookup and send


async def main(host: str, port: int, backlog: int = 2048) -> None:
    relay = BareRelay()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        relay.handler,
        host,
        port,
        compression=None,
        max_size=MAX_MESSAGE_BYTES,
        ping_interval=PING_SECONDS,
        ping_timeout=PING_SECONDS,
        backlog=backlog,
    ):
        await stop


def run() -> None:
    parser = argparse.ArgumentParser(prog="bench.bare_relay", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument(
        "--backlog",
        type=int,
        default=2048,
        help="listen backlog (asyncio's and Sanic's default is 100, which a connection storm "
        "overflows: the dropped clients retry after 1 s, 3 s...)",
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.host, args.port, args.backlog))
    else:
        uvloop.run(main(args.host, args.port, args.backlog))


if __name__ == "__main__":
    run()
