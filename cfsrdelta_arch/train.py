"""Train with an option file: ``python cfsrdelta_arch/train.py -opt options/train/<file>.yml``."""
import os.path as osp

from cfsrdelta_arch.app.runner import train_pipeline

if __name__ == '__main__':
    train_pipeline(osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
