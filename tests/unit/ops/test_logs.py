"""Logs: one JSON object per line with request fields; prediction records sampled."""

import json
import logging
import re
import sys
from datetime import timedelta
from types import SimpleNamespace

from gunicorn.config import Config

from app.ops.logs import (
    ACCESS_FIELDS,
    ACCESS_FORMAT,
    AccessLogger,
    JsonLogFormatter,
    RequestIdFilter,
    access_line,
)


def format_record(record) -> dict:
    return json.loads(JsonLogFormatter("%(message)s").format(record))


def test_a_record_has_timestamp_level_logger_message_and_pid():
    record = logging.LogRecord("app.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    line = format_record(record)
    assert line["message"] == "hello you"
    assert (line["level"], line["logger"]) == ("WARNING", "app.x")
    assert line["timestamp"].endswith("+00:00") and isinstance(line["pid"], int)


def test_gunicorn_access_records_carry_method_path_status_duration_and_request_id():
    atoms = {"m": "POST", "U": "/predict", "s": "200", "M": "3", "h": "127.0.0.1"}
    atoms["{x-request-id}o"] = "abc"
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(m)s", (), None)
    record.args = atoms  # Gunicorn passes its atoms as the record's args.
    line = format_record(record)
    assert (line["method"], line["path"], line["status"]) == ("POST", "/predict", 200)
    assert (line["duration_ms"], line["request_id"]) == (3, "abc")


def test_a_traceback_goes_to_the_log_record():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("app", logging.ERROR, __file__, 1, "failed", (), True)
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in format_record(record)["exc_info"]


def test_records_inside_a_request_carry_its_request_id(app):
    with app.test_request_context(headers={"X-Request-ID": "req-1"}):
        app.preprocess_request()
        record = logging.LogRecord("app", logging.INFO, __file__, 1, "m", (), None)
        RequestIdFilter().filter(record)
    assert record.request_id == "req-1"


def predictions_logged(client, caplog) -> list:
    with caplog.at_level(logging.INFO, logger="app.predictions"):
        client.post("/predict", json={"instances": [10, 2]}, headers={"X-Request-ID": "r-9"})
    return [r for r in caplog.records if r.name == "app.predictions"]


def test_predictions_are_logged_with_inputs_outputs_version_and_request_id(app, client, caplog):
    app.config["PREDICTION_LOG_SAMPLE_RATE"] = 1.0
    (record,) = predictions_logged(client, caplog)
    assert record.instances == [10.0, 2.0] and len(record.predictions) == 2
    assert (record.model, record.model_version, record.request_id) == ("linear", 1, "r-9")


def test_prediction_logging_can_be_sampled_down_to_nothing(app, client, caplog):
    app.config["PREDICTION_LOG_SAMPLE_RATE"] = 0.0
    assert predictions_logged(client, caplog) == []


def access_atoms(request_id="req-7") -> dict:
    response = SimpleNamespace(
        status="404 NOT FOUND", sent=178, headers=[("X-Request-ID", request_id)]
    )
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/nothing?x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/nothing",
        "REMOTE_ADDR": "127.0.0.1",
    }
    return AccessLogger(Config()).atoms(response, None, environ, timedelta(milliseconds=12.7))


def test_the_access_logger_makes_every_atom_the_format_and_the_json_fields_use():
    used = set(re.findall(r"%\((.*?)\)s", ACCESS_FORMAT)) | set(ACCESS_FIELDS)
    assert used <= set(access_atoms())
    assert ACCESS_FORMAT % access_atoms() == (
        '127.0.0.1 "GET /nothing?x=1 HTTP/1.1" 404 178 12ms request_id=req-7'
    )


def test_an_access_record_carries_the_answers_request_id_as_json():
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(m)s", (), None)
    record.args = access_atoms("r-42")
    line = format_record(record)
    assert (line["path"], line["status"], line["request_id"]) == ("/nothing", 404, "r-42")


def test_the_direct_access_line_is_the_line_the_json_formatter_writes():
    atoms = access_atoms("r-9")
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, ACCESS_FORMAT, (), None
    )
    record.args = atoms
    expected = JsonLogFormatter("%(message)s").format(record)
    line = access_line(atoms, ACCESS_FORMAT).decode()
    assert line.endswith("\n") and line.count("\n") == 1
    direct, formatted = json.loads(line), json.loads(expected)
    assert list(direct) == list(formatted)  # Same fields, same order.
    direct.pop("timestamp"), formatted.pop("timestamp")
    assert direct == formatted


def test_the_access_logger_writes_its_lines_straight_only_to_a_json_handler():
    from app.ops.logs import logging_config

    for fmt, direct in (("json", True), ("text", False)):
        cfg = Config()
        cfg.set("logconfig_dict", logging_config("INFO", fmt))
        logger = AccessLogger(cfg)
        assert (logger._json_fd is not None) is direct
