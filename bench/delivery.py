"""Delivery scenarios (contract §6): what a `since` socket costs.

- `replay`: `--frames` events sent to an offline client, then the client connects with
  `since=0`, `--rounds` times: seconds from the start of its handshake until the last kept frame
  arrived (the greeting, the presence of its host and the whole replay in between).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import orjson

from bench.common import le, target
from bench.loadgen import Ws, now, open_ws
from bench.servers import Server, Setup, client_url, host_url, log

EVENT = orjson.dumps({"type": "event", "event": "SMS_RECEIVED", "from": "+15550100", "body": "x"})
REPLAY_TARGET_S = 0.2  # 1,000 kept frames (the delivery issue)


async def _send_to_offline_client(host: Ws, frames: int, timeout: float = 60.0) -> None:
    """Send `frames` events; each is answered with target_offline (and kept for the client)."""
    answered = 0
    done = asyncio.get_running_loop().create_future()

    def on_message(data: bytes) -> None:
        nonlocal answered
        answered += 1
        if answered == frames and not done.done():
            done.set_result(None)

    host.on_message = on_message
    for _ in range(frames):
        host.send(EVENT)
    await asyncio.wait_for(done, timeout)


async def _replay_once(server: Server, setup: Setup, frames: int, client: str) -> float:
    """Seconds from the handshake's start until the client's last replayed frame arrived."""
    pair = setup.pairs[0]
    started = now()
    ws = await open_ws(f"{client_url(server, pair)}&since=0", client, 30.0)
    last = asyncio.get_running_loop().create_future()

    def on_message(data: bytes) -> None:
        frame = orjson.loads(data)
        if frame.get("seq") == frames and not last.done():
            last.set_result(now())

    ws.on_message = on_message
    try:
        return float(await asyncio.wait_for(last, 30.0)) - started
    finally:
        await ws.close()


async def scenario_replay(opts: argparse.Namespace) -> dict[str, Any]:
    from bench.run import _with_servers  # the runner's server set-up (it imports this module)

    async def measure(server: Server, setup: Setup) -> dict[str, Any]:
        pair = setup.pairs[0]
        host = await open_ws(host_url(server, pair), opts.client, 30.0)
        try:
            await _send_to_offline_client(host, opts.frames)
        finally:
            await host.close()
        log(f"{opts.frames} frames kept for client {pair.client_id}; replaying")
        times = [await _replay_once(server, setup, opts.frames, opts.client)]
        for _ in range(opts.rounds - 1):  # bounded: --rounds
            times.append(await _replay_once(server, setup, opts.frames, opts.client))
        return {
            "frames": opts.frames,
            "rounds": opts.rounds,
            "replay_s_median": round(statistics.median(times), 4),
            "replay_s_max": round(max(times), 4),
        }

    sb, _ = await _with_servers(opts, 1, measure, users=1, bare=False)
    return {
        "params": {"frames": opts.frames, "rounds": opts.rounds},
        "simbridge": sb,
        "bare": None,
        "ratio": None,
        "targets": [
            target(
                f"replay of {opts.frames} kept frames, slowest of {opts.rounds} (s)",
                sb["replay_s_max"],
                f"<= {REPLAY_TARGET_S}",
                le(sb["replay_s_max"], REPLAY_TARGET_S),
            )
        ],
    }


RUNNERS = {"replay": scenario_replay}
