"""Test with an option file: ``python cfsrdelta_arch/test.py -opt options/test/<file>.yml``."""
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(__file__, osp.pardir, osp.pardir))
sys.path.insert(0, ROOT)  # run as a script from a checkout without installing

from cfsrdelta_arch.runner import test_pipeline  # noqa: E402

if __name__ == '__main__':
    test_pipeline(ROOT)
