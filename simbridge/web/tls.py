"""TLS without a proxy: `simbridge serve` with SIMBRIDGE_TLS_CERT / SIMBRIDGE_TLS_KEY.

Every server process builds one `ssl.SSLContext` (TLS 1.2 or later, the standard library's
server defaults) and keeps it for its lifetime. The files are read again on SIGHUP and when
their mtime, size or inode changes (checked every `SIMBRIDGE_TLS_POLL_SECONDS`): a new pair
that loads is put into the same context, so new handshakes present it while open connections
carry on; a pair that does not load is logged and the old one kept. A new pair is first loaded
into a scratch context, so a certificate that does not match its key never half-replaces the
served one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from pathlib import Path
from typing import Any

from simbridge.web.sanic_compat import CertLoader

log = logging.getLogger("simbridge.tls")


class TlsError(Exception):
    """The certificate or key cannot be served; the message names the file."""


def new_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _read(name: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise TlsError(f"{name} {path} cannot be read: {exc.strerror or exc}") from exc


def load_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Put the PEM pair into `context`, or raise TlsError naming the file at fault."""
    if "-----BEGIN CERTIFICATE-----" not in _read("SIMBRIDGE_TLS_CERT", cert):
        raise TlsError(f"SIMBRIDGE_TLS_CERT {cert} holds no PEM certificate")
    if "PRIVATE KEY-----" not in _read("SIMBRIDGE_TLS_KEY", key):
        raise TlsError(f"SIMBRIDGE_TLS_KEY {key} holds no PEM private key")
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsError(
            f"SIMBRIDGE_TLS_CERT {cert} and SIMBRIDGE_TLS_KEY {key} are not a valid PEM "
            f"certificate and matching private key: {exc}"
        ) from exc


def build_context(cert: str, key: str) -> ssl.SSLContext:
    context = new_context()
    load_pair(context, cert, key)
    return context


def _signature(paths: tuple[str, str]) -> tuple[Any, ...]:
    found: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            found.append(None)
        else:
            found.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(found)


class CertReloader:
    """Serves one context and refreshes it from the files (see the module's docstring)."""

    def __init__(self, cert: str, key: str, poll_seconds: float) -> None:
        self.cert = cert
        self.key = key
        self._poll_seconds = poll_seconds
        self._seen = _signature((cert, key))
        self.context = build_context(cert, key)
        self._task: asyncio.Task[None] | None = None

    def reload(self, reason: str) -> bool:
        self._seen = _signature((self.cert, self.key))
        try:
            load_pair(new_context(), self.cert, self.key)  # a dry run: never half-replace
            load_pair(self.context, self.cert, self.key)
        except TlsError as exc:
            log.error(
                "TLS reload (%s) refused, still serving the previous certificate: %s", reason, exc
            )
            return False
        log.info("TLS certificate reloaded (%s) from %s", reason, self.cert)
        return True

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
        self._task = loop.create_task(self._watch(self._poll_seconds))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if _signature((self.cert, self.key)) != self._seen:
                    self.reload("the files changed")
            except Exception:  # keep watching whatever happened: the old pair is still served
                log.exception("TLS: checking %s and %s failed", self.cert, self.key)


class SimBridgeCertLoader(CertLoader):
    """Sanic builds the server's context with this in every worker process (`certloader_class`):
    SIMBRIDGE's own context, kept on `app.ctx.tls` for reloading."""

    def __init__(self, ssl_data: ssl.SSLContext | dict[str, str | os.PathLike[str]] | None) -> None:
        self.ssl_data = ssl_data

    def load(self, app: Any) -> ssl.SSLContext:
        settings = app.ctx.settings
        reloader = CertReloader(settings.tls_cert, settings.tls_key, settings.tls_poll_seconds)
        app.ctx.tls = reloader
        return reloader.context
