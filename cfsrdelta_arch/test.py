"""Test with an option file: ``python cfsrdelta_arch/test.py -opt options/test/<file>.yml``."""
import os.path as osp

from cfsrdelta_arch.app.runner import test_pipeline

if __name__ == '__main__':
    test_pipeline(osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
