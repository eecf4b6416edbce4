"""Marshmallow schemas: what each endpoint accepts and returns."""

import numpy as np
from flask_smorest import abort
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validates

from app.core import control
from app.core.inference import InvalidInput, instances_to_inputs
from app.core.serving import current_runner
from app.runtime.artifact import FLOAT32_MAX

FLOAT32 = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
NUMBER = {**FLOAT32, "example": 10.0}
ROW = {"type": "array", "items": FLOAT32, "minItems": 1, "maxItems": 1, "example": [10.0]}
# Models with more features: a nested list of the input's shape, or values by input name.
TENSOR = {"type": "array", "items": {}, "description": "The input's feature-shaped value."}
BY_INPUT = {"type": "object", "description": "Each input's value, by input name."}


class Instances(fields.List):
    """A batch in TensorFlow Serving's row format, loaded as float32 arrays by input name.

    The inference core's converter checks every instance against the served
    signature in one pass, so a 1,000-instance batch costs one loop and one
    array conversion rather than 1,000 marshmallow field calls. Booleans and
    numeric strings are refused: JSON has real numbers for that.
    """

    def __init__(self, **kwargs):
        inner = fields.Raw(metadata={"anyOf": [NUMBER, ROW, TENSOR, BY_INPUT]})
        super().__init__(inner, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> dict[str, np.ndarray]:
        try:
            return instances_to_inputs(value, current_runner().compiled)
        except InvalidInput as error:
            if error.status == 413:
                abort(413, message=error.message)
            raise ValidationError(error.errors or error.message) from None


class Predictions(fields.List):
    """Predictions as a JSON array: float32 arrays (or rows of them by output), left to orjson."""

    def __init__(self, **kwargs):
        super().__init__(fields.Raw(), **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return value


class ModelRefSchema(Schema):
    name = fields.String(metadata={"description": "Model name.", "example": "linear"})
    version = fields.String(metadata={"description": "Model version.", "example": "1"})


class ModelRef(fields.Nested):
    """The answering model's name and version, already a dict in the documented shape."""

    def __init__(self, **kwargs):
        super().__init__(ModelRefSchema, **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return value


class PredictRequestSchema(Schema):
    instances = Instances(
        required=True,
        metadata={
            "description": (
                "The inputs, one prediction each, in TensorFlow Serving's row format: "
                "between 1 and MAX_BATCH_SIZE (1000 unless the server sets it "
                "otherwise) instances of finite numbers in float32 range. For a model "
                "with one number in (the default), each instance is a number or a "
                "one-element list. Otherwise it is the input's feature-shaped value "
                "(nested lists, see `GET /model`'s signature), or, for several inputs, "
                "an object of those keyed by input name."
            ),
            "example": [10.0, -1.5],
            "minItems": 1,
            "maxItems": 1000,
        },
    )


class PredictResponseSchema(Schema):
    predictions = Predictions(
        metadata={
            "description": (
                "One prediction per instance, in the same order: a number for an output "
                "of one number, else the output's feature-shaped value; an object keyed "
                "by output name when the model has several outputs."
            ),
            "example": [31.0, -3.5],
        }
    )
    model = ModelRef(metadata={"description": "The model version that answered."})


class LiveSchema(Schema):
    status = fields.String(metadata={"description": "Always `alive`.", "example": "alive"})


class ReadySchema(Schema):
    status = fields.String(
        metadata={"description": "`ready`, or why not: `loading`, `draining`.", "example": "ready"}
    )
    model = fields.Nested(
        ModelRefSchema,
        allow_none=True,
        metadata={"description": "The model this worker serves, or null before it loads."},
    )


class ModelStateSchema(Schema):
    name = fields.String(metadata={"description": "Model name.", "example": "linear"})
    version = fields.String(
        metadata={"description": "Served version; absent when unavailable.", "example": "1"}
    )
    state = fields.String(
        metadata={
            "description": "`READY`, or `UNAVAILABLE` when none of its versions loads.",
            "example": "READY",
        }
    )
    reason = fields.String(
        metadata={"description": "Why it is unavailable; absent when ready.", "example": ""}
    )


class JsonBoolean(fields.Boolean):
    """JSON's true or false only: marshmallow's Boolean also takes 1, "yes" and "on"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class RepositoryIndexRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    repository_name = fields.String(
        metadata={"description": "Ignored: this server has one repository.", "example": ""}
    )
    ready = JsonBoolean(
        load_default=False,
        metadata={"description": "Only the models ready for inference.", "example": False},
    )


class RepositoryLoadRequestSchema(Schema):
    # The parameters a request may carry (and that change nothing here): none for a load.
    accepted: tuple[str, ...] = ()

    parameters = fields.Dict(
        metadata={
            "description": "Triton's parameters (a config override, model files) are refused: a "
            "load reads the model's directory as it is.",
            "example": {},
        }
    )

    @validates("parameters")
    def known_parameters(self, value, **kwargs):
        unknown = sorted(set(value) - set(self.accepted))
        if unknown:
            raise ValidationError(control.UNSUPPORTED_PARAMETERS.format(names=unknown))


class RepositoryUnloadRequestSchema(RepositoryLoadRequestSchema):
    # tritonclient always sends it; no model here has dependents.
    accepted = ("unload_dependents",)


class RepositoryLoadSchema(Schema):
    name = fields.String(
        required=True, metadata={"description": "The model loaded.", "example": "linear"}
    )
    load = fields.Boolean(
        required=True,
        metadata={
            "description": "True: every worker serves it (KServe's answer).",
            "example": True,
        },
    )


class ShadowSchema(Schema):
    version = fields.Raw(
        required=True,
        metadata={"description": "The shadow version: a number or a label.", "example": 3},
    )
    sample = fields.Float(
        metadata={"description": "The share of inferences copied, in (0, 1].", "example": 1.0}
    )


class RolloutSchema(Schema):
    labels = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(strict=True),
        metadata={
            "description": "Names of served versions (never numbers).",
            "example": {"stable": 1, "canary": 2},
        },
    )
    weights = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(strict=True),
        metadata={
            "description": "Percent of the requests naming no version, by label or version "
            "number; they add up to 100.",
            "example": {"stable": 90, "canary": 10},
        },
    )
    shadow = fields.Nested(
        ShadowSchema,
        metadata={"description": "A version that gets a copy of a sample of inferences."},
    )


class RolloutStateSchema(RolloutSchema):
    name = fields.String(required=True, metadata={"description": "Model name.", "example": "lin"})
    versions = fields.List(
        fields.String(), metadata={"description": "The versions served.", "example": ["2", "1"]}
    )


class RepositoryUnloadSchema(Schema):
    name = fields.String(
        required=True, metadata={"description": "The model unloaded.", "example": "linear"}
    )
    unload = fields.Boolean(
        required=True,
        metadata={"description": "True: no worker serves it (KServe's answer).", "example": True},
    )


class ModelInfoSchema(Schema):
    name = fields.String(metadata={"description": "Model name.", "example": "linear"})
    version = fields.String(metadata={"description": "Served version.", "example": "1"})
    path = fields.String(
        metadata={"description": "Version directory on the server.", "example": "models/linear/1"}
    )
    runtime = fields.String(
        metadata={"description": "Inference runtime: `litert`.", "example": "litert"}
    )
    artifact = fields.Dict(
        metadata={
            "description": (
                "The compiled artifact served: its file, SHA-256, and `source`: `compiled` "
                "(written by training or `python -m training compile`) or `converted at load`."
            ),
            "example": {"file": "model.tflite", "sha256": "9f2c…", "source": "compiled"},
        }
    )
    signature = fields.Dict(
        metadata={
            "description": "Input and output tensors: name, shape (-1 for the batch), dtype.",
            "example": {
                "inputs": [{"name": "x", "shape": [-1, 1], "dtype": "float32"}],
                "outputs": [{"name": "y", "shape": [-1, 1], "dtype": "float32"}],
            },
        }
    )
    load_seconds = fields.Float(
        metadata={"description": "Time the server took to read and verify it.", "example": 0.05}
    )
    monitoring = fields.Dict(
        allow_none=True,
        metadata={
            "description": (
                "The input features compared with the training data's profile (out-of-range "
                "counts, histograms), or a note saying the version has no profile."
            ),
            "example": {"inputs": ["x"]},
        },
    )
    registry = fields.Dict(
        allow_none=True,
        metadata={
            "description": (
                "For a model from MLflow (MODEL_URI): the registered model, version, alias, "
                "run id, source, and `served_from`: `registry`, or the cache when the "
                "registry was unreachable at start. Null for the local store."
            ),
            "example": {
                "registered_model": "linear",
                "version": 3,
                "alias": "production",
                "run_id": "c7f8e463e1124d628eb29eb509e2e99f",
                "served_from": "registry",
            },
        },
    )
    store = fields.Dict(
        allow_none=True,
        metadata={
            "description": (
                "For a model from an object store (an s3:// MODEL_DIR): its URI and "
                "`served_from`: `store`, or the cache when the store was unreachable at "
                "start. Null otherwise."
            ),
            "example": {"uri": "s3://models/linear", "served_from": "store"},
        },
    )
    skipped_versions = fields.List(
        fields.String(),
        metadata={
            "description": "Newer versions that failed to load, with the reason.",
            "example": [],
        },
    )
    metadata = fields.Dict(
        metadata={
            "description": "The version's metadata.json, as written by training.",
            "example": {"created": "2026-11-26T05:40:00+00:00", "training": {"epochs": 500}},
        }
    )


class ProtocolErrorSchema(Schema):
    error = fields.String(
        metadata={
            "description": "What went wrong (the Open Inference and TensorFlow Serving protocols).",
            "example": "Model 'nope' is not served; this server serves 'linear'.",
        }
    )


class OipServerMetadataSchema(Schema):
    name = fields.String(metadata={"description": "Server name.", "example": "model-server"})
    version = fields.String(metadata={"description": "Server version.", "example": "1.0.0"})
    extensions = fields.List(
        fields.String(),
        metadata={
            "description": "Protocol extensions supported.",
            "example": ["binary_tensor_data", "model_repository", "statistics"],
        },
    )


class StatisticDurationSchema(Schema):
    count = fields.Integer(metadata={"description": "How many.", "example": 120})
    ns = fields.Integer(
        metadata={"description": "Their total time, in nanoseconds.", "example": 61_250_000}
    )


class InferStatisticsSchema(Schema):
    success = fields.Nested(
        StatisticDurationSchema, metadata={"description": "Requests answered, whole."}
    )
    fail = fields.Nested(
        StatisticDurationSchema,
        metadata={"description": "Requests that reached the version and failed."},
    )
    queue = fields.Nested(
        StatisticDurationSchema, metadata={"description": "Waiting for the worker's turn."}
    )
    compute_input = fields.Nested(
        StatisticDurationSchema, metadata={"description": "Reading and checking the inputs."}
    )
    compute_infer = fields.Nested(StatisticDurationSchema, metadata={"description": "The runtime."})
    compute_output = fields.Nested(
        StatisticDurationSchema, metadata={"description": "Writing the answer."}
    )
    cache_hit = fields.Nested(StatisticDurationSchema, metadata={"description": "Always 0."})
    cache_miss = fields.Nested(StatisticDurationSchema, metadata={"description": "Always 0."})


class ModelStatisticsSchema(Schema):
    name = fields.String(metadata={"description": "Model name.", "example": "linear"})
    version = fields.String(metadata={"description": "Version number.", "example": "1"})
    last_inference = fields.Integer(
        metadata={
            "description": "When it last answered, in milliseconds since the epoch.",
            "example": 1796644393972,
        }
    )
    inference_count = fields.Integer(
        metadata={"description": "Instances inferred.", "example": 240}
    )
    execution_count = fields.Integer(metadata={"description": "Inference calls.", "example": 120})
    inference_stats = fields.Nested(
        InferStatisticsSchema, metadata={"description": "Counts and times by phase."}
    )
    batch_stats = fields.List(
        fields.Dict(), metadata={"description": "Always empty.", "example": []}
    )
    memory_usage = fields.List(
        fields.Dict(), metadata={"description": "Always empty.", "example": []}
    )


class OipModelStatsSchema(Schema):
    model_stats = fields.List(
        fields.Nested(ModelStatisticsSchema),
        metadata={
            "description": "Each version's statistics, over every worker.",
            "example": [
                {
                    "name": "linear",
                    "version": "1",
                    "last_inference": 1796644393972,
                    "inference_count": 240,
                    "execution_count": 120,
                    "inference_stats": {
                        "success": {"count": 120, "ns": 61_250_000},
                        "fail": {"count": 0, "ns": 0},
                        "queue": {"count": 120, "ns": 2_400_000},
                        "compute_input": {"count": 120, "ns": 21_000_000},
                        "compute_infer": {"count": 120, "ns": 3_600_000},
                        "compute_output": {"count": 120, "ns": 18_000_000},
                        "cache_hit": {"count": 0, "ns": 0},
                        "cache_miss": {"count": 0, "ns": 0},
                    },
                    "batch_stats": [],
                    "memory_usage": [],
                }
            ],
        },
    )


class OipLiveSchema(Schema):
    live = fields.Boolean(metadata={"description": "Always true.", "example": True})


class OipReadySchema(Schema):
    ready = fields.Boolean(
        metadata={"description": "Whether this worker serves a model.", "example": True}
    )


class OipModelReadySchema(Schema):
    name = fields.String(metadata={"description": "Model name.", "example": "linear"})
    ready = fields.Boolean(metadata={"description": "Always true when served.", "example": True})


class OipTensorMetadataSchema(Schema):
    name = fields.String(metadata={"description": "Tensor name.", "example": "x"})
    datatype = fields.String(
        metadata={"description": "The tensor's datatype, as the model has it.", "example": "FP32"}
    )
    shape = fields.List(
        fields.Integer(),
        metadata={"description": "Shape, -1 for the batch.", "example": [-1, 1]},
    )


class OipModelMetadataSchema(Schema):
    name = fields.String(metadata={"description": "Model name.", "example": "linear"})
    versions = fields.List(
        fields.String(), metadata={"description": "The served version.", "example": ["1"]}
    )
    platform = fields.String(
        metadata={
            "description": "`<project>_<format>`: LiteRT running a TensorFlow Lite flatbuffer.",
            "example": "litert_tflite",
        }
    )
    inputs = fields.List(
        fields.Nested(OipTensorMetadataSchema),
        metadata={"description": "The model's inputs.", "example": [{"name": "x"}]},
    )
    outputs = fields.List(
        fields.Nested(OipTensorMetadataSchema),
        metadata={"description": "The model's outputs.", "example": [{"name": "y"}]},
    )


class OipInputTensorSchema(Schema):
    class Meta:
        # Clients add fields of their own (KServe's sends model_name): ignore them.
        unknown = EXCLUDE

    name = fields.String(
        required=True, metadata={"description": "The input's name.", "example": "x"}
    )
    shape = fields.List(
        fields.Integer(strict=True),
        required=True,
        metadata={"description": "Shape, batch first.", "example": [2, 1]},
    )
    datatype = fields.String(
        required=True,
        metadata={
            "description": "The input's datatype, or one whose every value it holds exactly "
            "(`INT8` or `FP16` for an `FP32` input, `INT32` for an `INT64` one).",
            "example": "FP32",
        },
    )
    parameters = fields.Dict(
        metadata={
            "description": "`binary_data_size`: the input's bytes after the JSON header "
            "(binary tensor data extension), in place of `data`. Others are ignored.",
            "example": {},
        }
    )
    data = fields.Raw(
        metadata={
            "description": "The values, flat in row-major order or nested exactly as the shape.",
            "example": [10.0, -1.5],
        },
    )


class OipRequestedOutputSchema(Schema):
    class Meta:
        # Clients add fields of their own (KServe's sends model_name): ignore them.
        unknown = EXCLUDE

    name = fields.String(
        required=True, metadata={"description": "An output to return.", "example": "y"}
    )
    parameters = fields.Dict(
        metadata={
            "description": "`binary_data`: return this output as raw bytes after the JSON "
            "header. Others are ignored.",
            "example": {},
        }
    )


class OipInferRequestSchema(Schema):
    class Meta:
        # Clients add fields of their own (KServe's sends model_name): ignore them.
        unknown = EXCLUDE

    id = fields.String(metadata={"description": "Echoed in the response.", "example": "42"})
    parameters = fields.Dict(
        metadata={
            "description": "`binary_data_output`: return every output as raw bytes after "
            "the JSON header. Others are ignored.",
            "example": {},
        }
    )
    inputs = fields.List(
        fields.Nested(OipInputTensorSchema),
        required=True,
        metadata={"description": "One tensor per model input.", "example": [{"name": "x"}]},
    )
    outputs = fields.List(
        fields.Nested(OipRequestedOutputSchema),
        metadata={"description": "Outputs to return (default: all).", "example": [{"name": "y"}]},
    )


class OipOutputTensorSchema(Schema):
    name = fields.String(metadata={"description": "The output's name.", "example": "y"})
    datatype = fields.String(
        metadata={"description": "The tensor's datatype, as the model has it.", "example": "FP32"}
    )
    shape = fields.List(
        fields.Integer(), metadata={"description": "Shape, batch first.", "example": [2, 1]}
    )
    data = fields.Raw(
        metadata={"description": "The values, flat in row-major order.", "example": [31.0, -3.5]}
    )
    parameters = fields.Dict(
        metadata={
            "description": "`binary_data_size`, in place of `data`, for a binary output.",
            "example": {},
        }
    )


class OipInferResponseSchema(Schema):
    model_name = fields.String(metadata={"description": "Model name.", "example": "linear"})
    model_version = fields.String(metadata={"description": "Served version.", "example": "1"})
    id = fields.String(
        metadata={"description": "The request's id, if it had one.", "example": "42"}
    )
    outputs = fields.List(
        fields.Nested(OipOutputTensorSchema),
        metadata={"description": "The output tensors.", "example": [{"name": "y"}]},
    )


class TfsStatusSchema(Schema):
    name = fields.String(
        metadata={"description": "The model's name (KServe's v1 protocol).", "example": "linear"}
    )
    ready = fields.Boolean(
        metadata={
            "description": "Whether this worker serves it: false while draining "
            "(KServe's v1 protocol).",
            "example": True,
        }
    )
    model_version_status = fields.List(
        fields.Dict(),
        metadata={
            "description": "The served version's state, as TensorFlow Serving reports it.",
            "example": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ],
        },
    )


class TfsMetadataSchema(Schema):
    model_spec = fields.Dict(
        metadata={
            "description": "Name, signature and version.",
            "example": {"name": "linear", "signature_name": "", "version": "1"},
        }
    )
    metadata = fields.Dict(
        metadata={
            "description": "The `serving_default` signature_def: inputs, outputs, method.",
            "example": {"signature_def": {"signature_def": {"serving_default": {}}}},
        }
    )


class TfsPredictRequestSchema(Schema):
    class Meta:
        # TensorFlow Serving ignores keys it does not know.
        unknown = EXCLUDE

    signature_name = fields.String(
        metadata={
            "description": "Only `serving_default` (empty means the default).",
            "example": "serving_default",
        }
    )
    instances = fields.Raw(
        metadata={
            "description": "Row format: one value per instance, or an object by input name.",
            "example": [1.0, 2.0, 5.0],
        }
    )
    inputs = fields.Raw(
        metadata={
            "description": "Columnar format: the batch tensor, or an object of them by name.",
            "example": [1.0, 2.0, 5.0],
        }
    )


class TfsPredictResponseSchema(Schema):
    predictions = fields.Raw(
        metadata={"description": "For `instances`: one per instance.", "example": [4.0, 7.0]}
    )
    outputs = fields.Raw(
        metadata={"description": "For `inputs`: the batch output(s).", "example": [4.0, 7.0]}
    )
