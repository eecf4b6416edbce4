"""The Gunicorn worker the server runs by default: gevent, fair, probes first.

Gunicorn's gevent worker holds each connection in a greenlet: an idle, slow
or kept-alive client costs a few kilobytes, never a whole worker. Left as it
is, it serves a CPU-bound app unfairly: a greenlet whose client has already
sent its next request never yields, so one keep-alive client was served
again and again while others waited (p50 1 ms, p90 60-120 ms at 20
connections). This worker adds three rules:

- once a request is answered, its connection waits for a turn of the loop: the
  loop polls, and every connection it finds ready runs first, so ready
  connections take turns;
- inferences run one at a time, and one of a millisecond or more waits for two
  such turns first, so a probe waits behind one of them at most (behind shorter
  ones, at most a round of requests);
- a long inference runs in a thread of its own (LiteRT releases the GIL while
  it computes), so the loop answers probes and sends Gunicorn its heartbeat
  meanwhile: no model, however slow, gets its worker killed for a timeout.

And it closes a connection as Gunicorn's sync worker does, draining what the
client still sends first, so a refusal is not lost to a reset; it sends an
answer's head with its body, in one system call instead of two; it writes
the access lines of one pass of the loop in one call (app/ops/logs.py); and
it leaves a burst of connections to its siblings once it holds more than
they do (app/ops/connections.py).

Gunicorn imports this module in the master; it patches nothing there. The
worker monkey-patches the standard library when it starts, as Gunicorn's
gevent worker does, before it serves anything.
"""

from functools import partial

import gevent
from gevent.lock import Semaphore
from gevent.server import StreamServer
from gevent.threadpool import ThreadPool
from gunicorn import util
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from app.ops import connections


class ModelServerWorker(GeventWorker):
    """Gunicorn's gevent worker, with fair turns between connections and inferences."""

    share: connections.Share

    def run(self):
        self.share = connections.Share(self.age, self.pid)
        # Gunicorn's run builds its listening servers by this name: ours share out bursts.
        ggevent.StreamServer = partial(SharingStreamServer, self.share)
        batch_lines = getattr(self.log, "write_once_a_pass", None)  # app/ops/logs.py's logger
        if batch_lines:
            batch_lines(gevent.get_hub().loop.run_callback)
        try:
            super().run()
        finally:
            if batch_lines:
                self.log.flush()

    def handle(self, listener, client, addr):
        self.share.opened()
        try:
            super().handle(listener, client, addr)
        finally:
            self.share.closed()

    # Closing with unread request bytes makes the kernel send a reset, which
    # can destroy the answer before the client reads it (RFC 9112, 9.6): as
    # Gunicorn's sync worker does, half-close and drain briefly first.

    def handle_request(self, listener_name, req, sock, addr):
        answer = OneWrite(sock)
        try:
            return super().handle_request(listener_name, req, answer, addr)
        except StopIteration:  # The connection closes after this answer.
            answer.flush()
            util.close_graceful(sock)
            raise
        finally:
            answer.flush()
            loop_turn()

    def handle_error(self, req, client, addr, exc):
        super().handle_error(req, client, addr, exc)
        util.close_graceful(client)

    @staticmethod
    def adopt(state) -> None:
        """Give a worker's ``ServingState`` this worker's turns, thread and body deadline.

        Its models, and those loaded later, share one turn and one thread: the CPU
        does one inference at a time.
        """
        turns, offload = Semaphore(), inference_thread()

        def share(runner) -> None:
            runner.turns, runner.offload = turns, offload
            runner.yield_to_ready = turn_before_inference

        for runner in state.runners.values():
            for served in runner.served:
                share(served)
        state.adopt = share
        state.body_deadline = body_deadline
        if state.shadows is not None:  # A shadow's inferences: in a thread of their own.
            state.shadows.offload, state.shadows.idle = inference_thread(), gevent.idle

    @staticmethod
    def call_later(seconds: float, function) -> None:
        """Run ``function`` after ``seconds``; a thread would block the loop (and fail)."""
        gevent.spawn_later(seconds, function)


class SharingStreamServer(StreamServer):
    """gevent's server, which leaves the next connection in the backlog while its worker
    holds more than a sibling (``Share.ahead``) and looks again shortly."""

    def __init__(self, share: connections.Share, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.share = share
        self._retry = None

    def _do_read(self):
        if self.share.ahead():
            self.stop_accepting()
            if self._retry is None:
                self._retry = self.loop.timer(connections.DEFER_SECONDS)
            if not self._retry.active:
                self._retry.start(self._start_accepting_if_started)
            return
        super()._do_read()


class OneWrite:
    """A client socket that sends an answer's head together with its body.

    Gunicorn writes the status line and headers in one ``sendall`` and the body
    in the next: two system calls per answer, and on loopback the larger part
    of a probe's cost. The head, always the first write, is held until the
    body's first write, or ``flush`` at the end of the request; a large body
    goes on its own rather than be copied. Everything else is the socket's.
    """

    JOIN_BYTES = 64 * 1024

    def __init__(self, sock):
        self._socket = sock
        self._head = None
        self._started = False

    def sendall(self, data) -> None:
        if not self._started:
            self._started = True
            self._head = data
            return
        head, self._head = self._head, None
        if head is not None:
            if len(data) <= self.JOIN_BYTES:
                return self._socket.sendall(head + data)
            self._socket.sendall(head)
        self._socket.sendall(data)

    def flush(self) -> None:
        """Send a head still held. A client gone by then (or a socket Gunicorn closed
        after an error mid-answer) is not this request's error: it is noticed at the
        connection's next read, as a failed write of the head alone would have been."""
        head, self._head = self._head, None
        if head is not None:
            try:
                self._socket.sendall(head)
            except OSError:
                pass

    def sendfile(self, *args, **kwargs):
        self.flush()
        return self._socket.sendfile(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._socket, name)


def loop_turn() -> None:
    """Resume once the loop has polled its connections and run every one it found ready.

    A zero timer of the lowest priority: libev runs it in the loop's next pass,
    after the connections that pass's poll found. ``sleep(0)`` resumes before
    that poll, so a client whose next request had already arrived was served
    again before connections waiting on the poll; ``idle()`` resumes only once a
    pass finds nothing to do, which steady traffic can put off for long.
    """
    hub = gevent.get_hub()
    timer = hub.loop.timer(0.0)
    timer.priority = hub.loop.MINPRI
    hub.wait(timer)


def turn_before_inference() -> None:
    """Two turns: a probe's new connection is accepted in one, and its greenlet starts
    (and answers) in the next. With one, probes waited about 3 ms longer (p90) under
    16 clients sending images."""
    loop_turn()
    loop_turn()


def inference_thread():
    """``offload(function, inputs)``: the call run in one native thread, the greenlet waiting."""
    pool = ThreadPool(1)
    return lambda function, inputs: pool.apply(function, (inputs,))


def body_deadline(seconds: float) -> gevent.Timeout:
    """Raise ``TimeoutError`` in the reading greenlet once ``seconds`` have passed."""
    return gevent.Timeout(seconds, TimeoutError)
