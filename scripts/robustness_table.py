"""The robustness table (README, "Degraded inputs"): methods x clean / gaussian8 / classical LR, per kernel.

Evaluates every LR folder found (the benchmark's clean LR_bicubic/X<s> and the degraded folders of
scripts/make_degraded_lr.py, one root per set: --degraded ROOT holds ROOT/<set>/<setting>/x<s>/...)
with the chosen methods, and merges one row per (set, setting, kernel, noise, method) into --csv with
this command and the commit; then prints the means over each setting's kernels (classical: k1-k8
and k9-k12 separately), as in the README.

Example (all of it; the parts may run separately, e.g. one method per machine):
  python scripts/make_degraded_lr.py --setting gaussian8 --scales 4 --noise 0 7.65 \\
      --hr ../shared/datasets/benchmark/Set14/HR --out datasets/degraded/Set14     # per set and setting
  python scripts/robustness_table.py --methods bicubic cfsr cfsr_delta cfsr_nonblind lesrcnn
  python scripts/robustness_table.py --summary
  python scripts/robustness_table.py --cost 5         # latency and MACs at 1280x720 (idle machine)
"""
import argparse
import os
import shlex
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

import cfsrdelta_arch  # noqa: F401
from cfsrdelta_arch.app import robustness
from cfsrdelta_arch.app.cli import add_debug_arg, run_main
from cfsrdelta_arch.utils.allocator import keep_freed_memory_for_reuse


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sets', nargs='+', default=['Set5', 'Set14', 'B100'])
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--benchmark', default=os.path.join(ROOT, os.pardir, 'shared', 'datasets', 'benchmark'),
                        help='folder holding <set>/HR and <set>/LR_bicubic/X<s> (default: ../shared/datasets/benchmark)')
    parser.add_argument('--degraded', default=os.path.join(ROOT, 'datasets', 'degraded'),
                        help='folder holding <set>/<setting>/x<s>/<kernel>_n<noise>/ (default: datasets/degraded)')
    parser.add_argument('--settings', nargs='+', default=['clean', 'gaussian8', 'classical'])
    parser.add_argument('--kernels', nargs='+', metavar='NAME', help='only these degraded kernels, e.g. k1 k2 g1.80')
    parser.add_argument('--noise', nargs='+', type=float, metavar='SIGMA', help='only these noise levels, e.g. 0')
    parser.add_argument('--methods', nargs='+', default=list(robustness.METHODS), choices=list(robustness.METHODS))
    parser.add_argument('--options', default=os.path.join(ROOT, 'options', 'test'), help='folder of the test option files')
    parser.add_argument('--csv', help='per-kernel rows (default: docs/robustness_x<scale>.csv; its rows carry '
                        'no scale, so one file per scale)')
    parser.add_argument('--commit', help='commit to record (default: this checkout\'s)')
    parser.add_argument('--summary', action='store_true', help='only print the means of --csv')
    parser.add_argument('--cost', type=int, metavar='REPEATS', help='only measure the CPU latency and MACs of '
                        'CFSR, CFSR-Delta and the non-blind delta at 1280x720 (median of REPEATS interleaved runs)')
    add_debug_arg(parser)
    return parser


def body(args):
    args.csv = args.csv or os.path.join(ROOT, 'docs', f'robustness_x{args.scale}.csv')
    if args.cost:
        print(robustness.nonblind_cost(args.options, args.cost))
        return 0
    if not args.summary:
        cases = robustness.find_cases(args.sets, args.scale, args.benchmark, args.degraded, args.settings,
                                      args.kernels, args.noise)
        if not cases:
            raise FileNotFoundError(f'no LR folders of {", ".join(args.sets)} under {args.benchmark} or {args.degraded}')
        nets = robustness.load_methods(args.methods, args.scale, args.options)
        command = 'python scripts/robustness_table.py ' + shlex.join(sys.argv[1:])
        robustness.run(cases, args.methods, nets, args.scale, args.csv, command,
                       args.commit or robustness.current_commit(ROOT))
    rows = robustness.read_rows(args.csv)
    for title, kernels_of in (('all kernels', None),
                              ('classical k1-k8 (Gaussian) only', lambda s, k: s != 'classical' or int(k[1:]) <= 8)):
        print(f'\nMean PSNR-Y (dB) over {title}:')
        print(robustness.format_summary(rows, args.sets, kernels_of))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory_for_reuse()  # whole-image feature maps: see utils/allocator.py
    return run_main(body, args)


if __name__ == '__main__':
    sys.exit(main())
