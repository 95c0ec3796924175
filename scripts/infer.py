"""``python scripts/infer.py ...``: the inference CLI, the same as the installed ``cfsrdelta-infer --help``."""
import sys

from cfsrdelta_arch.app.cli import main

if __name__ == '__main__':
    sys.exit(main())
