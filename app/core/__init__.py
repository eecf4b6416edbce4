"""The serving core every wire format adapts to.

``inference``: request values to typed arrays, the limits, one inference, the
outputs; ``serving``: the per-worker serving state and the model it serves;
``metadata``: the Open Inference Protocol's server and model metadata and
statistics, shared by REST and gRPC; ``auth``: the bearer token; ``control``:
load and unload on every worker; ``rollouts``: a model's labels, weights and
shadow changed on every worker; ``shadow``: copies of inferences run on a
shadow version and compared.

May import: ``app.runtime``, ``app.ops``, ``app.config``, ``app.errors``,
``app.extensions``. Never an adapter (``app.api``, ``app.grpc``).
"""
