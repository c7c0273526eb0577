"""`simbridge serve` runs the server; `simbridge migrate` applies pending migrations."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import replace
from functools import partial

from sanic import Sanic
from sanic.worker.loader import AppLoader

from simbridge.config import ConfigError, Settings, load_settings, validate
from simbridge.db import apply_migrations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simbridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the relay server")
    serve.add_argument("--host", help="listen address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: PORT or 8100)")
    serve.add_argument("--workers", type=int, help="worker processes (default: 1)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    args = parser.parse_args(argv)
    _log_to_stderr()
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


def serve_forever(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; one worker runs in this very process (no manager process)."""
    from simbridge.app import create_app

    loader = AppLoader(factory=partial(create_app, settings))
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
    )
    where = f"http://{settings.host}:{settings.port}"
    logging.getLogger("simbridge").info("listening on %s (API docs at %s/docs)", where, where)
    if single:
        Sanic.serve_single(primary=app)
    else:
        Sanic.serve(primary=app, app_loader=loader)
    return 0


def _log_to_stderr() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("simbridge")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
