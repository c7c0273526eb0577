"""The layering rule: the hub and the services know nothing of HTTP or sockets' libraries, so
they can be read, tested and reused without a web server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB_FREE_PACKAGES = ("simbridge/hub", "simbridge/services")
WEB_LIBRARIES = ("sanic", "sanic_ext", "sanic_routing", "websockets")

IMPORT_AND_REPORT = """
import importlib, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
print(" ".join(sorted(name for name in sys.modules if name.split(".")[0] in {libraries})))
"""


def web_free_modules() -> list[str]:
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in WEB_FREE_PACKAGES
        for path in (ROOT / package).glob("*.py")
    )


def test_there_are_modules_to_check() -> None:
    assert "simbridge.services.relay" in web_free_modules()
    assert "simbridge.hub" in web_free_modules()


def test_hub_and_services_load_no_web_library() -> None:
    """Imported in a fresh interpreter, so an indirect import through another module counts."""
    assert _web_libraries_loaded_by(web_free_modules()) == []


def test_the_check_sees_a_web_library() -> None:
    """It can fail: the web layer itself loads Sanic."""
    assert "sanic" in _web_libraries_loaded_by(["simbridge.web.context"])


def _web_libraries_loaded_by(modules: list[str]) -> list[str]:
    script = IMPORT_AND_REPORT.format(libraries=set(WEB_LIBRARIES))
    result = subprocess.run(
        [sys.executable, "-c", script, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.split()
