"""The Open Inference Protocol's server and model metadata, and its model lookup.

Both of its adapters answer from here: REST ``/v2`` (app/api/open_inference.py)
and gRPC (app/grpc/servicer.py).
"""

from flask import current_app

from app.core.serving import (
    MODEL_MISSING,
    VERSION_MISSING,
    served_runner,
    serving_state,
    versions_of,
)
from app.ops.statistics import model_statistics
from app.runtime.datatypes import DATATYPES

SERVER_NAME = "model-server"
SERVER_VERSION = "1.0.0"
# The protocol's <project>_<format> for each runtime's artifact: LiteRT running a
# TensorFlow Lite flatbuffer, TensorFlow a SavedModel (Triton's own name for it).
PLATFORMS = {"litert": "litert_tflite", "tensorflow": "tensorflow_savedmodel"}
# Raw tensors after the JSON, both ways; the model repository: index, load, unload; and
# per-version statistics.
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]


def served_model(name: str, version: str | None = None, route: bool = False):
    return served_runner(name, version, MODEL_MISSING, VERSION_MISSING, route)


def tensor_metadata(spec) -> dict:
    return {"name": spec.name, "datatype": DATATYPES[spec.dtype], "shape": list(spec.shape)}


def model_metadata(runner) -> dict:
    """The protocol's model metadata, over REST and gRPC alike."""
    return {
        "name": runner.name,
        "versions": [str(served.number) for served in versions_of(runner)],
        "platform": PLATFORMS[runner.runtime],
        "inputs": [tensor_metadata(spec) for spec in runner.compiled.inputs],
        "outputs": [tensor_metadata(spec) for spec in runner.compiled.outputs],
    }


def model_stats(name: str | None = None, version: str | None = None) -> dict:
    """The statistics extension's answer, over REST and gRPC alike: every version served,
    or model ``name``'s, or its ``version`` (a number or a label)."""
    if name is None:
        runners = serving_state(current_app).runners.values()
        versions = [(served.name, served.number) for each in runners for served in each.served]
    elif version is None:
        versions = [(served.name, served.number) for served in versions_of(served_model(name))]
    else:
        runner = served_model(name, version)
        versions = [(runner.name, runner.number)]
    return {"model_stats": model_statistics([(n, str(v)) for n, v in sorted(versions)])}
