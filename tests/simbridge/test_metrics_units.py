"""The metrics' parts without a server: the token setting, bounded labels, and how the
workers' snapshots add up (docs/metrics.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simbridge.config import ConfigError, Settings, load_settings, validate
from simbridge.metrics import (
    LATENCY_BUCKETS,
    Counts,
    Metrics,
    Snapshot,
    SnapshotShare,
)
from tests.processes import run_cli

SECRET = "a-jwt-secret-that-is-comfortably-longer-than-32-chars"
TOKEN = "a-metrics-token-0123456789"


# --- SIMBRIDGE_METRICS_TOKEN -------------------------------------------------------------------
def test_metrics_token_is_read_from_its_variable_and_kept_out_of_repr() -> None:
    settings = load_settings({"JWT_SECRET": SECRET, "SIMBRIDGE_METRICS_TOKEN": TOKEN}, env_file="")
    assert settings.metrics_token == TOKEN
    assert TOKEN not in repr(settings)
    assert load_settings({"JWT_SECRET": SECRET}, env_file="").metrics_token == ""


@pytest.mark.parametrize(
    "token", ["short", "has a space in it 0123", "tab\tinside-0123456789", "é" * 20]
)
def test_validate_refuses_a_weak_or_unprintable_metrics_token_without_quoting_it(
    token: str,
) -> None:
    with pytest.raises(ConfigError) as refused:
        validate(Settings(jwt_secret=SECRET, metrics_token=token))
    assert "SIMBRIDGE_METRICS_TOKEN" in str(refused.value)
    assert token not in str(refused.value)


def test_validate_accepts_a_metrics_token_of_16_characters() -> None:
    validate(Settings(jwt_secret=SECRET, metrics_token="x" * 16))


def test_serve_with_short_metrics_token_exits_2_naming_it(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", JWT_SECRET=SECRET, SIMBRIDGE_METRICS_TOKEN="tiny-secret")
    assert result.returncode == 2
    assert "SIMBRIDGE_METRICS_TOKEN" in result.stderr
    assert "tiny-secret" not in result.stderr + result.stdout


# --- labels --------------------------------------------------------------------------------------
def exposed(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_unknown_label_values_are_shown_as_other() -> None:
    metrics = Metrics(lambda: {"host": 2, "robot": 5}, lambda: 3)
    metrics.counts.relayed["bogus"] = 4  # as if a caller put raw input in
    metrics.counts.relayed_frame("<script>")
    metrics.counts.frame_error("no such error")
    metrics.counts.frame_error("not_paired")
    metrics.counts.http_request("/devices", 999)
    samples = exposed(metrics)
    assert samples[("simbridge_frames_relayed_total", frozenset({("msg_type", "other")}))] == 5
    assert samples[("simbridge_frame_errors_total", frozenset({("error", "other")}))] == 1
    assert samples[("simbridge_frame_errors_total", frozenset({("error", "not_paired")}))] == 1
    key = ("simbridge_http_requests_total", frozenset({("route", "/devices"), ("status", "other")}))
    assert samples[key] == 1
    connections = {k: v for k, v in samples.items() if k[0] == "simbridge_connections"}
    assert connections == {
        ("simbridge_connections", frozenset({("type", "host")})): 2,
        ("simbridge_connections", frozenset({("type", "client")})): 0,
    }
    assert samples[("simbridge_log_queue_rows", frozenset())] == 3
    assert not any("bogus" in str(k) or "script" in str(k) for k in samples)


def test_latency_buckets_are_cumulative_and_inf_counts_everything() -> None:
    metrics = Metrics(dict, lambda: 0)
    for seconds in (0.00001, 0.0003, 0.0003, 0.002, 5.0):
        metrics.counts.observe_latency(seconds)
    samples = exposed(metrics)

    def bucket(le: str) -> float:
        return samples[("simbridge_relay_latency_seconds_bucket", frozenset({("le", le)}))]

    assert bucket("5e-05") == 1
    assert bucket("0.0005") == 3
    assert bucket("0.0025") == 4
    assert bucket(repr(LATENCY_BUCKETS[-1])) == 4
    assert bucket("+Inf") == 5
    assert samples[("simbridge_relay_latency_seconds_count", frozenset())] == 5
    assert samples[("simbridge_relay_latency_seconds_sum", frozenset())] == pytest.approx(5.00261)


# --- several workers ----------------------------------------------------------------------------
def snapshot(hosts: int, commands: int, queue: int = 0) -> Snapshot:
    counts = Counts()
    counts.relayed["command"] = commands
    counts.http_request("/health", 200)
    counts.observe_latency(0.0001)
    return Snapshot.take(counts, {"host": hosts}, queue)


def a_dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_scrape_adds_every_workers_snapshot_to_its_own(tmp_path: Path) -> None:
    SnapshotShare(tmp_path, pid=os.getppid()).publish(snapshot(hosts=2, commands=10, queue=4))
    total = SnapshotShare(tmp_path).total(snapshot(hosts=1, commands=5, queue=1))
    assert total.connections == {"host": 3}
    assert total.log_queue_rows == 5
    assert total.relayed["command"] == 15
    assert total.http == {("/health", "200"): 2}
    assert sum(total.latency_buckets) == 2


def test_a_gone_workers_counters_stay_but_not_its_gauges(tmp_path: Path) -> None:
    SnapshotShare(tmp_path, pid=a_dead_pid()).publish(snapshot(hosts=7, commands=10, queue=9))
    total = SnapshotShare(tmp_path).total(snapshot(hosts=1, commands=5))
    assert total.connections == {"host": 1}
    assert total.log_queue_rows == 0
    assert total.relayed["command"] == 15  # a counter never goes down


def test_a_workers_own_file_is_not_counted_twice(tmp_path: Path) -> None:
    share = SnapshotShare(tmp_path)
    share.publish(snapshot(hosts=1, commands=5))
    total = share.total(snapshot(hosts=1, commands=6))
    assert (total.connections, total.relayed["command"]) == ({"host": 1}, 6)


def test_unreadable_or_foreign_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / f"{os.getppid()}.json").write_text("{not json")
    (tmp_path / "notes.json").write_text("{}")
    total = SnapshotShare(tmp_path).total(snapshot(hosts=1, commands=1))
    assert total.relayed["command"] == 1
