"""Training-free back-projection on a held-out split: how much consistency with the LR alone gains.

For every image of a split with cached SR_base (scripts/cache_backbone_outputs.py), applies
``steps`` iterations of ``x <- x + U(r(x))`` (cfsrdelta_arch/archs/back_projection.py; D, U:
MATLAB bicubic down / up) to SR_base, with the plain residual ``r = LR - D(x)`` and with the
saturation-aware one (one-sided where the LR is 0 or 255), and prints mean PSNR / SSIM (Y,
crop = scale) against the HR for each setting. No weights are learned, so the split is only
measured; run it on the validation split (never a benchmark set) to choose settings.

Example (the comparison in docs/experiments.md):
  python scripts/bench_back_projection.py --split datasets/train291/val --scale 4 --steps 0 1 2 3 5
"""
import argparse
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))

import cfsrdelta_arch  # noqa: F401  (installs the basicsr compat shim)
import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim

from cfsrdelta_arch.data.paired_cached_base_dataset import PairedCachedBaseDataset
from cfsrdelta_arch.archs.back_projection import BackProjection
from cfsrdelta_arch.utils.image_io import tensor_to_image
from cfsrdelta_arch.utils.tables import markdown_table


def load_split(split, scale, backbone):
    """PairedCachedBaseDataset over ``split``/{HR, LR_bicubic/X<s>, SRbase_<backbone>_x<s>} (val mode)."""
    opt = {'name': os.path.basename(split), 'phase': 'val', 'scale': scale, 'io_backend': {'type': 'disk'},
           'dataroot_gt': os.path.join(split, 'HR'), 'dataroot_lq': os.path.join(split, 'LR_bicubic', f'X{scale}'),
           'dataroot_base': os.path.join(split, f'SRbase_{backbone}_x{scale}'), 'filename_tmpl': f'{{}}x{scale}'}
    return PairedCachedBaseDataset(opt)


def settings(steps):
    """[(label, steps, saturation_aware)]: SR_base itself (0 steps), then plain and saturation-aware."""
    out = [('SR_base', 0, True)]
    for aware in (False, True):
        out += [(f'{"saturation-aware" if aware else "plain"}, {k} step{"s" * (k != 1)}', k, aware)
                for k in steps if k > 0]
    return out


@torch.inference_mode()
def evaluate(dataset, scale, steps, progress=print):
    """{label: (mean PSNR, mean SSIM)} over the dataset for every setting of ``settings(steps)``."""
    projections = {label: BackProjection(scale, steps=k, saturation_aware=aware)
                   for label, k, aware in settings(steps)}
    scores = {label: [] for label in projections}
    for i in range(len(dataset)):
        item = dataset[i]
        lq, base, gt = item['lq'][None], item['base'][None], tensor_to_image(item['gt'][None], bgr=True)
        for label, project in projections.items():
            sr = tensor_to_image(project(base, lq), bgr=True)
            scores[label].append((calculate_psnr(sr, gt, scale, test_y_channel=True),
                                  calculate_ssim(sr, gt, scale, test_y_channel=True)))
        progress(f'\r[{i + 1}/{len(dataset)}]', end='\n' if i + 1 == len(dataset) else '', flush=True)
    return {label: tuple(np.mean(v, axis=0)) for label, v in scores.items()}


def format_table(results, baseline='SR_base'):
    """Markdown table: setting | PSNR | gain over SR_base | SSIM."""
    ref = results[baseline][0]
    return markdown_table(['setting', 'PSNR', f'vs {baseline}', 'SSIM'],
                          [[label, f'{p:.4f}', f'{p - ref:+.4f}', f'{s:.4f}'] for label, (p, s) in results.items()])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--split', default=os.path.join('datasets', 'train291', 'val'),
                   help='folder with HR/, LR_bicubic/X<s>/ and SRbase_<backbone>_x<s>/ '
                        '(default: datasets/train291/val)')
    p.add_argument('--scale', type=int, default=4, help='2, 3 or 4 (default 4)')
    p.add_argument('--backbone', default='CFSR', help='cache folder name part: SRbase_<backbone>_x<s> (default CFSR)')
    p.add_argument('--steps', type=int, nargs='+', default=[1, 2, 3, 5],
                   help='back-projection step counts to compare (default: 1 2 3 5)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        dataset = load_split(args.split, args.scale, args.backbone)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'error: {err}')
    print(f'{args.split}: {len(dataset)} images, x{args.scale}, SR_base from {args.backbone}')
    print(format_table(evaluate(dataset, args.scale, args.steps)))


if __name__ == '__main__':
    main()
