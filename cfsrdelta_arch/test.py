"""Test with an option file: ``python cfsrdelta_arch/test.py -opt options/test/<file>.yml`` (results/
under the repository root), or the installed ``cfsrdelta-test -opt <file>.yml`` (under the working
directory).

A mistake in the option file, a checkpoint or a dataset is one line (``--debug``: the traceback).
"""
import os
import os.path as osp

from cfsrdelta_arch.app.options import run_cli
from cfsrdelta_arch.app.runner import test_pipeline


def main():
    """``cfsrdelta-test -opt X.yml [--debug] [--force_yml k=v]``, from any folder: results/<name>/ goes
    under the working directory, from which relative paths in X.yml are read too."""
    run_cli(test_pipeline, os.getcwd())


if __name__ == '__main__':
    run_cli(test_pipeline, osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
