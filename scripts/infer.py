"""Run the inference CLI from a checkout without installing it; same options as ``cfsrdelta-infer --help``."""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))

from cfsrdelta_arch.inference_cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
