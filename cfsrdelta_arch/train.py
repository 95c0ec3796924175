"""Train with an option file: ``python cfsrdelta_arch/train.py -opt options/train/<file>.yml`` (experiments/
and tb_logger/ under the repository root), or the installed ``cfsrdelta-train -opt <file>.yml`` (under
the working directory).

The option file is checked before BasicSR creates anything; a mistake is one line (``--debug``: the
traceback).
"""
import os
import os.path as osp

from cfsrdelta_arch.app.options import check_command_line, run_cli
from cfsrdelta_arch.app.runner import train_pipeline


def train(root_path):
    """Check the option file named by -opt, then train; experiments/<name>/ goes under ``root_path``."""
    check_command_line(is_train=True)
    train_pipeline(root_path)


def main():
    """``cfsrdelta-train -opt X.yml [--auto_resume] [--debug] [--force_yml k=v]``, from any folder: the
    working directory is the root of experiments/ and tb_logger/, as relative paths in X.yml are
    read from it too."""
    run_cli(train, os.getcwd())


if __name__ == '__main__':
    run_cli(train, osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
