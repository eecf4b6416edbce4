"""The gRPC server each Gunicorn worker runs beside its HTTP side, on GRPC_PORT.

Every worker binds the same port with SO_REUSEPORT (gRPC's default on
Linux), so the kernel spreads connections over the workers as it does for
HTTP, and a reload's new workers serve the port before the old ones leave.
Imported in workers only: gRPC never runs in the master before the fork.
"""

import logging
import time
from concurrent import futures

import grpc
from flask import Flask
from gevent import monkey
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from app.core.serving import serving_state
from app.grpc.quota import STREAMS_PER_CONNECTION, MemoryQuota, quota_bytes
from app.grpc.servicer import METHODS, OpenInferenceServicer

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
# Calls one worker handles at once (greenlets under gevent); grpcio refuses
# more with RESOURCE_EXHAUSTED. Inference takes turns on the one interpreter.
CONCURRENT_CALLS = 64
# Bytes of an answer besides its tensors (names, shapes, the model's name).
ANSWER_OVERHEAD_BYTES = 64 * 1024
# Each connection is sent away (GOAWAY; its calls in flight finish) once this
# old, so clients spread over the workers a reload starts, as HTTP clients do.
CONNECTION_AGE_SECONDS = 5
# How long a stopping server holds new calls before it shuts down (see close()).
HOLD_SECONDS = 0.05


class GrpcServer:
    """One worker's gRPC server: the Open Inference Protocol and grpc.health.v1.

    Its bounds (the largest message, the memory quota) follow the models the
    worker serves. grpcio fixes a server's bounds when it is made, so when a load
    or unload changes them, a server with the new bounds starts on the same port
    (SO_REUSEPORT) and the old one closes as a stopping worker's does: the calls
    it holds finish, its clients are sent to the new one.
    """

    def __init__(self, app: Flask, address: str, call_later):
        if monkey.is_module_patched("socket"):
            # The gevent worker: gRPC's completion queue must yield to the loop.
            from grpc.experimental import gevent as grpc_gevent

            grpc_gevent.init_gevent()
        self.app, self.address, self.call_later = app, address, call_later
        self.draining = False
        self.server, self.servicer, self.health = self._build(*call_bounds(app))

    def _build(self, message_limit: int, largest_call: int):
        config = self.app.config
        idle_ms = config["GUNICORN_KEEPALIVE"] * 1000
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=CONCURRENT_CALLS),
            maximum_concurrent_rpcs=CONCURRENT_CALLS,
            options=[
                # The same bound as an HTTP body: a bigger message is RESOURCE_EXHAUSTED.
                ("grpc.max_receive_message_length", message_limit),
                ("grpc.so_reuseport", 1),
                ("grpc.max_connection_age_ms", CONNECTION_AGE_SECONDS * 1000),
                ("grpc.max_connection_age_grace_ms", 30_000),
                # The bounds HTTP has: open connections per worker, and how long one may
                # stay silent before its handshake or idle between calls.
                ("grpc.max_allowed_incoming_connections", config["GUNICORN_WORKER_CONNECTIONS"]),
                ("grpc.server_handshake_timeout_ms", idle_ms),
                ("grpc.max_connection_idle_ms", idle_ms),
                # One connection's share of the memory quota (app/grpc/quota.py).
                ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
            ],
        )
        quota = MemoryQuota(quota_bytes(largest_call))
        servicer = OpenInferenceServicer(self.app, quota, message_limit, largest_call)
        # Stream handlers: each method reads its one message itself (app/grpc/servicer.py).
        handlers = {
            name: grpc.stream_unary_rpc_method_handler(getattr(servicer, name)) for name in METHODS
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        if not server.add_insecure_port(self.address):
            raise RuntimeError(f"gRPC cannot listen on {self.address}")
        return server, servicer, health_servicer

    def start(self) -> None:
        self._start(self.server, self.health)
        serving_state(self.app).limits_changed = self.follow

    def _start(self, server, health_servicer) -> None:
        server.start()
        for service in ("", SERVICE):
            health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.draining:
            health_servicer.enter_graceful_shutdown()

    def follow(self) -> None:
        """After a load or unload: serve with the bounds the models now served need."""
        if call_bounds(self.app) != self.servicer.bounds:
            # Soon, not here: this runs inside a call the old server holds.
            self.call_later(0, self._replace)

    def _replace(self) -> None:
        bounds = call_bounds(self.app)
        if bounds == self.servicer.bounds:  # Replaced already, or a later change went back.
            return
        old = self.server, self.servicer
        try:
            built = self._build(*bounds)
            self._start(built[0], built[2])
        except Exception:  # The old server serves on, with its bounds.
            log.exception(
                "gRPC could not start with bounds %s; it serves with %s", bounds, old[1].bounds
            )
            return
        self.server, self.servicer, self.health = built
        log.info(
            "gRPC takes messages up to %s bytes (a call holds up to %s) from now on",
            *(f"{bound:,}" for bound in bounds),
        )
        close_server(*old, self.app.config["GUNICORN_GRACEFUL_TIMEOUT"])

    def drain(self) -> None:
        """Tell health checks this worker is leaving; calls are still answered."""
        self.draining = True
        self.health.enter_graceful_shutdown()

    def close(self, grace: float) -> None:
        """Stop listening and send clients away; return once the calls in flight are
        done (``grace`` seconds at most)."""
        close_server(self.server, self.servicer, grace)


def close_server(server, servicer: OpenInferenceServicer, grace: float) -> None:
    """Stop ``server`` listening and send its clients away; return once its calls in
    flight are done (``grace`` seconds at most).

    gRPC's shutdown cancels every call that has arrived but not yet reached a
    handler; under load a few always have. So calls are held at the door
    first, which lets every arrived call reach a handler, and let through
    once the shutdown has begun: clients then see only answers.
    """
    servicer.admitting.clear()
    time.sleep(HOLD_SECONDS)
    stopped = server.stop(grace)
    servicer.admitting.set()
    stopped.wait(grace)
    # The event is set once the last handler returns; its answer can still be
    # in gRPC's buffers, and exiting at once cancelled about 1 call in 6,000.
    time.sleep(0.2)


def call_bounds(app: Flask) -> tuple[int, int]:
    """The largest message a call may send (the HTTP body limit, which follows the models
    served) and the largest message or answer a call may hold."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    served = [each for runner in serving_state(app).runners.values() for each in runner.served]
    return limit, max(limit, *(largest_answer_bytes(runner) for runner in served))


def largest_answer_bytes(runner) -> int:
    """The most bytes one answer can hold: every output at the largest admitted batch."""
    return runner.bundle.max_batch * runner.compiled.numbers_out * 4 + ANSWER_OVERHEAD_BYTES
