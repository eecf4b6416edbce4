"""/v1/models: TensorFlow Serving's REST API (model status, metadata, predict).

Requests and answers as TensorFlow Serving writes them: ``instances`` (row
format) answered with ``predictions``, ``inputs`` (columnar) with ``outputs``,
and errors as ``{"error": "..."}``.
"""

from flask import current_app
from flask.views import MethodView
from flask_smorest import abort

from app.api.parser import ProtocolBlueprint
from app.api.schemas import (
    ProtocolErrorSchema,
    TfsMetadataSchema,
    TfsPredictRequestSchema,
    TfsPredictResponseSchema,
    TfsStatusSchema,
)
from app.core.inference import (
    InvalidInput,
    columns_to_inputs,
    infer,
    instances_to_inputs,
    json_ready,
    rows_of,
)
from app.core.serving import served_runner, serving_state, versions_of
from app.ops.error_shape import cut
from app.runtime.datatypes import TF_DTYPES

blp = ProtocolBlueprint(
    "tf_serving",
    __name__,
    url_prefix="/v1/models",
    description="TensorFlow Serving's REST API: status, metadata, predict.",
)

SIGNATURE = "serving_default"


def served_model(name: str, version: str | None = None, route: bool = False):
    return served_runner(
        name,
        version,
        "Servable not found for request: Latest({name}); this server serves {served}",
        "Servable not found for request: Specific({name}, {version}); served: {served}",
        route,
    )


def tensor_info(spec, index: int, role: str) -> dict:
    return {
        "dtype": TF_DTYPES[spec.dtype],
        "tensor_shape": {
            "dim": [{"size": str(size), "name": ""} for size in spec.shape],
            "unknown_rank": False,
        },
        "name": f"{role}_{index}:0",
    }


@blp.route("/<segment:name>", endpoint="model_status")
@blp.route("/<segment:name>/versions/<segment:version>", endpoint="model_version_status")
@blp.route("/<segment:name>/labels/<segment:version>", endpoint="model_label_status")
class ModelStatus(MethodView):
    @blp.response(200, TfsStatusSchema)
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Model or version not served.")
    def get(self, name, version=None):
        """Model status: each served version (or the one named), AVAILABLE"""
        runner = served_model(name, version)
        status = {"error_code": "OK", "error_message": ""}
        # "name" and "ready" are KServe's v1 protocol, which its SDK reads from this path.
        return {
            "name": runner.name,
            "ready": serving_state(current_app).serves(runner.name),
            "model_version_status": [
                {"version": str(served.number), "state": "AVAILABLE", "status": status}
                for served in ([runner] if version else versions_of(runner))
            ],
        }


@blp.route("/<segment:name>/metadata", endpoint="model_metadata")
@blp.route("/<segment:name>/versions/<segment:version>/metadata", endpoint="model_version_metadata")
@blp.route("/<segment:name>/labels/<segment:version>/metadata", endpoint="model_label_metadata")
class ModelMetadata(MethodView):
    @blp.response(200, TfsMetadataSchema)
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Model or version not served.")
    def get(self, name, version=None):
        """Model metadata: the serving_default signature's inputs and outputs"""
        runner = served_model(name, version)
        compiled = runner.compiled
        signature = {
            "inputs": {s.name: tensor_info(s, i, "input") for i, s in enumerate(compiled.inputs)},
            "outputs": {
                s.name: tensor_info(s, i, "output") for i, s in enumerate(compiled.outputs)
            },
            "method_name": "tensorflow/serving/predict",
        }
        return {
            "model_spec": {
                "name": runner.name,
                "signature_name": "",
                "version": str(runner.number),
            },
            "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}},
        }


@blp.route("/<segment:name>:predict", endpoint="predict")
@blp.route("/<segment:name>/versions/<segment:version>:predict", endpoint="version_predict")
@blp.route("/<segment:name>/labels/<segment:version>:predict", endpoint="label_predict")
class Predict(MethodView):
    @blp.arguments(TfsPredictRequestSchema(), error_status_code=400)
    @blp.response(200, TfsPredictResponseSchema)
    @blp.alt_response(400, schema=ProtocolErrorSchema, description="Input the model cannot take.")
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Model or version not served.")
    @blp.alt_response(413, schema=ProtocolErrorSchema, description="Body or batch too large.")
    def post(self, body, name, version=None):
        """Predict from `instances` (row format) or `inputs` (columnar), as TF Serving does

        Without a version or label, a model with weights answers from the version they pick.
        """
        runner = served_model(name, version, route=True)
        compiled = runner.compiled
        # TensorFlow Serving reads an empty name as the default, as its metadata reports it.
        signature = body.get("signature_name") or SIGNATURE
        try:
            if signature != SIGNATURE:
                raise InvalidInput(
                    400, f'Serving signature name: "{cut(signature)}" not found in signature def'
                )
            if ("instances" in body) == ("inputs" in body):
                raise InvalidInput(400, 'Give exactly one of "instances" and "inputs".')
            if "instances" in body:
                outputs = infer(runner, instances_to_inputs(body["instances"], compiled))
                # Each output exactly as TensorFlow Serving writes it: a (None, 1)
                # output gives [[v], ...], never bare numbers.
                return {"predictions": rows_of(outputs, compiled.outputs, squeeze=False)}
            outputs = infer(runner, columns_to_inputs(body["inputs"], compiled))
        except InvalidInput as error:
            abort(error.protocol_status, message=error.message, errors=error.errors)
        if len(compiled.outputs) == 1:
            (spec,) = compiled.outputs
            return {"outputs": json_ready(outputs[spec.name], spec)}
        return {
            "outputs": {
                spec.name: json_ready(outputs[spec.name], spec) for spec in compiled.outputs
            }
        }


@blp.route("/<segment:name>:<any(classify, regress):method>", endpoint="classify_regress")
@blp.route(
    "/<segment:name>/versions/<segment:version>:<any(classify, regress):method>",
    endpoint="version_classify_regress",
)
class ClassifyRegress(MethodView):
    @blp.response(400, ProtocolErrorSchema)
    @blp.alt_response(404, schema=ProtocolErrorSchema, description="Model or version not served.")
    def post(self, name, method, version=None):
        """Classify and regress: 400, as TF Serving answers a model with only a predict signature"""
        served_model(name, version)
        kind = "classification" if method == "classify" else "regression"
        abort(
            400,
            message=f"Expected {kind} signature method_name to be tensorflow/serving/{method}. "
            "Was: tensorflow/serving/predict",
        )
