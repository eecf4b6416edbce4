"""POST /predict: online inference."""

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import abort

from app.api.parser import Blueprint
from app.api.schemas import PredictRequestSchema, PredictResponseSchema
from app.core.auth import bearer_matches
from app.core.inference import InvalidInput, infer, rows_of
from app.core.serving import current_runner

blp = Blueprint("predict", __name__, description="Online inference with the served model.")

# Documented on the operation: the token is needed only when API_TOKEN is set.
OPTIONAL_BEARER = [{}, {"bearerAuth": []}]


def require_token():
    """Answer 401 unless an inference request (a POST) carries API_TOKEN as a bearer token.

    Metadata, health and OPTIONS stay open, for probes and clients that look first.
    """
    if request.method != "POST":
        return
    # Header values arrive as latin-1 text: back to the client's bytes, so a UTF-8 token matches.
    authorization = request.headers.get("Authorization", "")
    if not bearer_matches(authorization, current_app.config["API_TOKEN"], "latin-1"):
        abort(
            401,
            message="A valid bearer token is required: Authorization: Bearer <API_TOKEN>.",
            headers={"WWW-Authenticate": 'Bearer realm="model-server"'},
        )


@blp.route("/predict")
@blp.route("/predict/<segment:name>", endpoint="predict_named")
@blp.route("/predict/<segment:name>/versions/<segment:version>", endpoint="predict_version")
class Predict(MethodView):
    @blp.doc(security=OPTIONAL_BEARER)
    @blp.arguments(PredictRequestSchema())
    @blp.response(200, PredictResponseSchema)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(401, response="UNAUTHORIZED")
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, body, name=None, version=None):
        """Predict one output per instance, in one vectorised call

        `/predict` uses the one model the server serves; `/predict/{name}` names it
        (needed when a model repository serves several), and
        `/predict/{name}/versions/{version}` one of its versions, by number or label.
        Without a version, a model with weights answers from the version they pick
        (sticky by an `X-Routing-Key` header); the answer names the version.
        """
        runner = current_runner()
        try:
            outputs = infer(runner, body["instances"])
        except InvalidInput as error:
            abort(error.status, message=error.message, errors={"instances": error.errors})
        return {
            "predictions": rows_of(outputs, runner.compiled.outputs),
            "model": {"name": runner.name, "version": str(runner.number)},
        }
