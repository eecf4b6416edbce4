"""The one error shape, and the bounds on what an error echoes back to a client.

The Flask handlers (app/errors.py), Gunicorn's own error answers
(``gunicorn_errors``) and the loader's list of versions that did not load
all use them.
"""

# Entries kept at each level of ``errors``: 90,000 unknown keys must not make a 2.5 MB answer.
MAX_REPORTED_ERRORS = 10
# Characters of a client's value echoed in an error message: a 20 kB model name
# must not make a 20 kB message (past a gRPC client's 16 kB metadata limit).
SHOWN_CHARACTERS = 64


def cut(text) -> str:
    """A client's string (or value) for an error message: at most SHOWN_CHARACTERS, then "…"."""
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[:SHOWN_CHARACTERS]}…"


def error_payload(code: int, status: str, message: str, errors: dict | None = None) -> dict:
    """The one error shape: ``code``, ``status``, ``message``, ``errors`` (bounded)."""
    return {"code": code, "status": status, "message": message, "errors": bounded(errors or {})}


def bounded(errors, what: str = ""):
    """At most ``MAX_REPORTED_ERRORS`` entries per dict or list, then "and N more ``what``"."""
    if not isinstance(errors, dict | list) or len(errors) <= MAX_REPORTED_ERRORS:
        return {k: bounded(v) for k, v in errors.items()} if isinstance(errors, dict) else errors
    more = f"and {len(errors) - MAX_REPORTED_ERRORS} more {what}".rstrip()
    if isinstance(errors, dict):
        kept = {key: bounded(value) for key, value in list(errors.items())[:MAX_REPORTED_ERRORS]}
        return {**kept, "...": [more]}
    return [*errors[:MAX_REPORTED_ERRORS], more]
