"""The gevent worker's socket wrapper (an answer's head goes out with its body) and its
loop turn (connections the poll finds ready run first)."""

import gevent
import pytest
from gevent import socket

from app.ops.worker import OneWrite, loop_turn


class RecordingSocket:
    def __init__(self):
        self.calls = []

    def sendall(self, data):
        self.calls.append(("sendall", bytes(data)))

    def sendfile(self, file, offset=0, count=None):
        self.calls.append(("sendfile", count))

    def getpeername(self):
        return ("127.0.0.1", 5000)


def test_the_head_is_sent_with_the_first_body_write_in_one_call():
    sock = RecordingSocket()
    answer = OneWrite(sock)
    answer.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    assert sock.calls == []
    answer.sendall(b"{}")
    answer.sendall(b"more")
    answer.flush()
    assert sock.calls == [("sendall", b"HTTP/1.1 200 OK\r\n\r\n{}"), ("sendall", b"more")]


def test_a_head_without_a_body_goes_out_on_flush():
    sock = RecordingSocket()
    answer = OneWrite(sock)
    answer.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    answer.flush()
    answer.flush()
    assert sock.calls == [("sendall", b"HTTP/1.1 204 No Content\r\n\r\n")]


def test_a_large_body_is_not_copied_to_join_the_head():
    sock = RecordingSocket()
    answer = OneWrite(sock)
    body = b"x" * (OneWrite.JOIN_BYTES + 1)
    answer.sendall(b"head")
    answer.sendall(body)
    assert sock.calls == [("sendall", b"head"), ("sendall", body)]


def test_a_file_is_sent_after_the_head():
    sock = RecordingSocket()
    answer = OneWrite(sock)
    answer.sendall(b"head")
    answer.sendfile(None, count=10)
    assert sock.calls == [("sendall", b"head"), ("sendfile", 10)]
    assert answer.getpeername() == ("127.0.0.1", 5000)


def test_a_head_that_cannot_be_sent_at_the_end_is_dropped_quietly():
    class GoneSocket(RecordingSocket):
        def sendall(self, data):
            raise BrokenPipeError

    answer = OneWrite(GoneSocket())
    answer.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    answer.flush()


@pytest.mark.parametrize(
    "turn, order",
    [
        (loop_turn, ["ready connection", "answered"]),
        (gevent.sleep, ["answered", "ready connection"]),
    ],
    ids=["loop_turn", "sleep(0)"],
)
def test_a_loop_turn_lets_a_connection_the_poll_finds_ready_run_first(turn, order):
    """An answered request's turn lets a client whose request just arrived go first;
    ``sleep(0)`` did not, which left connections waiting on the poll behind it."""
    seen = []
    waiting, client = socket.socketpair()

    def connection():
        waiting.recv(1)  # Parked on the poll, as an idle keep-alive connection is.
        seen.append("ready connection")

    def answered():
        gevent.sleep(0)  # The connection parks first.
        client.send(b"x")  # Its request arrives while this greenlet still runs.
        turn()
        seen.append("answered")

    gevent.joinall([gevent.spawn(connection), gevent.spawn(answered)], timeout=5)
    waiting.close()
    client.close()
    assert seen == order
