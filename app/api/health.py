"""Liveness and readiness probes."""

from flask import current_app
from flask.views import MethodView

from app.api.parser import Blueprint
from app.api.schemas import LiveSchema, ReadySchema
from app.core.serving import serving_state
from app.ops.json_provider import dumps

blp = Blueprint("health", __name__, description="Probes for orchestrators.")

# The liveness answer never changes: made once, not dumped through its schema on every probe.
ALIVE = dumps(LiveSchema().dump({"status": "alive"}))


# "/" is KServe's v1 protocol liveness path, which its SDK's default client asks.
@blp.route("/", endpoint="root", strict_slashes=False)
@blp.route("/health/live")
class Live(MethodView):
    @blp.response(200, LiveSchema)
    def get(self):
        """200 while the process serves requests"""
        return current_app.response_class(ALIVE, mimetype=current_app.json.mimetype)


@blp.route("/health/ready")
class Ready(MethodView):
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, schema=ReadySchema, description="Model not loaded, or draining.")
    def get(self):
        """200 once this worker's models are loaded and warmed up; 503 before and while draining"""
        state = serving_state(current_app)
        runner = next(iter(state.runners.values()), None) if not state.several else None
        model = {"name": runner.name, "version": str(runner.number)} if runner else None
        if state.ready:
            return {"status": "ready", "model": model}
        return {"status": "draining" if state.draining else "loading", "model": model}, 503
