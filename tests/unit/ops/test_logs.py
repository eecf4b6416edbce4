"""Logs: one JSON object per line with request fields; prediction records sampled."""

import json
import logging
import os
import re
import select
import sys
from datetime import timedelta
from types import SimpleNamespace

import gevent
from gunicorn.config import Config

from app.ops import logs
from app.ops.logs import (
    ACCESS_FIELDS,
    ACCESS_FORMAT,
    AccessLogger,
    JsonLogFormatter,
    RequestIdFilter,
    access_line,
    logging_config,
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

    for fmt, direct in (("json", True), ("text", False)):
        cfg = Config()
        cfg.set("logconfig_dict", logging_config("INFO", fmt))
        logger = AccessLogger(cfg)
        assert (logger._json_fd is not None) is direct


def json_access_logger(fd: int) -> AccessLogger:
    """An access logger with its one JSON handler, writing its lines to ``fd``."""
    cfg = Config()
    cfg.set("logconfig_dict", logging_config("INFO", "json"))
    cfg.set("access_log_format", ACCESS_FORMAT)
    logger = AccessLogger(cfg)
    logger._json_fd = fd
    return logger


def log_access(logger: AccessLogger, request_id: str) -> None:
    response = SimpleNamespace(status="200 OK", sent=17, headers=[("X-Request-ID", request_id)])
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/health/live",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/health/live",
        "REMOTE_ADDR": "127.0.0.1",
    }
    logger.access(response, None, environ, timedelta(milliseconds=1))


def test_on_an_event_loop_the_lines_of_one_pass_go_out_together_in_order():
    read, write = os.pipe()
    try:
        logger = json_access_logger(write)
        logger.write_once_a_pass(gevent.get_hub().loop.run_callback)
        for n in range(3):
            log_access(logger, f"r-{n}")
        assert not select.select([read], [], [], 0)[0]  # Held while the pass runs.
        gevent.sleep(0)  # The pass ends: the held lines go out.
        lines = [json.loads(line) for line in os.read(read, 65536).splitlines()]
        assert [line["request_id"] for line in lines] == ["r-0", "r-1", "r-2"]
    finally:
        os.close(read), os.close(write)


def test_held_lines_go_out_whole_and_in_order_at_most_a_pipe_buffer_a_write(monkeypatch):
    writes = []
    monkeypatch.setattr(logs.os, "write", lambda fd, data: writes.append(data) or len(data))
    soon = []
    logger = json_access_logger(99)
    logger.write_once_a_pass(soon.append)
    for n in range(40):
        log_access(logger, f"request-{n:03d}")
    for flush in soon:
        flush()
    assert len(writes) > 1 and all(len(data) <= select.PIPE_BUF for data in writes)
    assert all(data.endswith(b"\n") for data in writes)  # Whole lines only.
    ids = [json.loads(line)["request_id"] for data in writes for line in data.splitlines()]
    assert ids == [f"request-{n:03d}" for n in range(40)]
