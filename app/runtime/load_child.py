"""A loading child started as a new interpreter, for a process that runs TensorFlow.

``python -m app.runtime.load_child WORK_FD ANSWER_FD``: reads the pickled work
from WORK_FD and runs it as a forked child would (app/runtime/loader.py's
``child_messages``), answering on ANSWER_FD. A fork of a process whose
TensorFlow thread pools run would hang as soon as it built a runtime.
"""

import os
import pickle
import sys

from app.runtime.loader import serve_child


def main(argv: list[str]) -> None:
    work_fd, answer_fd = (int(fd) for fd in argv)
    with os.fdopen(work_fd, "rb") as source:
        work = pickle.load(source)
    serve_child(work, answer_fd)


if __name__ == "__main__":
    main(sys.argv[1:])
