"""Figures of the robustness table (README, "Degraded inputs"), into --out (docs/figures):

  robustness_psnr_vs_blur_x4.png    gaussian8: PSNR-Y against the blur width, σ_n 0 and 7.65, per method
                                    (mean over --sets), from --csv (scripts/robustness_table.py)
  robustness_psnr_vs_noise_x4.png   PSNR-Y against σ_n for one gaussian8 width, from --noise-csv
  robustness_panels_<n>.png         per --panel: HR, LR and each method on one image, whole and zoomed

Example:
  python scripts/robustness_figures.py --panel Set14/gaussian8/g2.60_n0.00/barbara@300,60,96,96
"""
import argparse
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

import cfsrdelta_arch  # noqa: F401
from cfsrdelta_arch.app import robustness, robustness_figures
from cfsrdelta_arch.app.cli import add_debug_arg, run_main


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--csv', default=os.path.join(ROOT, 'docs', 'robustness_x4.csv'))
    parser.add_argument('--noise-csv', default=os.path.join(ROOT, 'docs', 'robustness_noise_x4.csv'))
    parser.add_argument('--noise-kernel', default='g2.60', help='the gaussian8 width of the noise plot')
    parser.add_argument('--sets', nargs='+', default=['Set14', 'B100'])
    parser.add_argument('--benchmark', default=os.path.join(ROOT, os.pardir, 'shared', 'datasets', 'benchmark'))
    parser.add_argument('--degraded', default=os.path.join(ROOT, 'datasets', 'degraded'))
    parser.add_argument('--panel', action='append', default=[], metavar='SET/SETTING/FOLDER/IMAGE@X,Y,W,H',
                        help='an image panel, e.g. Set14/gaussian8/g2.60_n0.00/barbara@300,60,96,96 (HR pixels)')
    parser.add_argument('--methods', nargs='+', default=['cfsr', 'cfsr_delta', 'cfsr_nonblind'],
                        choices=list(robustness.METHODS), help='methods in the panels')
    parser.add_argument('--options', default=os.path.join(ROOT, 'options', 'test'))
    parser.add_argument('--out', default=os.path.join(ROOT, 'docs', 'figures'))
    add_debug_arg(parser)
    return parser


def parse_panel(text):
    try:
        where, box = text.split('@')
        set_name, setting, folder, image = where.split('/')
        box = tuple(int(v) for v in box.split(','))
        if len(box) != 4:
            raise ValueError
    except ValueError:
        raise ValueError(f'--panel {text}: expected SET/SETTING/FOLDER/IMAGE@X,Y,W,H') from None
    return set_name, setting, folder, image, box


def body(args):
    panels = [parse_panel(p) for p in args.panel]
    rows = robustness.read_rows(args.csv)
    path = os.path.join(args.out, 'robustness_psnr_vs_blur_x4.png')
    robustness_figures.plot_psnr_vs_blur(rows, args.sets, path)
    print(path)
    if os.path.exists(args.noise_csv):
        path = os.path.join(args.out, 'robustness_psnr_vs_noise_x4.png')
        robustness_figures.plot_psnr_vs_noise(robustness.read_rows(args.noise_csv), args.sets, args.noise_kernel, path)
        print(path)
    nets = robustness.load_methods(args.methods, 4, args.options) if panels else {}
    for n, (set_name, setting, folder, image, box) in enumerate(panels):
        cases = [c for c in robustness.find_cases([set_name], 4, args.benchmark, args.degraded, [setting])
                 if os.path.basename(c.lr_folder) == folder]
        if not cases:
            raise FileNotFoundError(f'no folder {set_name}/{setting}/x4/{folder} under {args.degraded}')
        path = os.path.join(args.out, f'robustness_panels_{n + 1}.png')
        robustness_figures.plot_panels(cases[0], image, box, args.methods, nets, 4, path)
        print(path)
    return 0


def main(argv=None):
    return run_main(body, build_parser().parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
