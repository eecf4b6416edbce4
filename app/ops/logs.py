"""Logging for the app and Gunicorn alike: one JSON object per line, or text."""

import logging
import os
import select
import sys
import time
from datetime import UTC, datetime

import orjson
from flask import g, has_request_context
from gunicorn.glogging import Logger
from pythonjsonlogger.orjson import OrjsonFormatter

# WSGI environ keys where a request notes the model version that answered it.
MODEL_ENVIRON, VERSION_ENVIRON = "model_server.model", "model_server.version"
# Gunicorn access-log atoms copied into each access record, under our names.
ACCESS_FIELDS = {
    "m": "method",
    "U": "path",
    "s": "status",
    "M": "duration_ms",
    "h": "remote_addr",
    "{x-request-id}o": "request_id",
    # The model and version that answered an inference request (app/ops/request_context.py).
    f"{{{MODEL_ENVIRON}}}e": "model",
    f"{{{VERSION_ENVIRON}}}e": "model_version",
}
NUMERIC_FIELDS = {"status", "duration_ms", "model_version"}
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'


class AccessLogger(Logger):
    """Gunicorn's logger, making only the access-log atoms this server writes, and writing
    a JSON access line straight to its stream.

    Gunicorn's own ``atoms`` copies every request header, response header and
    WSGI environ entry for each request, and formats a date no record uses:
    measured, a twentieth of a probe's cost. ``ACCESS_FORMAT`` and
    ``ACCESS_FIELDS`` name every atom made here. The line itself went through
    a log record, the handler and the JSON formatter: a tenth of a probe's
    cost. When the access logger has its one JSON handler, the same line is
    written in one call instead, with the same fields in the same order.

    On an event loop (app/ops/worker.py calls ``write_once_a_pass``), the lines
    of the requests answered in one pass of the loop go out in one write, up to
    ``PIPE_BUF`` bytes: under load one write for several answers, each line
    still whole and in order, and never more than one pass late.
    """

    _call_soon = None

    def setup(self, cfg) -> None:
        super().setup(cfg)
        handlers = self.access_log.handlers
        json_handler = len(handlers) == 1 and isinstance(handlers[0].formatter, JsonLogFormatter)
        self._json_fd = stream_fd(handlers[0].stream) if json_handler else None
        self._held = bytearray()

    def write_once_a_pass(self, call_soon) -> None:
        """Hold the JSON lines until ``call_soon(self.flush)`` runs ``flush``: before the
        event loop next polls."""
        self._call_soon = call_soon

    def access(self, resp, req, environ, request_time) -> None:
        fd = self._json_fd
        if fd is None or not self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)
            return
        line = access_line(self.atoms(resp, req, environ, request_time), self.cfg.access_log_format)
        if self._call_soon is None:
            # One write of the whole line: atomic on a pipe, never interleaved with another
            # process's line, and no Python stream layers (a flush each) in between.
            os.write(fd, line)
            return
        if len(self._held) + len(line) > select.PIPE_BUF:  # A pipe writes no more at once.
            self.flush()
        if not self._held:
            self._call_soon(self.flush)
        self._held += line

    def flush(self) -> None:
        """Write the lines held, in one call."""
        if self._held:
            lines, self._held = self._held, bytearray()
            os.write(self._json_fd, lines)

    def atoms(self, resp, req, environ, request_time) -> dict:
        method = environ["REQUEST_METHOD"]
        sent = getattr(resp, "sent", None)
        request_id = next(
            (value for name, value in resp.headers if name.lower() == "x-request-id"), "-"
        )
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "r": f"{method} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
            "s": str(resp.status).split(None, 1)[0],
            "b": "-" if sent is None else str(sent),
            "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
            "m": method,
            "U": environ.get("PATH_INFO"),
            "{x-request-id}o": request_id,
            f"{{{MODEL_ENVIRON}}}e": environ.get(MODEL_ENVIRON),
            f"{{{VERSION_ENVIRON}}}e": environ.get(VERSION_ENVIRON),
        }


def stream_fd(stream) -> int | None:
    """The file descriptor a handler's stream writes to (flushed first), or None."""
    try:
        stream.flush()
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # A stream without a descriptor.
        return None


def access_line(atoms: dict, access_format: str) -> bytes:
    """One access record as JsonLogFormatter writes it, and its newline, in UTF-8."""
    now = time.time()
    line = {
        "message": access_format % atoms,
        "timestamp": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        "level": "INFO",
        "logger": "gunicorn.access",
        "pid": os.getpid(),
    }
    for atom, field in ACCESS_FIELDS.items():
        value = atoms.get(atom)
        if value not in (None, "-"):
            line[field] = _number(value) if field in NUMERIC_FIELDS else value
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


class RequestIdFilter(logging.Filter):
    """Stamp records made while handling a request with its request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and not hasattr(record, "request_id"):
            record.request_id = g.get("request_id")
        return True


class JsonLogFormatter(OrjsonFormatter):
    """timestamp, level, logger, message, pid, plus request fields when known."""

    def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_record["level"] = record.levelname
        log_record["logger"] = record.name
        log_record["pid"] = record.process
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            for atom, field in ACCESS_FIELDS.items():
                value = record.args.get(atom)
                if value not in (None, "-"):
                    log_record[field] = _number(value) if field in NUMERIC_FIELDS else value


def _number(value: str):
    try:
        return int(value)
    except ValueError:
        return value


def logging_config(level: str = "INFO", fmt: str = "json") -> dict:
    """A ``logging.config.dictConfig`` for the app and Gunicorn's loggers."""
    formatter = (
        {"()": JsonLogFormatter, "fmt": "%(message)s"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"}
    )
    handler = {
        "class": "logging.StreamHandler",
        "stream": sys.stdout,
        "formatter": "default",
        "filters": ["request_id"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": formatter},
        "handlers": {"stdout": handler},
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }
