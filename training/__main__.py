"""Entry point: ``python -m training`` trains; ``python -m training compile DIR`` compiles."""

import sys

from training import compile as compile_command
from training.train import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["compile"]:
        raise SystemExit(compile_command.main(sys.argv[2:]))
    raise SystemExit(main())
