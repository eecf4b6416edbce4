"""GET /model: the served model version and its metadata."""

from flask import current_app
from flask.views import MethodView

from app.api.parser import Blueprint
from app.api.schemas import ModelInfoSchema
from app.core.serving import current_runner, serving_state

blp = Blueprint("model", __name__, description="The served model.")


@blp.route("/model")
class ModelInfo(MethodView):
    @blp.response(200, ModelInfoSchema)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self):
        """The served model's name, version, runtime and training metadata"""
        runner = current_runner()
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
            "skipped_versions": serving_state(current_app).skipped,
            "registry": runner.bundle.registry,
            "store": runner.bundle.store,
            "monitoring": runner.monitor.describe() if runner.monitor else None,
            "metadata": runner.metadata,
        }
