"""/v2: the Open Inference Protocol (KServe, Triton and MLServer clients) over REST.

Health, server and model metadata, model readiness and ``infer``, as the
protocol specifies them; errors are ``{"error": "..."}`` with the HTTP status.
"""

from flask import current_app, g, request
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import ValidationError

from app.api.parser import OpenInferenceBlueprint, document_only, load_json, read_body
from app.api.schemas import (
    ModelStateSchema,
    OipInferRequestSchema,
    OipInferResponseSchema,
    OipLiveSchema,
    OipModelMetadataSchema,
    OipModelReadySchema,
    OipModelStatsSchema,
    OipReadySchema,
    OipServerMetadataSchema,
    ProtocolErrorSchema,
    RepositoryIndexRequestSchema,
    RepositoryLoadRequestSchema,
    RepositoryLoadSchema,
    RepositoryUnloadRequestSchema,
    RepositoryUnloadSchema,
    RolloutSchema,
    RolloutStateSchema,
)
from app.core import control, rollouts
from app.core.inference import (
    InvalidInput,
    check_requested_outputs,
    infer,
    json_ready,
    output_bytes,
    tensors_to_inputs,
)
from app.core.metadata import (
    EXTENSIONS,
    SERVER_NAME,
    SERVER_VERSION,
    model_metadata,
    model_stats,
    served_model,
)
from app.core.serving import serving_state
from app.ops.json_provider import dumps
from app.runtime.datatypes import DATATYPES

blp = OpenInferenceBlueprint(
    "open_inference",
    __name__,
    url_prefix="/v2",
    description="Open Inference Protocol v2 (KServe, Triton, MLServer clients).",
)


@blp.route("")
class ServerMetadata(MethodView):
    @blp.response(200, OipServerMetadataSchema)
    def get(self):
        """Server metadata: name, version, extensions"""
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


@blp.route("/health/live")
class ServerLive(MethodView):
    @blp.response(200, OipLiveSchema)
    def get(self):
        """200 while the server answers"""
        return {"live": True}


@blp.route("/health/ready")
class ServerReady(MethodView):
    @blp.response(200, OipReadySchema)
    @blp.alt_response(503, schema=OipReadySchema, description="No model loaded yet, or draining.")
    def get(self):
        """200 once this worker's model is loaded; 503 before and while draining"""
        ready = serving_state(current_app).ready
        return {"ready": ready}, 200 if ready else 503


@blp.route("/models/<segment:name>", endpoint="model_metadata")
@blp.route("/models/<segment:name>/versions/<segment:version>", endpoint="model_version_metadata")
class ModelMetadata(MethodView):
    @blp.response(200, OipModelMetadataSchema)
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Model or version not served.")
    def get(self, name, version=None):
        """Model metadata: versions, platform, inputs and outputs (shape -1 for the batch)"""
        return model_metadata(served_model(name, version))


@blp.route("/models/stats", endpoint="stats")
@blp.route("/models/<segment:name>/stats", endpoint="model_stats")
@blp.route("/models/<segment:name>/versions/<segment:version>/stats", endpoint="version_stats")
class ModelStatistics(MethodView):
    @blp.response(200, OipModelStatsSchema)
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Model or version not served.")
    def get(self, name=None, version=None):
        """Inference statistics per version, over every worker (the statistics extension)

        Triton's shape: success and failure counts and times, and the queue,
        input, inference and output durations, in nanoseconds. `version` may be a
        number or a label.
        """
        return model_stats(name, version)


@blp.route("/models/<segment:name>/ready", endpoint="model_ready")
@blp.route(
    "/models/<segment:name>/versions/<segment:version>/ready", endpoint="model_version_ready"
)
class ModelReady(MethodView):
    @blp.response(200, OipModelReadySchema)
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Model or version not served.")
    @blp.alt_response(503, schema=OipModelReadySchema, description="This worker is draining.")
    def get(self, name, version=None):
        """200 when the model (version) is ready for inference; 503 while draining"""
        runner = served_model(name, version)
        ready = serving_state(current_app).serves(runner.name)
        return {"name": runner.name, "ready": ready}, 200 if ready else 503


@blp.route("/models/<segment:name>/infer", endpoint="model_infer")
@blp.route(
    "/models/<segment:name>/versions/<segment:version>/infer", endpoint="model_version_infer"
)
class ModelInfer(MethodView):
    @blp.arguments(OipInferRequestSchema(), error_status_code=400)
    @blp.response(200, OipInferResponseSchema)
    @blp.alt_response(400, schema=ProtocolErrorSchema, description="Input the model cannot take.")
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Model or version not served.")
    @blp.alt_response(413, schema=ProtocolErrorSchema, description="Body or batch too large.")
    def post(self, body, name, version=None):
        """Inference: input tensors in, output tensors out, in one call

        `version` may be a number or a label; without one, a model with weights answers
        from the version they pick (sticky by an `X-Routing-Key` header).
        """
        runner = served_model(name, version, route=True)
        compiled = runner.compiled
        try:
            if g.get("raw_binary"):
                body = raw_binary_request(compiled, len(g.binary_tensors))
            wanted = [output["name"] for output in body.get("outputs") or []]
            check_requested_outputs(wanted, compiled)
            inputs = tensors_to_inputs(body["inputs"], compiled, g.get("binary_tensors"))
            outputs = infer(runner, inputs)
        except InvalidInput as error:
            abort(error.protocol_status, message=error.message, errors=error.errors)
        return infer_response(runner, body, outputs, wanted)


@blp.route("/repository/index")
class RepositoryIndex(MethodView):
    @document_only(blp.arguments(RepositoryIndexRequestSchema(), required=False))
    @blp.response(200, ModelStateSchema(many=True))
    @blp.alt_response(400, schema=ProtocolErrorSchema, description="Not an index request.")
    def post(self):
        """The model repository's index: every model, its version and state, and why one is
        unavailable (the protocol's model-repository extension; the body is optional)"""
        body = optional_body(RepositoryIndexRequestSchema())
        return control.index(current_app, ready_only=body["ready"])


@blp.route("/repository/models/<segment:name>/load")
class RepositoryModelLoad(MethodView):
    @document_only(blp.arguments(RepositoryLoadRequestSchema(), required=False))
    @blp.response(200, RepositoryLoadSchema)
    @blp.alt_response(400, schema=ProtocolErrorSchema, description="Not loaded, with why.")
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Not in the repository.")
    @blp.alt_response(503, schema=ProtocolErrorSchema, description="Another load is running.")
    def post(self, name):
        """Load a model from the repository, or its newest version if it serves: every
        worker serves it before the answer (MODEL_CONTROL_MODE=explicit)"""
        optional_body(RepositoryLoadRequestSchema())
        controlled(control.load, name)
        return {"name": name, "load": True}


@blp.route("/repository/models/<segment:name>/unload")
class RepositoryModelUnload(MethodView):
    @document_only(blp.arguments(RepositoryUnloadRequestSchema(), required=False))
    @blp.response(200, RepositoryUnloadSchema)
    @blp.alt_response(400, schema=ProtocolErrorSchema, description="Not in explicit mode.")
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Not loaded.")
    @blp.alt_response(503, schema=ProtocolErrorSchema, description="Another load is running.")
    def post(self, name):
        """Stop serving a model: no worker serves it after the answer
        (MODEL_CONTROL_MODE=explicit)"""
        optional_body(RepositoryUnloadRequestSchema())
        controlled(control.unload, name)
        return {"name": name, "unload": True}


@blp.route("/repository/models/<segment:name>/rollout")
class RepositoryModelRollout(MethodView):
    @blp.response(200, RolloutStateSchema)
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Not served.")
    def get(self, name):
        """A model's rollout: its versions served, labels, weights and shadow"""
        return rolled_out(rollouts.current, name)

    @blp.arguments(RolloutSchema(), error_status_code=400)
    @blp.response(200, RolloutStateSchema)
    @blp.alt_response(400, schema=ProtocolErrorSchema, description="Does not hold together.")
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Not served.")
    @blp.alt_response(503, schema=ProtocolErrorSchema, description="Another change is running.")
    def post(self, body, name):
        """Set a model's rollout (labels, weights, shadow; what the body leaves out is
        removed): in force on every worker before the answer, and written to
        version_policy.json"""
        return rolled_out(rollouts.change, name, body)


def rolled_out(action, name: str, *arguments) -> dict:
    try:
        return action(current_app, name, *arguments)
    except rollouts.RolloutError as error:
        abort(error.status, message=error.message)


def optional_body(schema) -> dict:
    """The body loaded by ``schema``; an empty body reads as ``{}``."""
    raw = read_body(request)
    try:
        return schema.load(load_json(raw) if raw.strip() else {})
    except ValidationError as error:
        abort(400, message="The request body is invalid", errors=error.messages)


def controlled(action, name: str) -> None:
    """Run a load or unload; a refusal answers its status and why."""
    try:
        action(current_app, name)
    except control.ControlError as error:
        headers = {"Retry-After": "1"} if error.status == 503 else None
        abort(error.status, message=error.message, headers=headers)


def raw_binary_request(compiled, size: int) -> dict:
    """Triton's raw binary request as the protocol's JSON: the body is the raw tensor of the
    model's one input, in its datatype, whose batch its size gives; every output is answered
    binary."""
    if len(compiled.inputs) != 1:
        raise InvalidInput(
            400,
            "A raw binary request (Inference-Header-Content-Length: 0) needs a model with one "
            f"input; this one has {len(compiled.inputs)}.",
        )
    (spec,) = compiled.inputs
    datatype = DATATYPES[spec.dtype]
    instance = spec.size * spec.kind.numpy.itemsize
    if size == 0 or size % instance:
        raise InvalidInput(
            400,
            f"A raw binary body of {size} bytes is not a whole number of instances of input "
            f"{spec.name!r} ({datatype}, {instance} bytes each).",
        )
    tensor = {
        "name": spec.name,
        "datatype": datatype,
        "shape": [size // instance, *spec.feature_shape],
        "parameters": {"binary_data_size": size},
    }
    return {"inputs": [tensor], "parameters": {"binary_data_output": True}}


def infer_response(runner, body: dict, outputs: dict, wanted: list[str]):
    """The outputs as JSON, or as a JSON header and raw tensors where the request asks for
    binary data (``binary_data_output`` for all, ``binary_data`` per output)."""
    everything = (body.get("parameters") or {}).get("binary_data_output") is True
    binary = {
        output["name"]: (output.get("parameters") or {}).get("binary_data", everything)
        for output in body.get("outputs") or []
    }
    tensors, chunks = [], []
    for spec in runner.compiled.outputs:
        if wanted and spec.name not in wanted:
            continue
        array = outputs[spec.name]
        tensor = {"name": spec.name, "datatype": DATATYPES[spec.dtype], "shape": list(array.shape)}
        if binary.get(spec.name, everything) is True:
            chunks.append(output_bytes(array, spec))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = json_ready(array.reshape(-1), spec)
        tensors.append(tensor)
    response = {"model_name": runner.name, "model_version": str(runner.number)}
    if "id" in body:
        response["id"] = body["id"]
    response["outputs"] = tensors
    if not chunks:
        return response
    header = dumps(response)
    return current_app.response_class(
        b"".join([header, *chunks]),
        content_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
