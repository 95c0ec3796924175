"""Sweep one network option of a non-blind option file over values, on degraded validation folders.

Builds the option file's BackboneDelta once per value of --key (a dotted path under network_g) and
prints a table: each variant's PSNR-Y (crop_border = scale) on every degraded folder of held-out
training images, their mean, and the backbone alone on the same LR. How the non-blind deltas'
pre-filter λs were chosen (docs/experiments.md #14, #15, #17); never run it on a benchmark set.

Examples (from the repository root, after the val291 folders of the train option's header):
  # before training: the filter and data steps with the bodies as initialised
  python scripts/sweep_option.py --opt options/train/train_CFSRDelta_NonBlind_x3.yml --untrained \\
      --key refiner.prefilter_lambda --values "{gaussian8: 3e-4, classical: 1e-3}" \\
      "{gaussian8: 3e-4, classical: 3e-3}" --degraded datasets/degraded/val291 --settings classical \\
      --kernels k2 k6 k8 --noise 0
  # the shipped network, one constant at test time
  python scripts/sweep_option.py --opt options/test/test_CFSRDelta_NonBlind_x4.yml \\
      --key refiner.prefilter_noise_lambda --values 6.8e-4 "{gaussian8: 1.36e-3, classical: 6.8e-4}" \\
      --degraded datasets/degraded/val291 --settings gaussian8 --noise 7.65
"""
import argparse
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

import cfsrdelta_arch  # noqa: F401
from cfsrdelta_arch.app import option_sweep
from cfsrdelta_arch.app.cli import add_debug_arg, run_main
from cfsrdelta_arch.utils.allocator import keep_freed_memory_for_reuse
from cfsrdelta_arch.utils.tables import markdown_table


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--opt', required=True, help='train or test option file of a non-blind BackboneDelta')
    parser.add_argument('--key', required=True, help='dotted option under network_g, e.g. refiner.prefilter_lambda')
    parser.add_argument('--values', nargs='+', required=True, help='values of --key (numbers or YAML)')
    parser.add_argument('--untrained', action='store_true', help='the network as initialised (seed 0), not the '
                        "option file's pretrain_network_g")
    parser.add_argument('--hr', default=os.path.join(ROOT, 'datasets', 'train291', 'val', 'HR'),
                        help='HR folder of the degraded folders (default: datasets/train291/val/HR)')
    parser.add_argument('--degraded', default=os.path.join(ROOT, 'datasets', 'degraded', 'val291'),
                        help='folder holding <setting>/x<s>/<kernel>_n<noise>/ (default: datasets/degraded/val291)')
    parser.add_argument('--settings', nargs='+', default=['gaussian8', 'classical'], choices=['gaussian8', 'classical'])
    parser.add_argument('--kernels', nargs='+', metavar='NAME', help='only these kernels, e.g. k2 k6 g1.95')
    parser.add_argument('--noise', nargs='+', type=float, metavar='SIGMA', help='only these noise levels, e.g. 0')
    add_debug_arg(parser)
    return parser


def progress(label, i, total):
    print(f'\r{label}: {i}/{total}', end='' if i < total else '\n', file=sys.stderr, flush=True)


def body(args):
    scale, variants = option_sweep.load_variants(args.opt, args.key, args.values, args.untrained)
    header, rows = option_sweep.sweep(variants, scale, args.hr, args.degraded, args.settings, args.kernels,
                                      args.noise, progress)
    print(markdown_table(header, rows))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory_for_reuse()  # whole-image feature maps: see utils/allocator.py
    return run_main(body, args)


if __name__ == '__main__':
    sys.exit(main())
