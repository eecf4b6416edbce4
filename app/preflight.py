"""Check, before Gunicorn forks its workers, that a model loads at all."""

import os

from app.model import ModelLoadError, load_newest


def first_load_error(model_dir, pinned_version: int | None) -> str | None:
    """Load the model once in a throwaway child process; return why it failed, or None.

    The master must run no TensorFlow op itself (its workers fork from it), so
    the trial load happens in a fork that exits straight after. Without this,
    every worker would fail to boot on its own, each logging the cause, and
    Gunicorn's halt would race with the second failure into a traceback.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # The child: load, report, and leave without running cleanup.
        os.close(read_end)
        try:
            load_newest(model_dir, pinned_version)
            message = ""
        except ModelLoadError as error:
            message = str(error)
        except BaseException as error:  # noqa: BLE001 - any failure must reach the master.
            message = f"{model_dir}: {type(error).__name__}: {error}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        message = report.read().decode()
    _, status = os.waitpid(pid, 0)
    if not message and status != 0:
        message = f"{model_dir}: the trial load crashed (wait status {status})"
    return message or None
