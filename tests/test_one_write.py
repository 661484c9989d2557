"""Each HTTP answer leaves in one write (server/uvicorn_compat.py), and HTTP still works: bodies,
HEAD, 204, pipelined requests, `Expect: 100-continue`, streamed bodies."""

from __future__ import annotations

import socket

import pytest

from server.uvicorn_compat import HeldHeaderTransport


class RecordingTransport:
    """Stands for a connection's transport: what was written, in which pieces."""

    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_the_header_block_leaves_with_the_first_body_chunk():
    transport = RecordingTransport()
    held = HeldHeaderTransport(transport)
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
    assert transport.writes == []
    held.write(b"body")
    held.write(b"more")  # a later chunk of a streamed body goes as it comes
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody", b"more"]
    assert held.is_closing() is False  # anything else is the transport's own


def test_100_continue_is_not_held_and_a_close_sends_what_is():
    transport = RecordingTransport()
    held = HeldHeaderTransport(transport)
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    held.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
    held.close()
    assert transport.writes[1:] == [b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n"]
    assert transport.closed


def _read_answers(sock: socket.socket, count: int, heads: int = 0) -> list[tuple[int, dict, bytes]]:
    """Read `count` HTTP/1.1 answers (the last `heads` of them to HEAD requests: no body)."""
    data, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(answers)} answers"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
        length = 0 if len(answers) >= count - heads else int(headers.get("content-length", 0))
        while len(data) < length:
            data += sock.recv(65536)
        answers.append((int(lines[0].split()[1]), headers, data[:length]))
        data = data[length:]
    return answers


@pytest.fixture
def connection(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        yield sock


def test_pipelined_requests_get_their_answers_in_order(connection):
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /no/such/path HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    (ok, ok_headers, ok_body), (missing, _, missing_body), (head, head_headers, head_body) = \
        _read_answers(connection, 3, heads=1)
    assert (ok, missing, head) == (200, 404, 200)
    assert ok_body == b'{"status":"ok"}' and ok_headers["x-frame-options"] == "DENY"
    assert b'"not_found"' in missing_body
    assert head_body == b"" and head_headers["content-length"] == ok_headers["content-length"]


def test_expect_100_continue_still_gets_its_interim_answer(connection):
    body = b'{"username": "nobody", "password": "wrong-password"}'
    connection.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    interim = connection.recv(65536)
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n")  # before the body was sent
    connection.sendall(body)
    (status, _, answer), = _read_answers(connection, 1)
    assert status == 401, answer


def test_a_streamed_file_arrives_whole(server):
    api = server.client()
    answer = api.get("/web/vendor/socket.io-client/socket.io.esm.min.js")
    assert answer.status_code == 200
    assert int(answer.headers["content-length"]) == len(answer.content) > 10_000
