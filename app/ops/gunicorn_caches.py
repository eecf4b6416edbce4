"""Four things Gunicorn computes again for every request, computed once instead.

Gunicorn 27 formats the ``Date`` header with ``email.utils`` (2.4 µs), parses
the client's address to check it against ``forwarded_allow_ips`` (2.9 µs),
and builds ``wsgi.errors`` from the error logger's handlers (1.8 µs), for
every request, though the first changes once a second, the second once a
connection and the third is almost never written to (each timed alone
in-process). And it reads each setting through ``Config.__getattr__``, a few
dozen times a request. Under load (wrk c20, py-spy on one worker) the four
were about 10 % of a probe's CPU, in this server and in the bare stack alike.
Each replacement gives the same answers as Gunicorn's own.
"""

import time
from functools import lru_cache

from gunicorn import util
from gunicorn.http import message, wsgi

# Distinct client addresses remembered: bounded, whatever the clients.
ADDRESSES = 4096
# Gunicorn's own, kept at the first import: a reload runs gunicorn.conf.py (and install) again.
GUNICORN_HTTP_DATE, GUNICORN_IP_IN_ALLOW_LIST = util.http_date, message._ip_in_allow_list


def install() -> None:
    """Replace the three in this process and its forks (as ``gunicorn_errors.install`` does)."""
    util.http_date = DateOncePerSecond(GUNICORN_HTTP_DATE)
    message._ip_in_allow_list = AllowListCache(GUNICORN_IP_IN_ALLOW_LIST)
    wsgi.WSGIErrorsWrapper = ErrorsOnFirstWrite


class DateOncePerSecond:
    """``http_date``: the current date formatted once a second (the header's resolution)."""

    def __init__(self, http_date):
        self._format = http_date
        # One object, replaced whole: a gthread worker's threads never see a half-made pair.
        self._made = (None, None)

    def __call__(self, timestamp=None) -> str:
        if timestamp is not None:
            return self._format(timestamp)
        second = int(time.time())
        made_second, date = self._made
        if second != made_second:
            date = self._format(second)
            self._made = (second, date)
        return date


class AllowListCache:
    """``_ip_in_allow_list``: each address's answer for an allow list, kept."""

    def __init__(self, ip_in_allow_list):
        self._check = lru_cache(maxsize=ADDRESSES)(ip_in_allow_list)

    def __call__(self, ip_str, allow_list, networks) -> bool:
        return self._check(ip_str, tuple(allow_list), tuple(networks))


class ErrorsOnFirstWrite(wsgi.WSGIErrorsWrapper):
    """``wsgi.errors``, which finds the error log's streams when first written to."""

    def __init__(self, cfg):
        self._cfg = cfg  # Gunicorn's own __init__ runs at the first write.

    def write(self, data):
        if "streams" not in self.__dict__:
            super().__init__(self._cfg)
        return super().write(data)


def settle(cfg) -> None:
    """Make a worker's settings plain attributes of its ``cfg``, read without
    ``Config.__getattr__``.

    A worker's settings never change (a reload starts new workers), and the
    few that ``Config`` computes as properties still go through them.
    """
    vars(cfg).update((name, setting.get()) for name, setting in cfg.settings.items())
