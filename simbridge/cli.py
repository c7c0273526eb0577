"""`simbridge serve` runs the server; `simbridge migrate` applies pending migrations;
`simbridge backup PATH` copies the SQLite database, even while the server runs, and
`simbridge restore PATH` puts such a copy back while it does not; `simbridge simulate host|client`
runs a simulated phone or a small client against a server (simbridge.simulator)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from sanic import Sanic
from sanic.worker.loader import AppLoader

from simbridge.backup import STEP_PAGES, BackupError, Copied, backup, restore
from simbridge.config import ConfigError, Settings, load_settings, validate
from simbridge.db import apply_migrations
from simbridge.simulator import command as simulator
from simbridge.web.sanic_compat import server_worker_pids
from simbridge.web.tls import SimBridgeCertLoader, TlsError, build_context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simbridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the relay server")
    serve.add_argument("--host", help="listen address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: PORT or 8100)")
    serve.add_argument("--workers", type=int, help="worker processes (default: 1)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    copy = commands.add_parser("backup", help="copy the SQLite database (the server may run)")
    copy.add_argument("path", type=Path, help="the backup file to write")
    copy.add_argument("--force", action="store_true", help="replace PATH if it exists")
    copy.add_argument(
        "--step-pages", type=_positive, default=STEP_PAGES, help=argparse.SUPPRESS
    )  # small steps let tests overlap a backup with relaying
    put_back = commands.add_parser(
        "restore", help="replace the SQLite database with a backup (the server stopped)"
    )
    put_back.add_argument("path", type=Path, help="the backup file to restore")
    simulator.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "simulate":
        return simulator.run(args)
    _log_to_stderr()
    if args.command in ("backup", "restore"):
        return _backup_or_restore(args)
    try:
        settings = load_settings()
        overrides = {
            k: v for k in ("host", "port", "workers") if (v := getattr(args, k, None)) is not None
        }
        settings = validate(replace(settings, **overrides))
    except ConfigError as exc:
        print(f"simbridge: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.command == "migrate":
        applied = asyncio.run(apply_migrations(settings))
        print(f"applied: {', '.join(applied) or 'nothing, already up to date'}")  # noqa: T201
        return 0
    return serve_forever(settings)


def _backup_or_restore(args: argparse.Namespace) -> int:
    try:
        # Only where the database is matters: a placeholder secret keeps load_settings from
        # generating a secret file, which is the server's to create.
        settings = load_settings({**os.environ, "JWT_SECRET": "unused-by-backup-and-restore"})
        if args.command == "backup":
            done = backup(settings, args.path, force=args.force, step_pages=args.step_pages)
        else:
            done = asyncio.run(restore(settings, args.path))
    except ConfigError as exc:
        print(f"simbridge: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except BackupError as exc:
        print(f"simbridge {args.command}: {exc}; nothing was changed", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    print(_summary(args.command, done))  # noqa: T201
    return 0


def _summary(command: str, done: Copied) -> str:
    size = f"{done.size / 2**20:.1f} MiB ({done.size} bytes)"
    line = f"{command}: {done.path}, {size}, {done.seconds:.2f} s"
    if done.previous is not None:
        line += f"; the replaced database is kept as {done.previous}"
    return line


def _positive(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def serve_forever(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; one worker runs in this very process (no manager process)."""
    tls = bool(settings.tls_cert and settings.tls_key)
    if tls:
        try:  # config checked that the files are readable; this checks that they are a pair
            build_context(settings.tls_cert, settings.tls_key)
        except TlsError as exc:
            print(f"simbridge: {exc}", file=sys.stderr)  # noqa: T201
            return 2
    loader = AppLoader(factory=partial(_create_app, settings))
    app = loader.load()
    single = settings.workers == 1
    app.prepare(
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        single_process=single,
        access_log=False,
        motd=False,
        backlog=settings.backlog,
        # Paths (picklable, for worker processes); each process builds its own context with
        # SimBridgeCertLoader, which keeps it for reloading.
        ssl={"cert": settings.tls_cert, "key": settings.tls_key} if tls else None,
    )
    scheme = "https" if tls else "http"
    where = f"{scheme}://{settings.host}:{settings.port}"
    logging.getLogger("simbridge").info("listening on %s (API docs at %s/docs)", where, where)
    if single:
        Sanic.serve_single(primary=app)
    else:
        if tls:  # the manager passes SIGHUP on to its workers, which reload their certificate
            signal.signal(signal.SIGHUP, _forward_to_workers)
        Sanic.serve(primary=app, app_loader=loader)
    return 0


def _create_app(settings: Settings) -> Sanic[Any, Any]:
    """The app of every server process; with TLS, its context comes from SimBridgeCertLoader
    and is refreshed from the files (simbridge.web.tls)."""
    from simbridge.app import create_app

    if not logging.getLogger("simbridge").handlers:  # a worker process started by Sanic
        _log_to_stderr()
    app = create_app(settings)
    if settings.tls_cert and settings.tls_key:
        # Until the server's loop handles SIGHUP, one (a renewal) must not end the process.
        with contextlib.suppress(ValueError):  # not the main thread: nothing to guard
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        app.certloader_class = SimBridgeCertLoader
        app.before_server_start(_start_tls_reloader)
        app.after_server_stop(_stop_tls_reloader)
    return app


async def _start_tls_reloader(app: Sanic[Any, Any]) -> None:
    if (reloader := getattr(app.ctx, "tls", None)) is not None:
        reloader.start(asyncio.get_running_loop())


async def _stop_tls_reloader(app: Sanic[Any, Any]) -> None:
    if (reloader := getattr(app.ctx, "tls", None)) is not None:
        await reloader.stop()


def _forward_to_workers(signum: int, _frame: object) -> None:
    for pid in server_worker_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _log_to_stderr() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("simbridge")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
