"""Train with an option file: ``python cfsrdelta_arch/train.py -opt options/train/<file>.yml``."""
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(__file__, osp.pardir, osp.pardir))
sys.path.insert(0, ROOT)  # run as a script from a checkout without installing

from cfsrdelta_arch.runner import train_pipeline  # noqa: E402

if __name__ == '__main__':
    train_pipeline(ROOT)
