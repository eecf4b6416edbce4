"""Flask's JSON through orjson: about 10 times faster, and numpy-aware."""

import orjson
from flask.json.provider import JSONProvider

# Numpy arrays serialise natively (float32 in its shortest form: 31.004868, not
# 31.004867553710938); integer keys, as in per-element errors, become strings.
OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(JSONProvider):
    """The app's JSON provider, used by ``jsonify`` and flask-smorest alike."""

    mimetype = "application/json"

    def dumps(self, obj, **kwargs) -> str:
        return orjson.dumps(obj, option=OPTIONS).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(orjson.dumps(obj, option=OPTIONS), mimetype=self.mimetype)
