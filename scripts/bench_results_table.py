"""Benchmark table: CFSR vs CFSR + refiners, each with and without x8 self-ensemble, plus cost.

For every scale and benchmark set, each HR image is mod-cropped and downsampled per the protocol
(MATLAB-compatible bicubic), the backbone runs once on each of the 8 flip/transpose variants of
the LR, and every refiner reuses those 8 outputs: "single" uses the identity variant only,
"x8" averages all 8 (mapped back), exactly what ``val.self_ensemble: true`` computes. PSNR/SSIM
on Y, crop_border = scale (BasicSR's calculate_psnr/ssim).

The cost table gives parameters, conv MACs for a 1280x720 output and CPU latency relative to the
backbone alone, measured side by side in this process (median over --repeats runs, interleaved),
for each method alone and with x8 self-ensemble (median over --x8-repeats runs).

Networks come from test option files: options/test/test_CFSR_x<s>.yml for the backbone and
options/test/test_CFSRDelta_<Refiner>_x<s>.yml for each refiner in --refiners.

Example:
  python scripts/bench_results_table.py --scales 4 --datasets Set5 --refiners RefineNet BPRefineNet
"""
import argparse
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

import cfsrdelta_arch  # noqa: F401
import torch

from cfsrdelta_arch.app.benchmark import (BACKBONE, evaluate_images, format_cost_table, format_quality_table,
                                            load_networks, measure_cost)
from cfsrdelta_arch.data.lr_generation import list_images, read_image_color
from cfsrdelta_arch.utils.allocator import keep_freed_memory_for_reuse


def load_hr_folder(folder):
    """[(name, uint8 BGR image)] of a benchmark HR folder."""
    return [(os.path.basename(p), read_image_color(p)) for p in list_images(folder)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    p.add_argument('--datasets', nargs='+', default=['Set5', 'Set14', 'B100'])
    p.add_argument('--benchmark-root', default=os.path.join(ROOT, 'datasets', 'benchmark'),
                   help='folder with <Set>/HR subfolders (default: datasets/benchmark)')
    p.add_argument('--refiners', nargs='+', default=['RefineNet', 'BPRefineNet'],
                   help='refiners with options/test/test_CFSRDelta_<name>_x<s>.yml (default: RefineNet BPRefineNet)')
    p.add_argument('--options-dir', default=os.path.join(ROOT, 'options', 'test'))
    p.add_argument('--repeats', type=int, default=10, help='latency repeats per method (default 10)')
    p.add_argument('--x8-repeats', type=int, default=3,
                   help='latency repeats of the x8 self-ensemble rows (8 passes each; 0: leave them out; default 3)')
    p.add_argument('--no-quality', action='store_true', help='only the cost table (run it on an idle machine)')
    p.add_argument('--no-cost', action='store_true', help='only the PSNR/SSIM table (timing-insensitive)')
    p.add_argument('--out', help='also write the markdown tables to this file')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory_for_reuse()  # whole-image feature maps: see utils/allocator.py
    torch.set_grad_enabled(False)
    blocks = []
    for scale in args.scales:
        backbone, deltas = load_networks(scale, args.refiners, args.options_dir)
        parts = [f'### x{scale}']
        if not args.no_quality:
            quality = {d: evaluate_images(load_hr_folder(os.path.join(args.benchmark_root, d, 'HR')), scale,
                                          backbone, deltas, f'x{scale} {d}') for d in args.datasets}
            parts.append(format_quality_table(quality, args.datasets, [BACKBONE, *deltas]))
        if not args.no_cost:
            parts.append(format_cost_table(measure_cost(scale, backbone, deltas, args.repeats, x8_repeats=args.x8_repeats)))
        blocks.append('\n\n'.join(parts))
        print(blocks[-1] + '\n', flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n\n'.join(blocks) + '\n')


if __name__ == '__main__':
    main()
