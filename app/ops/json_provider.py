"""Flask's JSON through orjson: about 10 times faster, and numpy-aware."""

import math

import numpy as np
import orjson
from flask.json.provider import JSONProvider

# Numpy arrays serialise natively (float32 in its shortest form: 31.004868, not
# 31.004867553710938); integer keys, as in per-element errors, become strings.
OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(JSONProvider):
    """The app's JSON provider, used by ``jsonify`` and flask-smorest alike."""

    mimetype = "application/json"

    def dumps(self, obj, **kwargs) -> str:
        return dumps(obj).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumps(obj), mimetype=self.mimetype)


def dumps(obj) -> bytes:
    """JSON bytes; what orjson refuses (a lone surrogate, a 100-bit integer) is made a string."""
    try:
        return orjson.dumps(obj, option=OPTIONS)
    except orjson.JSONEncodeError:
        return orjson.dumps(json_safe(obj), option=OPTIONS)


def json_safe(value):
    """``value`` with everything strict JSON writers refuse made into strings.

    Integers beyond 64 bits, non-finite floats and strings with lone
    surrogates come from files and clients; none may break a response.
    """
    if isinstance(value, dict):
        return {json_safe(str(key)): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return str(value)
