"""The fences around other libraries' internals: an upgrade that changes a method we replace or
rely on fails here, naming it, instead of breaking the server silently."""

from __future__ import annotations

import hashlib
import importlib
import inspect

import pytest

from server import routing, uvicorn_compat
from server.db import databases_compat
from server.realtime import direct_write, socketio_compat

# each fenced module: the sources it relies on
FENCES = {module: module.CHECKED_SOURCES
          for module in (databases_compat, socketio_compat, direct_write, uvicorn_compat, routing)}
CHECKED = {dotted: digest for sources in FENCES.values() for dotted, digest in sources.items()}


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
            break
        except ImportError:
            continue
    for attr in parts[cut:]:
        target = getattr(target, attr)
    # a method we replaced (once a server has started in this process): check the original
    return getattr(target, "replaced", target)


@pytest.mark.parametrize("dotted", sorted(CHECKED))
def test_the_installed_source_is_the_one_checked(dotted):
    source = inspect.getsource(_resolve(dotted))
    digest = hashlib.sha256(source.encode()).hexdigest()
    fenced_in = [module.__name__ for module, sources in FENCES.items() if dotted in sources]
    assert digest == CHECKED[dotted], (
        f"{dotted} changed in the installed version (sha256 {digest}): read it, adapt "
        f"{' and '.join(fenced_in)}, then record the new hash there")


def test_a_changed_method_is_noticed():
    """The check is not vacuous: a source that differs by one character gives another digest."""
    dotted = "engineio.async_socket.AsyncSocket.poll"
    source = inspect.getsource(_resolve(dotted))
    assert hashlib.sha256((source + " ").encode()).hexdigest() != CHECKED[dotted]
