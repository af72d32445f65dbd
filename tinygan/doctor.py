"""``python -m tinygan.doctor``: check an install end to end (it lives in tinygan/tools/doctor.py)."""
import sys

from .tools.doctor import main

if __name__ == "__main__":
    sys.exit(main())
