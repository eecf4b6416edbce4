"""gRPC adapter: the Open Inference Protocol's GRPCInferenceService and grpc.health.v1.

One server per Gunicorn worker (``server``), its servicer (``servicer``), its
memory quota (``quota``) and the protocol's generated messages
(``open_inference_pb2``, from ``open_inference.proto``: ``make grpc-stubs``).

May import: ``app.core``, ``app.ops``, ``app.config``, ``app.errors``,
``app.extensions``. Never ``app.api``.
"""
