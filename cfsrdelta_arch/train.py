"""Train with an option file: ``python cfsrdelta_arch/train.py -opt options/train/<file>.yml``.

The option file is checked before BasicSR creates anything; a mistake is one line (``--debug``: the
traceback).
"""
import os.path as osp

from cfsrdelta_arch.app.options import check_command_line, run_cli
from cfsrdelta_arch.app.runner import train_pipeline


def main(root_path):
    check_command_line(is_train=True)
    train_pipeline(root_path)


if __name__ == '__main__':
    run_cli(main, osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
