"""Main job: benchmark the official CFSR and CFSR-Delta on a test set and print the table.

Uses the shipped refiner weights (weights/cfsrdelta/) over the official CFSR weights
(weights/official/, see README "Weights"). The test set is an HR folder; without one, it uses
Set5 from datasets/benchmark/Set5/HR or from ../shared/datasets/benchmark/Set5/HR beside the
checkout (LR is made from the HR per the protocol either way), else a small embedded set:
scikit-image's bundled photos (astronaut, camera, coffee, chelsea, rocket), so the job runs on a
fresh machine with no data.

Example:
  python scripts/run_benchmark.py                       # Set5 (or embedded photos), x4
  python scripts/run_benchmark.py --hr datasets/benchmark/B100/HR --scale 2 --self-ensemble
"""
import argparse
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

import cfsrdelta_arch  # noqa: F401
import cv2
import torch

from cfsrdelta_arch.app.benchmark import (BACKBONE, evaluate_images, format_cost_table, format_quality_table,
                                            load_networks, measure_cost)
from cfsrdelta_arch.data.lr_generation import list_images, read_image_color
from cfsrdelta_arch.utils.allocator import keep_freed_memory_for_reuse
from cfsrdelta_arch.utils.weights import CheckpointError

DEFAULT_HR = (os.path.join(ROOT, 'datasets', 'benchmark', 'Set5', 'HR'),  # first found is used
              os.path.join(ROOT, os.pardir, 'shared', 'datasets', 'benchmark', 'Set5', 'HR'))
EMBEDDED = ('astronaut', 'camera', 'coffee', 'chelsea', 'rocket')


def embedded_images():
    """scikit-image's bundled photos as [(name, uint8 BGR)], grayscale replicated to 3 channels."""
    from skimage import data
    images = []
    for name in EMBEDDED:
        img = getattr(data, name)()
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img[:, :, ::-1].copy()
        images.append((name, img))
    return images


def load_test_set(hr_folder):
    """(label, [(name, uint8 BGR HR)]) from ``hr_folder``, Set5 when present, else the embedded set."""
    if hr_folder is None:
        hr_folder = next((f for f in DEFAULT_HR if os.path.isdir(f)), None)
    if hr_folder is None:
        return 'embedded (scikit-image photos)', embedded_images()
    folder = os.path.normpath(hr_folder)
    label = os.path.basename(os.path.dirname(folder)) if os.path.basename(folder) == 'HR' else os.path.basename(folder)
    return label, [(os.path.basename(p), read_image_color(p)) for p in list_images(hr_folder)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--hr', help='folder of HR test images (default: Set5 from datasets/benchmark or ../shared, '
                        'else embedded photos)')
    p.add_argument('--scale', type=int, default=4, choices=[2, 3, 4])
    p.add_argument('--refiners', nargs='+', default=['BPRefineNet'],
                   help='CFSR-Delta refiners to compare (default: BPRefineNet; also: RefineNet)')
    p.add_argument('--self-ensemble', action='store_true', help='also report x8 self-ensemble (8x time)')
    p.add_argument('--repeats', type=int, default=3, help='latency repeats (default 3)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory_for_reuse()  # whole-image feature maps: see utils/allocator.py
    torch.set_grad_enabled(False)
    try:
        label, images = load_test_set(args.hr)
        backbone, deltas = load_networks(args.scale, args.refiners, os.path.join(ROOT, 'options', 'test'))
    except (OSError, CheckpointError, ValueError) as err:
        sys.exit(f'error: {err}')
    print(f'Test set: {label} ({len(images)} images), x{args.scale}, CPU threads: {torch.get_num_threads()}')
    quality = {label: evaluate_images(images, args.scale, backbone, deltas, 'evaluating', args.self_ensemble)}
    modes = ('single', 'x8') if args.self_ensemble else ('single',)
    print('\nPSNR / SSIM (Y channel, crop_border = scale):')
    print(format_quality_table(quality, [label], [BACKBONE, *deltas], modes))
    print('\nCost for a 1280x720 output:')
    print(format_cost_table(measure_cost(args.scale, backbone, deltas, args.repeats)))


if __name__ == '__main__':
    main()
