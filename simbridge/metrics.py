"""Prometheus metrics (contract §9): counted in plain Python on the way of a frame, turned into
Prometheus families only when `/metrics` is scraped.

The relay path bumps ints in dicts owned by `Counts` (no lock, no prometheus-client object per
frame); `SimBridgeCollector`, a prometheus-client `Collector`, reads them at scrape time, with
the gauges read from the hub and the log writer then. Every label comes from a small fixed set:
a value outside its set is shown as `other` (a route that matched nothing is `unmatched`).

Several workers (`simbridge serve --workers N`): each worker counts for itself and publishes a
`Snapshot` of its counts as a file in a directory the main process made for its workers
(`SnapshotShare`); a scrape, answered by whichever worker got the connection, adds up its own
fresh counts and the other workers' latest files (at most `SHARE_SECONDS` old). See
docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

log = logging.getLogger("simbridge.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
UNMATCHED = "unmatched"
CONNECTION_TYPES = ("host", "client")
MSG_TYPES = ("command", "event")
# The `error` of the error replies a frame can get (contract §4), as `Relay.handle` counts them.
FRAME_ERRORS = (
    "rate_limited",
    "invalid_json",
    "too_deep",
    "unknown_type",
    "invalid_offline_policy",
    "not_paired",
    "no_paired_host",
    "no_paired_client",
    "target_offline",
    "internal_error",
)
HTTP_STATUSES = frozenset(
    {101, 200, 204, 301, 302, 304, 400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 503}
)
# Upper bounds (seconds) of the relay latency histogram; relaying takes tens of microseconds.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
# One frame in this many is timed (see `Relay.handle`): two clock reads and a bisect per frame
# would cost about 1 % of relaying; one in 16 costs a countdown.
LATENCY_SAMPLE_EVERY = 16
SHARE_SECONDS = 1.0  # how often a worker publishes its snapshot to the others
SHARE_ENV = "SIMBRIDGE_METRICS_SHARE_DIR"  # set by the main process for its workers only


class Counts:
    """What the relay and the HTTP layer count, in plain ints; one per process.

    The relay writes `relayed[msg_type] += 1` and `errors[name] += 1` itself, and counts down
    `latency_countdown` to pick the frames it times (`observe_latency`)."""

    __slots__ = (
        "relayed",
        "errors",
        "http",
        "latency_buckets",
        "latency_sum",
        "latency_countdown",
        "webhooks_dropped",
    )

    def __init__(self) -> None:
        self.relayed: dict[str, int] = dict.fromkeys(MSG_TYPES, 0)
        self.errors: dict[str, int] = dict.fromkeys(FRAME_ERRORS, 0)
        self.http: dict[tuple[str, str], int] = {}
        # one count per bucket, the last for observations above every bound (+Inf)
        self.latency_buckets: list[int] = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_countdown = LATENCY_SAMPLE_EVERY
        self.webhooks_dropped = 0  # deliveries dropped from a full webhook queue

    def webhook_dropped(self) -> None:
        self.webhooks_dropped += 1

    def observe_latency(self, seconds: float) -> None:
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def relayed_frame(self, msg_type: str) -> None:
        """One frame handed to its recipient (the relay inlines this on its hot path)."""
        key = msg_type if msg_type in self.relayed else OTHER
        self.relayed[key] = self.relayed.get(key, 0) + 1

    def frame_error(self, name: str) -> None:
        key = name if name in self.errors else OTHER
        self.errors[key] = self.errors.get(key, 0) + 1

    def http_request(self, route: str, status: int) -> None:
        key = (route, str(status) if status in HTTP_STATUSES else OTHER)
        self.http[key] = self.http.get(key, 0) + 1


@dataclass
class Snapshot:
    """Every metric's values at one moment, as plain data (JSON in and out); several add up."""

    connections: dict[str, int] = field(default_factory=dict)
    log_queue_rows: int = 0
    relayed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    http: dict[tuple[str, str], int] = field(default_factory=dict)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    webhooks_dropped: int = 0

    @classmethod
    def take(cls, counts: Counts, connections: dict[str, int], log_queue_rows: int) -> Snapshot:
        return cls(
            connections=dict(connections),
            log_queue_rows=log_queue_rows,
            relayed=dict(counts.relayed),
            errors=dict(counts.errors),
            http=dict(counts.http),
            latency_buckets=list(counts.latency_buckets),
            latency_sum=counts.latency_sum,
            webhooks_dropped=counts.webhooks_dropped,
        )

    def add(self, other: Snapshot, *, gauges: bool = True) -> None:
        """Add `other`'s counters (and its gauges, unless its process is gone)."""
        if gauges:
            _add_into(self.connections, other.connections)
            self.log_queue_rows += other.log_queue_rows
        _add_into(self.relayed, other.relayed)
        _add_into(self.errors, other.errors)
        _add_into(self.http, other.http)
        self.webhooks_dropped += other.webhooks_dropped
        if len(other.latency_buckets) == len(self.latency_buckets):
            for index, count in enumerate(other.latency_buckets):
                self.latency_buckets[index] += count
            self.latency_sum += other.latency_sum

    def to_json(self) -> bytes:
        data = {
            "connections": self.connections,
            "log_queue_rows": self.log_queue_rows,
            "relayed": self.relayed,
            "errors": self.errors,
            "http": [[route, status, count] for (route, status), count in self.http.items()],
            "latency_buckets": self.latency_buckets,
            "latency_sum": self.latency_sum,
            "webhooks_dropped": self.webhooks_dropped,
        }
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Snapshot:
        data = json.loads(raw)
        return cls(
            connections={str(k): int(v) for k, v in data["connections"].items()},
            log_queue_rows=int(data["log_queue_rows"]),
            relayed={str(k): int(v) for k, v in data["relayed"].items()},
            errors={str(k): int(v) for k, v in data["errors"].items()},
            http={(str(r), str(s)): int(c) for r, s, c in data["http"]},
            latency_buckets=[int(c) for c in data["latency_buckets"]],
            latency_sum=float(data["latency_sum"]),
            webhooks_dropped=int(data.get("webhooks_dropped", 0)),
        )


def _add_into(total: dict[Any, int], more: dict[Any, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


def _bounded(values: dict[str, int], allowed: Iterable[str]) -> dict[str, int]:
    """Every allowed label (0 when not counted yet) and `other`, which takes anything else."""
    shown = dict.fromkeys((*allowed, OTHER), 0)
    for key, value in values.items():
        label = key if key in shown else OTHER
        shown[label] = shown.get(label, 0) + value
    return shown


class SimBridgeCollector(Collector):
    """The metrics of §9, read from `snapshot()` at each scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        now = self._snapshot()
        connections = GaugeMetricFamily(
            "simbridge_connections", "Open device WebSockets, by device type", labels=["type"]
        )
        for kind in CONNECTION_TYPES:  # a session is always one of the two
            connections.add_metric([kind], now.connections.get(kind, 0))
        yield connections
        relayed = CounterMetricFamily(
            "simbridge_frames_relayed",
            "Frames handed to a recipient device (its socket, or the process holding it), by "
            "frame type; a frame sent to three clients counts three",
            labels=["msg_type"],
        )
        for msg_type, count in _bounded(now.relayed, MSG_TYPES).items():
            relayed.add_metric([msg_type], count)
        yield relayed
        errors = CounterMetricFamily(
            "simbridge_frame_errors",
            "Error replies sent to a device for one of its frames, by error",
            labels=["error"],
        )
        for error, count in _bounded(now.errors, FRAME_ERRORS).items():
            errors.add_metric([error], count)
        yield errors
        yield self._latency(now)
        requests = CounterMetricFamily(
            "simbridge_http_requests",
            "HTTP requests answered, by route pattern and status",
            labels=["route", "status"],
        )
        for (route, status), count in sorted(now.http.items()):
            requests.add_metric([route, status], count)
        yield requests
        yield GaugeMetricFamily(
            "simbridge_log_queue_rows",
            "Message-log rows (and command-state changes) queued for the database writer",
            value=now.log_queue_rows,
        )
        yield CounterMetricFamily(
            "simbridge_webhook_deliveries_dropped",
            "Webhook deliveries dropped, oldest first, because their webhook's queue was full",
            value=now.webhooks_dropped,
        )

    @staticmethod
    def _latency(now: Snapshot) -> HistogramMetricFamily:
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), now.latency_buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return HistogramMetricFamily(
            "simbridge_relay_latency_seconds",
            f"Time from a frame's decoding to its hand-over to the recipient's socket or to the "
            f"broker; one frame in {LATENCY_SAMPLE_EVERY} is timed",
            buckets=buckets,
            sum_value=now.latency_sum,
        )


def registry_of(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry of its own per app (tests run many apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SimBridgeCollector(snapshot))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of everything `registry` collects."""
    return generate_latest(registry)


class Metrics:
    """This process's metrics: the `counts`, the gauges read from the hub and the log writer,
    and, with several workers, the share of snapshots they publish to each other."""

    def __init__(
        self,
        connections: Callable[[], dict[str, int]],
        log_queue_rows: Callable[[], int],
        share: SnapshotShare | None = None,
    ) -> None:
        self.counts = Counts()
        self._connections = connections
        self._log_queue_rows = log_queue_rows
        self._share = share
        self._task: asyncio.Task[None] | None = None
        self.registry = registry_of(self.snapshot)

    def own(self) -> Snapshot:
        return Snapshot.take(self.counts, self._connections(), self._log_queue_rows())

    def snapshot(self) -> Snapshot:
        """What a scrape shows: this process's values, plus the other workers' if any."""
        own = self.own()
        return own if self._share is None else self._share.total(own)

    def exposition(self) -> bytes:
        return exposition(self.registry)

    def start(self) -> None:
        if self._share is not None:
            self._task = asyncio.create_task(self._publish(self._share), name="metrics-share")

    async def stop(self) -> None:
        """Publish a last time: the counters of a worker that stopped stay in the totals."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._share is not None:
            self._share.publish(self.own())

    async def _publish(self, share: SnapshotShare) -> None:
        while True:
            share.publish(self.own())
            await asyncio.sleep(SHARE_SECONDS)


# --- several workers ---------------------------------------------------------------------------
def share_from_env() -> SnapshotShare | None:
    """The share of this server's workers, when the main process made one (`SHARE_ENV`)."""
    directory = os.environ.get(SHARE_ENV)
    if not directory or not Path(directory).is_dir():
        return None
    return SnapshotShare(Path(directory))


def make_share_dir() -> Path:
    """A private directory (mode 0700, a name nobody can guess) for the workers' snapshots."""
    return Path(tempfile.mkdtemp(prefix="simbridge-metrics-"))


class SnapshotShare:
    """The workers' snapshots, one file each (`<pid>.json`), in the main process's directory."""

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self._directory = directory
        self._pid = os.getpid() if pid is None else pid

    def publish(self, snapshot: Snapshot) -> None:
        """Replace this worker's file at once (written aside, then renamed)."""
        final = self._directory / f"{self._pid}.json"
        partial = self._directory / f"{self._pid}.json.tmp"
        try:
            partial.write_bytes(snapshot.to_json())
            partial.replace(final)
        except OSError:
            log.warning("could not publish this worker's metrics in %s", self._directory)

    def total(self, own: Snapshot) -> Snapshot:
        """`own` plus every other worker's latest snapshot; the gauges of a worker that is gone
        are left out, its counters are kept (so the totals never go down)."""
        total = Snapshot()
        total.add(own)
        try:
            files = sorted(self._directory.glob("*.json"))
        except OSError:
            files = []
        for path in files:
            pid = _pid_of(path)
            if pid is None or pid == self._pid:
                continue
            try:
                other = Snapshot.from_json(path.read_bytes())
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours
            total.add(other, gauges=_alive(pid))
        return total


def _pid_of(path: Path) -> int | None:
    return int(path.stem) if path.stem.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
