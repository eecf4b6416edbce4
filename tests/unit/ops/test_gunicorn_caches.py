"""Gunicorn's per-request Date header, client address check and wsgi.errors, made once:
the same answers as Gunicorn's own."""

import ipaddress

import pytest
from gunicorn.config import Config

from app.ops import gunicorn_caches
from app.ops.gunicorn_caches import (
    GUNICORN_HTTP_DATE,
    GUNICORN_IP_IN_ALLOW_LIST,
    AllowListCache,
    DateOncePerSecond,
    ErrorsOnFirstWrite,
)


def test_the_date_is_gunicorns_for_the_current_second(monkeypatch):
    date = DateOncePerSecond(GUNICORN_HTTP_DATE)
    for now in (1_700_000_000.2, 1_700_000_000.9, 1_700_000_001.0, 1_700_000_061.5):
        monkeypatch.setattr(gunicorn_caches.time, "time", lambda now=now: now)
        assert date() == GUNICORN_HTTP_DATE(now)
    assert date(86_400.0) == "Fri, 02 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize(
    "address, allowed",
    [
        ("127.0.0.1", ["127.0.0.1", "::1"]),
        ("::1", ["127.0.0.1", "::1"]),
        ("10.1.2.3", ["127.0.0.1", "::1"]),
        ("10.1.2.3", ["10.0.0.0/8"]),
        ("192.168.1.1", ["10.0.0.0/8", "192.168.0.0/16"]),
        ("203.0.113.9", ["*"]),
        ("not an address", ["127.0.0.1"]),
        ("", []),
    ],
)
def test_the_address_check_answers_as_gunicorns(address, allowed):
    networks = [ipaddress.ip_network(entry) for entry in allowed if entry != "*"]
    check = AllowListCache(GUNICORN_IP_IN_ALLOW_LIST)
    expected = GUNICORN_IP_IN_ALLOW_LIST(address, allowed, networks)
    assert check(address, allowed, networks) is expected
    assert check(address, allowed, networks) is expected  # Kept, the same.
    assert check(address, [], []) is GUNICORN_IP_IN_ALLOW_LIST(address, [], [])


def test_the_address_check_remembers_a_bounded_number_of_addresses():
    check = AllowListCache(GUNICORN_IP_IN_ALLOW_LIST)
    networks = [ipaddress.ip_network("10.0.0.0/8")]
    for host in range(2 * gunicorn_caches.ADDRESSES):
        check(str(ipaddress.ip_address(0x0A000000 + host)), ["10.0.0.0/8"], networks)
    assert check._check.cache_info().currsize == gunicorn_caches.ADDRESSES


def test_wsgi_errors_written_reach_the_error_log(capsys):
    config = Config()
    config.set("errorlog", "-")
    errors = ErrorsOnFirstWrite(config)
    errors.write("first\n")
    errors.writelines(["second\n"])
    assert capsys.readouterr().err == "first\nsecond\n"


def test_installing_twice_wraps_gunicorns_own_once(monkeypatch):
    from gunicorn import util
    from gunicorn.http import message, wsgi

    for module, name in ((util, "http_date"), (message, "_ip_in_allow_list")):
        monkeypatch.setattr(module, name, getattr(module, name))
    monkeypatch.setattr(wsgi, "WSGIErrorsWrapper", wsgi.WSGIErrorsWrapper)
    gunicorn_caches.install()
    gunicorn_caches.install()  # As a reload runs gunicorn.conf.py again.
    assert util.http_date._format is GUNICORN_HTTP_DATE
    assert message._ip_in_allow_list._check.__wrapped__ is GUNICORN_IP_IN_ALLOW_LIST
    assert wsgi.WSGIErrorsWrapper is ErrorsOnFirstWrite


def test_settled_settings_read_as_before():
    config = Config()
    config.set("keepalive", 7)
    config.set("forwarded_allow_ips", "10.0.0.0/8")
    before = {name: getattr(config, name) for name in config.settings}
    gunicorn_caches.settle(config)
    assert {name: getattr(config, name) for name in config.settings} == before
    assert "keepalive" in vars(config) and config.keepalive == 7
    assert config.forwarded_allow_ips == ["10.0.0.0/8"]
    assert config.worker_class.__name__ == "SyncWorker"  # Its property still runs.
