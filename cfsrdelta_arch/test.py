"""Test with an option file: ``python cfsrdelta_arch/test.py -opt options/test/<file>.yml``.

A mistake in the option file, a checkpoint or a dataset is one line (``--debug``: the traceback).
"""
import os.path as osp

from cfsrdelta_arch.app.options import run_cli
from cfsrdelta_arch.app.runner import test_pipeline

if __name__ == '__main__':
    run_cli(test_pipeline, osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
