"""Strict JSON body parsing for flask-smorest blueprints."""

import gc
import json
import zlib
from contextlib import contextmanager

import flask_smorest
import marshmallow as ma
import orjson
from flask import Request, current_app, g
from flask_smorest import abort
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from app.core.serving import serving_state
from app.ops.error_shape import cut


class JsonBodyParser(FlaskParser):
    """Parse JSON bodies, answering every way a body can be wrong with a 4xx.

    webargs alone treats a non-JSON Content-Type as a missing body (a
    confusing 422) and lets a deeply nested document raise RecursionError
    (a 500); both are answered here before the schema sees the data.
    """

    def parse(self, argmap, req=None, *, location=None, **kwargs):
        """Load a JSON body straight into a schema instance, or answer 422.

        The same result as webargs' generic ``parse`` for this one case,
        without its per-request layers (schema resolution, location lookup,
        validator hooks): about 20 µs a request on /predict.
        """
        if location != "json" or not isinstance(argmap, ma.Schema) or kwargs.get("validate"):
            return super().parse(argmap, req, location=location, **kwargs)
        if req is None:  # The request itself: each read through Flask's proxy is a lookup.
            req = self.get_default_request()._get_current_object()
        try:
            return argmap.load(self._raw_load_json(req))
        except ma.ValidationError as error:
            self._on_validation_error(
                error,
                req,
                argmap,
                location,
                error_status_code=kwargs.get("error_status_code"),
                error_headers=kwargs.get("error_headers"),
            )

    # Whether only JSON (else 415) is read, or any declared type.
    json_type_required = True

    def _raw_load_json(self, req: Request):
        check_media_type(req, self.json_type_required)
        return load_json(read_body(req))


def load_json(body: bytes):
    """A JSON document from a body, or a 400 saying what is wrong with it."""
    if not body:
        abort(400, message="Request body is empty; expected a JSON object.")
    try:
        with gc_paused():
            return orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson is strict; the standard parser explains the error better and
        # reads NaN and Infinity, which the schema then refuses with a 422.
        pass
    try:
        with gc_paused():
            return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        abort(400, message="Request body is not valid UTF-8.")
    except RecursionError:
        abort(400, message="Request body is nested too deeply.")
    except ValueError as error:  # JSONDecodeError, or an over-long integer.
        abort(400, message=f"Request body is not valid JSON: {error}.")


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a body is parsed.

    A parsed document has no reference cycles, but a 224x224x3 image as JSON
    is 50,000 lists: enough allocations to trigger collections that walk the
    whole heap. Measured in a process with TensorFlow loaded, parsing one
    image took 133 ms with the collector on and 10 ms with it paused.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# What a JSON body may declare on /predict: JSON, nothing, or curl -d's default.
UNDECLARED_JSON = ("application/json", "", "application/x-www-form-urlencoded")


def check_media_type(
    req: Request, json_type_required: bool = True, encodings: tuple[str, ...] = ()
) -> None:
    """Answer 415 unless the body is plain JSON in UTF-8, not encoded in any other way.

    Flask's ``is_json`` also takes ``application/*+json`` (JSON:API, JSON-LD),
    whose rules this API does not follow; and a body compressed or otherwise
    encoded would be read as garbage, so it is refused rather than ignored.
    A body that declares no type, or the form type ``curl -d`` declares when
    told nothing, is read as JSON too: a ``/v2`` or ``/v1`` command copied onto
    ``/predict`` works. With ``json_type_required`` false, any declared type is.
    """
    content_type = req.headers.get("Content-Type", "")
    if json_type_required and req.mimetype not in UNDECLARED_JSON:
        abort(415, message="Content-Type must be application/json (or none).")
    charset = req.mimetype_params.get("charset")
    if charset is None and "charset" in content_type.lower():
        charset = ""  # Declared but empty, which werkzeug drops.
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        abort(415, message=f"JSON must be UTF-8 encoded, not {cut(charset)!r}.")
    encoding = req.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity", *encodings):
        accepted = ", ".join(("identity", *encodings))
        abort(415, message=f"Content-Encoding {cut(encoding)!r} is not supported; use {accepted}.")
    transfer = req.headers.get("Transfer-Encoding", "chunked").replace(" ", "").lower()
    if transfer not in ("", "chunked"):
        abort(415, message=f"Transfer-Encoding {cut(transfer)!r} is not supported; use chunked.")


def read_body(req: Request) -> bytes:
    """The request body, or a 413 once it exceeds MAX_CONTENT_LENGTH.

    Read straight from the WSGI input: a quarter of werkzeug's layered
    ``get_data`` cost on a small body, and for a chunked body (no
    Content-Length) werkzeug would silently cut it at the limit instead of
    refusing it. Either way at most one byte past the limit is read.
    """
    limit, length = req.max_content_length, req.content_length
    if limit is not None and length is not None and length > limit:
        raise RequestEntityTooLarge()
    stream = req.environ["wsgi.input"]
    seconds = current_app.config["BODY_TIMEOUT"]
    try:
        with serving_state(current_app).body_deadline(seconds):
            if length is not None:
                body = stream.read(length)
            else:
                body = stream.read() if limit is None else stream.read(limit + 1)
    except TimeoutError:
        abort(408, message=f"The request body did not arrive within {seconds} s (BODY_TIMEOUT).")
    except Exception as error:  # noqa: BLE001 - the server's HTTP parser raises its own types.
        # Malformed chunked framing (a bad size, a missing CRLF, a bad trailer) or a cut connection.
        abort(400, message=f"The request body could not be read: {describe(error)}.")
    if length is not None and len(body) < length:
        abort(400, message=f"The body ended after {len(body)} of {length} bytes (Content-Length).")
    if length is None and limit is not None and len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def describe(error: Exception) -> str:
    """A short, safe description of a body-reading error for the client."""
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return f"{type(error).__name__}{': ' + text if text else ''}"


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest blueprint that parses bodies with ``JsonBodyParser``."""

    ARGUMENTS_PARSER = JsonBodyParser()

    def alt_response(self, *args, **kwargs):
        """Document an alternative response, as flask-smorest does, without a wrapper."""
        return document_only(super().alt_response(*args, **kwargs))

    def doc(self, **kwargs):
        """Add to an operation's documentation, as flask-smorest does, without a wrapper."""
        return document_only(super().doc(**kwargs))


def document_only(smorest_decorator):
    """Keep a flask-smorest decorator's documentation and drop its wrapper.

    flask-smorest wraps the view once per ``alt_response`` (in a function
    that only calls ``current_app.ensure_sync``, for async views, which this
    app has none of) and once per ``doc``; on /predict those layers cost
    about 40 µs a request. Documentation is all these decorators add.
    """

    def decorator(view):
        view._apidoc = smorest_decorator(view)._apidoc
        return view

    return decorator


class ProtocolBodyParser(JsonBodyParser):
    """The standard protocols' bodies, read the way their clients send them.

    JSON whatever the Content-Type, as TensorFlow Serving and Triton read
    them: tritonclient sends none, and TensorFlow Serving's documented
    `curl -d` sends application/x-www-form-urlencoded. Compressed with gzip or
    deflate, as tritonclient's ``request_compression_algorithm`` sends it,
    within MAX_CONTENT_LENGTH once decompressed.
    """

    json_type_required = False

    def _raw_load_json(self, req: Request):
        check_media_type(req, self.json_type_required, ("gzip", "deflate"))
        return load_json(decompressed(req, read_body(req)))


class BinaryTensorsParser(ProtocolBodyParser):
    """The Open Inference Protocol's bodies: also its binary tensor data extension.

    With an ``Inference-Header-Content-Length`` header, the JSON is that many
    bytes and the raw tensors follow it (kept in ``g.binary_tensors``). With
    the header at 0, Triton's raw binary request: the whole body is the raw
    tensor of the model's one input (``g.raw_binary`` says so; the view builds
    the request from the model's signature).
    """

    def _raw_load_json(self, req: Request):
        check_media_type(req, self.json_type_required, ("gzip", "deflate"))
        body = decompressed(req, read_body(req))
        header = req.headers.get("Inference-Header-Content-Length")
        if header is None:
            return load_json(body)
        length = header.strip()
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not (length.isascii() and length.isdigit()) or int(length) > len(body):
            abort(
                400,
                message=f"Inference-Header-Content-Length {cut(header)!r} is not a length "
                f"within the {len(body)}-byte body.",
            )
        g.binary_tensors = memoryview(body)[int(length) :]
        if int(length) == 0:
            g.raw_binary = True
            return {"inputs": []}
        return load_json(body[: int(length)])


def decompressed(req: Request, body: bytes) -> bytes:
    """The body as sent before its Content-Encoding; a 413 past MAX_CONTENT_LENGTH.

    At most the limit plus one byte is ever inflated, so a zip bomb costs no
    more memory than a plain body at the limit.
    """
    encoding = req.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    limit = req.max_content_length
    # gzip's header (wbits 31); "deflate" is zlib's format as browsers and
    # tritonclient send it (15), and some clients send it raw (-15).
    for wbits in (31,) if encoding == "gzip" else (15, -15):
        inflater = zlib.decompressobj(wbits)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as error:
            problem = error
            continue
        if len(data) > limit or inflater.unconsumed_tail:
            raise RequestEntityTooLarge()
        if not inflater.eof:
            abort(400, message=f"The {encoding} body is cut short.")
        if inflater.unused_data:  # A second gzip member, or anything else.
            abort(
                400,
                message=f"{len(inflater.unused_data)} bytes follow the end of the {encoding} data.",
            )
        return data
    abort(400, message=f"The body is not valid {encoding} data ({problem}).")


class ProtocolBlueprint(Blueprint):
    """A blueprint for a standard protocol (/v2, /v1/models), whose errors are ``{"error"}``.

    flask-smorest documents every operation's default error with the API's own
    error shape; here it is replaced by the protocol's, as ``errors.py`` answers.
    """

    ARGUMENTS_PARSER = ProtocolBodyParser()

    @staticmethod
    def _prepare_response_doc(doc, doc_info, *, api, spec, **kwargs):
        doc = Blueprint._prepare_response_doc(doc, doc_info, api=api, spec=spec, **kwargs)
        doc["responses"]["default"] = {
            "description": "An error, as the protocol writes it.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ProtocolError"}}
            },
        }
        return doc


class OpenInferenceBlueprint(ProtocolBlueprint):
    """/v2: a protocol blueprint whose bodies may carry binary tensors."""

    ARGUMENTS_PARSER = BinaryTensorsParser()


class SegmentConverter(BaseConverter):
    """A path segment without ":": TensorFlow Serving's ``/v1/models/<name>:predict``
    must never route to the status operation as a model named ``linear:predict``."""

    regex = "[^/:]+"
