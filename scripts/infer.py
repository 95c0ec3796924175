"""Run the inference CLI from a checkout without installing it; same options as ``cfsrdelta-infer --help``."""
import sys

from cfsrdelta_arch.app.cli import main

if __name__ == '__main__':
    sys.exit(main())
