"""Writing an encoded packet straight into each socket's WebSocket connection, framed once.

Sending one packet to many sockets the usual way costs, per socket, a queue put, a wake-up of
Engine.IO's writer task, an ASGI `send`, uvicorn's sans-I/O WebSocket framing the same text again,
and a write. A server's WebSocket frames are not masked, so a packet's frame is the same bytes for
every socket: `websocket_frame` makes it once, and `write_now` hands it to a socket's transport
directly when that gives the same result as the queue would:

- the socket is on WebSocket (upgraded, not upgrading, not closing), uvicorn's sans-I/O protocol
  carries it, and that connection is open, not closing, and not paused by flow control;
- nothing is ahead of the packet: the socket's queue is empty and its writer task is waiting
  for the next packet (not holding packets it took and has yet to write).

Otherwise the caller queues the packet as usual; a socket that fell back once keeps queueing until
its writer has caught up, so every socket gets its packets in the order they were sent.

This reaches into python-engineio (its ASGI WebSocket and socket flags) and uvicorn (its
sans-I/O WebSocket protocol): checked against the versions pyproject pins, fenced in
tests/test_compat.py by CHECKED_SOURCES like the other compat modules.
"""

from __future__ import annotations

import struct

import socketio
from engineio import async_socket
from engineio import packet as eio_packet
from engineio.async_drivers import asgi as engineio_asgi
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# sha256 of inspect.getsource(...) of each method relied on, in the versions checked against
# (python-engineio 4.15.1, python-socketio 5.18.1, uvicorn 0.55.0)
CHECKED_SOURCES = {
    # the socket's writer takes packets with `poll` (replaced in socketio_compat, which marks it
    # waiting) and writes each through `ws.send`; upgrading/upgraded/closing mean what they say
    "engineio.async_socket.AsyncSocket._websocket_handler":
        "27f120df4d717a24478b7b0f7389ce19eea8a881dd07e2c81fb1cf2493e006a5",
    # `send` queues the packet after checking for a ping timeout: the only other thing it does
    "engineio.async_socket.AsyncSocket.send": "0437276ccba7ab091471e29f4bc6a0f178da7b16a590c707d6c69a97609e6d14",
    # `asgi.send` is kept as the connection's send, `handler` is the socket's bound handler
    "engineio.async_drivers.asgi.WebSocket.__call__": "abbf7a49b2256d3716476bc994bd1cec7b5e060c01692044959a3558af5efff1",
    # a message goes out as one frame through `conn.send_text` / `send_binary` and
    # `transport.write`, after waiting for `writable`; nothing once `close_sent` or `disconnected`
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.send": "3b8afeb81b9b9ae8bb72df7cea930130317636d1de3f86b7c4d3113c64f749d5",
    # DirectEmit copies the local emit without a callback: one encoded packet to every participant;
    # the pub/sub manager's emit and _handle_emit call it through super() for this node's sockets
    "socketio.async_manager.AsyncManager.emit": "01ccd5b82b4f955e4f2e4d07b5fbf09cacef868e9f61bc2abe56d92118a5f3ac",
    "socketio.async_pubsub_manager.AsyncPubSubManager._handle_emit": "4284671be955f644db57572ca19e27c79b0444f89efd4583dac5654650f42c78",
    "socketio.async_pubsub_manager.AsyncPubSubManager.emit": "6cc46e0ff9b6d7cfec7ad50b44b3738550b8107c477416e692e194bc0b19f311",
    # sets `close_sent`, `disconnected`, `writable` as `send` reads them
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.connection_lost": "d0f4179c028b330364f1609d79b0c68380a97da18906af772c3e4a9c9a504c77",
    "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.handle_close": "62fd412b1f5b9e86106a17a6c3dc57df6264e3087579fac49e9a74dbcb509412",
}

_TEXT, _BINARY = 0x81, 0x82  # FIN and the opcode: a whole message in one frame


def websocket_frame(packet) -> bytes:
    """A server's (unmasked, uncompressed) WebSocket frame carrying one Engine.IO packet."""
    encoded = packet.encode()
    if isinstance(encoded, str):
        first, payload = _TEXT, encoded.encode()
    else:
        first, payload = _BINARY, encoded
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 65536:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def write_now(socket, frame: bytes) -> bool:
    """Write the frame to this Engine.IO socket's connection if nothing is queued ahead of it (see
    the module); False: the caller queues the packet instead."""
    # jobmon_waiting is only ever set on an upgraded socket's writer; a closing socket queues its
    # CLOSE packet (or is closed at once)
    if not socket.jobmon_waiting or socket.queue._queue or socket.closed:
        return False
    protocol = socket.jobmon_protocol
    # uvicorn closes the transport as soon as the client's close frame arrives or the protocol
    # fails, and sets close_sent when it sends one: then the websockets state is no longer OPEN
    if (protocol is None or protocol.close_sent or protocol.disconnected or not protocol.writable.is_set()
            or protocol.transport.is_closing()):
        return False
    protocol.transport.write(frame)
    return True


class RegisteredWebSocket(engineio_asgi.WebSocket):
    """Engine.IO's ASGI WebSocket, which tells its socket the uvicorn connection it writes to."""

    async def __call__(self, environ):
        socket = getattr(self.handler, "__self__", None)
        protocol = getattr(environ.get("asgi.send"), "__self__", None)
        # only the bare protocol's own send: a wrapped one may change messages on their way
        if isinstance(socket, async_socket.AsyncSocket) and isinstance(protocol, WebSocketsSansIOProtocol) \
                and not protocol.conn.extensions:
            socket.jobmon_protocol = protocol
        return await super().__call__(environ)


def install_direct_writes(eio_server) -> None:
    """Let this Engine.IO server's WebSockets be written to directly (see the module)."""
    async_socket.AsyncSocket.jobmon_protocol = None  # until RegisteredWebSocket sets the socket's own
    if not hasattr(async_socket.AsyncSocket, "jobmon_waiting"):
        async_socket.AsyncSocket.jobmon_waiting = False  # set by socketio_compat's poll
    eio_server._async = {**eio_server._async, "websocket": RegisteredWebSocket}


class DirectEmitManager(socketio.AsyncManager):
    """python-socketio's manager for one node, whose emit to this node's sockets encodes and frames
    each packet once and writes it straight to each WebSocket where `write_now` allows (queued
    otherwise, in order). Every room emit comes down to it (job-stats, dashboard-summary,
    job-alert); the stock one makes a Task per socket to queue each packet."""

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        room = to or room
        if callback is not None or namespace not in self.rooms:
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback,
                                      **kwargs)
        if isinstance(data, tuple):  # as python-socketio does: a tuple is several arguments
            arguments = list(data)
        else:
            arguments = [] if data is None else [data]
        pkt = self.server.packet_class(socketio.packet.EVENT, namespace=namespace, data=[event] + arguments)
        if pkt.packet_type != socketio.packet.EVENT:  # binary data: attachments follow, the usual way
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid)
        packet = eio_packet.Packet(eio_packet.MESSAGE, pkt.encode())
        frame = websocket_frame(packet)
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        eio_sockets = self.server.eio.sockets
        # a list first: a socket closing during a send changes the rooms
        for sid, eio_sid in list(self.get_participants(namespace, room)):
            if sid in skip:
                continue
            socket = eio_sockets.get(eio_sid)
            if socket is None or not write_now(socket, frame):
                await self.server._send_eio_packet(eio_sid, packet)


class RedisManager(socketio.AsyncRedisManager, DirectEmitManager):
    """The Redis manager (an emit reaches every node), each node's own sockets written to as
    DirectEmitManager does: it sits between the pub/sub layer and AsyncManager, so the pub/sub
    layer's local delivery (`super().emit`) comes to it."""
