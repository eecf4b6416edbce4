"""Entry point for ``python -m training``."""

from training.train import main

if __name__ == "__main__":
    raise SystemExit(main())
