"""``python -m tinygan.bench``: the benchmark of training steps (it lives in tinygan/tools/bench.py)."""
import sys

from .tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
