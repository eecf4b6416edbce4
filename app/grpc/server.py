"""The gRPC server each Gunicorn worker runs beside its HTTP side, on GRPC_PORT.

Every worker binds the same port with SO_REUSEPORT (gRPC's default on
Linux), so the kernel spreads connections over the workers as it does for
HTTP, and a reload's new workers serve the port before the old ones leave.
Imported in workers only: gRPC never runs in the master before the fork.
"""

import time
from concurrent import futures

import grpc
from flask import Flask
from gevent import monkey
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from app.core.serving import serving_state
from app.grpc.quota import STREAMS_PER_CONNECTION, MemoryQuota, quota_bytes
from app.grpc.servicer import METHODS, OpenInferenceServicer

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
    """One worker's gRPC server: the Open Inference Protocol and grpc.health.v1."""

    def __init__(self, app: Flask, address: str):
        if monkey.is_module_patched("socket"):
            # The gevent worker: gRPC's completion queue must yield to the loop.
            from grpc.experimental import gevent as grpc_gevent

            grpc_gevent.init_gevent()
        config = app.config
        limit = config["MAX_CONTENT_LENGTH"]
        served = [each for runner in serving_state(app).runners.values() for each in runner.served]
        largest_call = max(limit, *(largest_answer_bytes(runner) for runner in served))
        idle_ms = config["GUNICORN_KEEPALIVE"] * 1000
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=CONCURRENT_CALLS),
            maximum_concurrent_rpcs=CONCURRENT_CALLS,
            options=[
                # The same bound as an HTTP body: a bigger message is RESOURCE_EXHAUSTED.
                ("grpc.max_receive_message_length", limit),
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
        self.quota = MemoryQuota(quota_bytes(largest_call))
        servicer = self.servicer = OpenInferenceServicer(app, self.quota, largest_call)
        # Stream handlers: each method reads its one message itself (app/grpc/servicer.py).
        handlers = {
            name: grpc.stream_unary_rpc_method_handler(getattr(servicer, name)) for name in METHODS
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if not self.server.add_insecure_port(address):
            raise RuntimeError(f"gRPC cannot listen on {address}")

    def start(self) -> None:
        self.server.start()
        for service in ("", SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def drain(self) -> None:
        """Tell health checks this worker is leaving; calls are still answered."""
        self.health.enter_graceful_shutdown()

    def close(self, grace: float) -> None:
        """Stop listening and send clients away; return once the calls in flight are
        done (``grace`` seconds at most).

        gRPC's shutdown cancels every call that has arrived but not yet reached a
        handler; under load a few always have. So calls are held at the door
        first, which lets every arrived call reach a handler, and let through
        once the shutdown has begun: clients then see only answers.
        """
        self.servicer.admitting.clear()
        time.sleep(HOLD_SECONDS)
        stopped = self.server.stop(grace)
        self.servicer.admitting.set()
        stopped.wait(grace)
        # The event is set once the last handler returns; its answer can still be
        # in gRPC's buffers, and exiting at once cancelled about 1 call in 6,000.
        time.sleep(0.2)


def largest_answer_bytes(runner) -> int:
    """The most bytes one answer can hold: every output at the largest admitted batch."""
    return runner.bundle.max_batch * runner.compiled.numbers_out * 4 + ANSWER_OVERHEAD_BYTES
