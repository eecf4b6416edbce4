"""The Open Inference Protocol over gRPC: a thin adapter to the same core as /v2.

Each call runs in the Flask app's context and is answered by the serving
core, as REST's /v2 is: which model is served and its metadata
(app/core/metadata.py), how tensors become inputs (``tensors_to_inputs``),
the limits, the overflow rule, the sampled prediction log and the batch
metrics (``infer``), the token (app/core/auth.py). Only the wire format
differs: typed ``contents`` or ``raw_input_contents`` in, raw tensors out (as
Triton answers, and as tritonclient reads FP32 outputs).
"""

import functools
import json
import logging
import threading
import time

import grpc
from flask import Flask, g
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from werkzeug.exceptions import HTTPException

from app.core import control, rollouts
from app.core.auth import bearer_matches
from app.core.inference import (
    InvalidInput,
    check_requested_outputs,
    infer,
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
from app.core.serving import ROUTING_KEY, serving_state
from app.extensions import GRPC_REQUEST_SECONDS, GRPC_REQUESTS
from app.grpc import open_inference_pb2 as pb
from app.grpc.quota import MemoryQuota
from app.ops import statistics
from app.ops.request_context import REQUEST_ID, request_ids
from app.runtime.datatypes import DATATYPES

log = logging.getLogger("app.grpc")

# HTTP statuses of the shared core, as the protocol's gRPC servers answer them.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# The typed ``contents`` field that carries each datatype (FP16 travels raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class CallError(Exception):
    """A call refused with a gRPC status code and a message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def rpc(method):
    """Serve one method: request id, token, memory quota, message, metrics, log line, status.

    grpcio calls it with the request's raw bytes still to come (a stream
    handler), so the token is checked and the quota reserved before a byte of
    the message is read: an unauthenticated or excess call costs no buffer.
    It answers raw bytes, whose size the quota then holds until the call ends.
    """
    name = method.__name__

    @functools.wraps(method)
    def call(self, request_iterator, context):
        self.admitting.wait()
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        reservation = None
        with self.app.app_context():
            metadata = dict(context.invocation_metadata())
            incoming = metadata.get("x-request-id", "")
            g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else request_ids.new()
            g.routing_key = metadata.get(ROUTING_KEY.lower())  # Picks a weighted version.
            # With the status, in its batch: initial metadata of its own would be one more
            # completion-queue event per call, measured a quarter of the call's throughput.
            context.set_trailing_metadata((("x-request-id", g.request_id),))
            try:
                control.catch_up(self.app)
                if name in GUARDED:
                    self.check_token(metadata.get("authorization", ""))
                reservation = self.quota.reserve(context.peer(), self.largest_call)
                if reservation is None:
                    raise CallError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "This worker's gRPC calls hold their memory quota "
                        f"({self.quota.limit:,} bytes, half of it per connection); retry shortly.",
                    )
                if not context.add_callback(reservation.release):
                    reservation.release()  # The call has already ended.
                data = self.read_message(request_iterator)
                answer = method(self, parse(data, METHODS[name])).SerializeToString()
                reservation.resize(min(len(answer), self.largest_call))
                return answer
            except CallError as error:
                code, message = error.code, error.message
            except HTTPException as error:
                data = getattr(error, "data", None) or {}
                code = STATUS_CODES.get(error.code, grpc.StatusCode.INTERNAL)
                if data.get("unavailable"):  # A repository model that did not load.
                    code = grpc.StatusCode.UNAVAILABLE
                message = data.get("message") or error.description
            except Exception:
                log.exception("gRPC %s failed", name)
                code, message = grpc.StatusCode.INTERNAL, "Internal server error."
            finally:
                extra = {"request_id": g.request_id}
                inference = g.pop("inference", None)
                if inference is not None and inference.started >= started:
                    statistics.record(inference, started, code == grpc.StatusCode.OK)
                    extra.update(model=inference.name, model_version=int(inference.version))
                seconds = time.perf_counter() - started
                GRPC_REQUESTS(name, code.name).inc()
                GRPC_REQUEST_SECONDS(name).observe(seconds)
                extra["duration_ms"] = round(seconds * 1e3, 3)
                log.info("gRPC %s %s", name, code.name, extra=extra)
            context.abort(code, message)

    return call


def read_message(request_iterator, limit: int) -> bytes:
    """The call's one message; ``CallError`` when it does not arrive.

    grpcio refuses a message over max_receive_message_length itself (the client
    sees RESOURCE_EXHAUSTED) and this side sees no message at all, as when the
    client cancels or sends none: all are counted and logged as that refusal.
    """
    try:
        data = next(request_iterator, None)
    except grpc.RpcError:
        data = None
    if data is None:
        raise CallError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"No request message arrived: over the {limit:,}-byte limit "
            "(MAX_CONTENT_LENGTH), or the client cancelled or sent none.",
        )
    return data


def parse(data: bytes, message_type):
    try:
        return message_type.FromString(data)
    except DecodeError:
        raise CallError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"The request is not a valid {message_type.DESCRIPTOR.name} message.",
        ) from None


# Each method of ``inference.GRPCInferenceService`` with its request message.
METHODS = {
    "ServerLive": pb.ServerLiveRequest,
    "ServerReady": pb.ServerReadyRequest,
    "ModelReady": pb.ModelReadyRequest,
    "ServerMetadata": pb.ServerMetadataRequest,
    "ModelMetadata": pb.ModelMetadataRequest,
    "ModelInfer": pb.ModelInferRequest,
    "RepositoryIndex": pb.RepositoryIndexRequest,
    "RepositoryModelLoad": pb.RepositoryModelLoadRequest,
    "RepositoryModelUnload": pb.RepositoryModelUnloadRequest,
    "ModelStatistics": pb.ModelStatisticsRequest,
}
# The methods API_TOKEN guards, as it guards their REST routes.
GUARDED = ("ModelInfer", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")


class OpenInferenceServicer:
    """``inference.GRPCInferenceService`` for this worker's model."""

    def __init__(self, app: Flask, quota: MemoryQuota, message_limit: int, largest_call: int):
        self.app = app
        self.quota, self.message_limit, self.largest_call = quota, message_limit, largest_call
        # Cleared while the server stops (app/grpc/server.py): calls wait before they start.
        self.admitting = threading.Event()
        self.admitting.set()

    @property
    def bounds(self) -> tuple[int, int]:
        """The largest message a call may send, and the largest it may hold."""
        return self.message_limit, self.largest_call

    def read_message(self, request_iterator) -> bytes:
        """The call's message, within BODY_TIMEOUT as an HTTP body: a client sending it
        slowly holds its room in the quota that long at most."""
        seconds = self.app.config["BODY_TIMEOUT"]
        try:
            with serving_state(self.app).body_deadline(seconds):
                return read_message(request_iterator, self.message_limit)
        except TimeoutError:
            raise CallError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"The request message did not arrive within {seconds} s (BODY_TIMEOUT).",
            ) from None

    def check_token(self, authorization: str) -> None:
        expected = self.app.config["API_TOKEN"]
        if expected and not bearer_matches(authorization, expected):
            raise CallError(
                grpc.StatusCode.UNAUTHENTICATED,
                "A valid bearer token is required: metadata authorization: Bearer <API_TOKEN>.",
            )

    @rpc
    def ServerLive(self, request):
        return pb.ServerLiveResponse(live=True)

    @rpc
    def ServerReady(self, request):
        return pb.ServerReadyResponse(ready=serving_state(self.app).ready)

    @rpc
    def ModelReady(self, request):
        state = serving_state(self.app)
        if request.name in state.unavailable:  # Known, but not ready: as Triton answers.
            return pb.ModelReadyResponse(ready=False)
        runner = served_model(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=state.serves(runner.name))

    @rpc
    def ServerMetadata(self, request):
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )

    @rpc
    def ModelMetadata(self, request):
        runner = served_model(request.name, request.version or None)
        return json_format.ParseDict(model_metadata(runner), pb.ModelMetadataResponse())

    @rpc
    def ModelInfer(self, request):
        runner = served_model(request.model_name, request.model_version or None, route=True)
        wanted = [output.name for output in request.outputs]
        try:
            check_requested_outputs(wanted, runner.compiled)
            tensors, binary = request_tensors(request)
            outputs = infer(runner, tensors_to_inputs(tensors, runner.compiled, binary))
        except InvalidInput as error:
            raise CallError(STATUS_CODES[error.protocol_status], error.message) from None
        response = pb.ModelInferResponse(
            model_name=runner.name, model_version=str(runner.number), id=request.id
        )
        for spec in runner.compiled.outputs:
            if wanted and spec.name not in wanted:
                continue
            array = outputs[spec.name]
            response.outputs.add(name=spec.name, datatype=DATATYPES[spec.dtype], shape=array.shape)
            response.raw_output_contents.append(output_bytes(array, spec))
        return response

    @rpc
    def RepositoryIndex(self, request):
        models = control.index(self.app, ready_only=request.ready)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[index(**model) for model in models])

    @rpc
    def RepositoryModelLoad(self, request):
        refuse_parameters(request, accepted=("rollout",))
        if "rollout" in request.parameters:  # A rollout change, not a load: its JSON object.
            change_rollout(self.app, request.model_name, request.parameters["rollout"])
        else:
            controlled(control.load, self.app, request.model_name)
        return pb.RepositoryModelLoadResponse()

    @rpc
    def RepositoryModelUnload(self, request):
        # tritonclient always sends unload_dependents; no model here has dependents.
        refuse_parameters(request, accepted=("unload_dependents",))
        controlled(control.unload, self.app, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @rpc
    def ModelStatistics(self, request):
        stats = model_stats(request.name or None, request.version or None)
        return json_format.ParseDict(
            stats, pb.ModelStatisticsResponse(), ignore_unknown_fields=True
        )


def change_rollout(app: Flask, name: str, parameter) -> None:
    try:
        entry = json.loads(parameter.string_param)
    except ValueError:
        raise CallError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "The rollout parameter must be a JSON object in string_param.",
        ) from None
    try:
        rollouts.change(app, name, entry)
    except rollouts.RolloutError as error:
        raise CallError(STATUS_CODES[error.status], error.message) from None


def refuse_parameters(request, accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(request.parameters) - set(accepted))
    if unknown:
        raise CallError(
            grpc.StatusCode.INVALID_ARGUMENT,
            control.UNSUPPORTED_PARAMETERS.format(names=unknown),
        )


def controlled(action, app: Flask, name: str) -> None:
    """Run a load or unload; a refusal answers its status and why."""
    try:
        action(app, name)
    except control.ControlError as error:
        raise CallError(STATUS_CODES[error.status], error.message) from None


def request_tensors(request) -> tuple[list[dict], bytes | None]:
    """The request's inputs as /v2's JSON tensors, and their raw bytes if sent raw."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            400, f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; give one each."
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        converted = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    400, f"Input {tensor.name!r} has contents and raw_input_contents; give one."
                )
            converted["parameters"] = {"binary_data_size": len(raw[index])}
        else:
            field = CONTENTS_FIELDS.get(tensor.datatype)
            converted["data"] = list(getattr(tensor.contents, field)) if field else []
        tensors.append(converted)
    return tensors, b"".join(raw) if raw else None
