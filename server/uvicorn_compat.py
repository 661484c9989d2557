"""Where Job Monitor reaches into uvicorn's internals: nowhere else (and direct_write.py, for the
WebSocket write path).

`OneWriteHttpProtocol` is uvicorn's httptools HTTP/1.1 protocol, with one change: a response's
status line and headers go out in the same write as its body, one send system call per answer
instead of two. uvicorn writes the header block when the app sends `http.response.start` and the
body when it sends `http.response.body`; on loopback each write is a send that wakes the reader,
and under agent reports the two were about 14% of the event loop's samples (py-spy), the header
write alone 10%.

`LeanWebSocketProtocol` is uvicorn's sans-I/O WebSocket protocol holding less while a connection
lives (idle connections are most of a live server's memory): its queue of received messages and
its `writable` event are server/lean_asyncio.py's (about 4 KB less while idle), and once the
handshake's answer has gone out it lets go of the handshake's request and response (websockets
objects with their headers, about 4.5 KB), which nothing reads again. websockets' parser keeps the
request it parsed for the connection's life (a local of its generator), so the request's headers
are cleared too.

Checked against the version pyproject pins (uvicorn). tests/test_compat.py fails when the
installed source of a method relied on here differs from the one recorded in CHECKED_SOURCES.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from server.lean_asyncio import LeanEvent, LeanQueue

# sha256 of inspect.getsource(...) of each method relied on, in the version checked (uvicorn 0.55.0)
CHECKED_SOURCES = {
    # creates `self.cycle` with `transport=self.transport`; we swap the cycle's transport after it
    "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol.on_headers_complete":
        "1ea8589acfad92d8ff9182775f337d98fc469e0fa39642a83195fca920f5ca96",
    # writes the header block, then each body chunk (none for HEAD), through
    # `self.transport.write`; closes through `self.transport.close`; `100 Continue` is written
    # before the response starts
    "uvicorn.protocols.http.httptools_impl.RequestResponseCycle.send":
        "abdd8601b326a8da972436918d3a954e1ef39c6bf0cd9e1c1954c2e798d0bb9c",
    # the whole class: `queue` is used only through put_nowait, get and empty, `writable` through
    # set, clear, wait and is_set (and direct_write.py); `request` and `response` are set in
    # handle_connect and read only by send, before it calls start_keepalive (once, when the
    # handshake's answer has been written)
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol":
        "3a21a05ae539403630c0016bfef6cb160a87ffb176465cb521412cfe2208ccde",
}

CONTINUE = b"HTTP/1.1 100 "


class HeldHeaderTransport:
    """The transport one response cycle writes to: the first write (the status line and
    headers) is held and goes out joined to the next one (the body's first chunk), or when the
    cycle closes the connection. Anything else is the connection's transport itself."""

    __slots__ = ("_transport", "_held", "_first")

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first and not data.startswith(CONTINUE):  # "100 Continue" must go out at once
            self._first = False
            self._held = data
            return
        if self._held is not None:
            data, self._held = self._held + data, None
        self._transport.write(data)

    def close(self) -> None:
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class OneWriteHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each response written in one piece (see the module)."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        # a new cycle (not a WebSocket upgrade, which makes none): its task has not run yet. An
        # answer to HEAD has no body write to join (uvicorn writes its header block alone)
        if self.cycle is not None and self.cycle is not before and self.scope["method"] != "HEAD":
            self.cycle.transport = HeldHeaderTransport(self.transport)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, holding less per connection (see the module)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.queue = LeanQueue()
        self.writable = LeanEvent()
        self.writable.set()

    def start_keepalive(self) -> None:
        # called once, right after the handshake's answer was written: the request and the
        # response are not read again
        self.request.headers.clear()
        self.request = self.response = None
        super().start_keepalive()
