"""GET /model: the served model version and its metadata; with a repository, the listing."""

from flask import current_app
from flask.views import MethodView

from app.api.parser import Blueprint
from app.api.schemas import ModelInfoSchema
from app.core.serving import current_runner, model_states, serving_state

blp = Blueprint("model", __name__, description="The served models.")


# With several models, /model answers their listing: either shape is documented.
LISTING = {
    "type": "object",
    "required": ["models"],
    "additionalProperties": False,
    "properties": {
        "models": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/ModelState"},
            "description": "Every model of the repository, by name.",
        }
    },
}
ONE_OR_LISTING = {"anyOf": [{"$ref": "#/components/schemas/ModelInfo"}, LISTING]}


@blp.route("/model")
class ModelInfo(MethodView):
    @blp.response(200, ModelInfoSchema)
    @blp.doc(responses={"200": {"content": {"application/json": {"schema": ONE_OR_LISTING}}}})
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self):
        """The served model's name, version, runtime and training metadata; the listing of
        every model when a repository serves several (or none)"""
        state = serving_state(current_app)
        if state.several or not state.names:
            # A Response passes flask-smorest's serializer by; the listing is its own shape.
            return current_app.json.response({"models": model_states(state)})
        return model_info(current_runner())


@blp.route("/model/<segment:name>", endpoint="named")
class NamedModelInfo(MethodView):
    @blp.response(200, ModelInfoSchema)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self, name):
        """One model's name, version, runtime and training metadata"""
        return model_info(current_runner())


def model_info(runner) -> dict:
    return {
        "name": runner.name,
        "version": str(runner.number),
        "path": str(runner.version.path),
        "runtime": runner.runtime,
        "artifact": {
            "file": runner.compiled.file,
            "sha256": runner.compiled.sha256,
            "source": runner.bundle.artifact_source,
        },
        "signature": runner.compiled.signature(),
        "load_seconds": round(runner.load_seconds, 3),
        "skipped_versions": runner.bundle.skipped,
        "registry": runner.bundle.registry,
        "store": runner.bundle.store,
        "monitoring": runner.monitor.describe() if runner.monitor else None,
        "metadata": runner.metadata,
    }
