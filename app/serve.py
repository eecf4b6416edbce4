"""Start the server: ``python -m app.serve`` checks the settings, then becomes Gunicorn.

Gunicorn reads some variables itself before any configuration file runs
(``WEB_CONCURRENCY=abc`` is a traceback inside Gunicorn's import), so the
settings are checked here first: nonsense stops the start with one line.
"""

import os
import sys

from app.config import Config, ConfigError


def main(argv: list[str]) -> None:
    try:
        Config()
    except ConfigError as error:
        sys.exit(f"model server: configuration error: {error}")
    # exec: Gunicorn takes this process's place, so it is PID 1 in a container and gets signals.
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app", *argv]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main(sys.argv[1:])
