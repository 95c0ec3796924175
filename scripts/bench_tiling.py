"""Seam error of tiled inference: tiled vs whole-image output for several tile sizes and overlaps.

For every benchmark HR image, LR is made per the protocol (MATLAB-compatible bicubic,
``bicubic_downsample``); the network (official CFSR x4 by default) runs on the whole LR image and
then tiled, exactly as the CLI runs it (SREngine). For each (tile, overlap) the table gives, over
all images: the largest difference in 8-bit levels after rounding, the largest difference before
rounding (float, in levels), the lowest PSNR of tiled vs whole output, and the summed run time
(whole-image time in the first row). The CLI's default --tile-overlap (DEFAULT_TILE_OVERLAP in
cfsrdelta_arch/app/engine.py, with the measured numbers) was chosen from this table: at least
the smallest overlap whose max uint8 difference is <= 1 for every tile size, with a margin in the
float column.

CFSR stacks 12 blocks of 9x9 depthwise convs (theoretical receptive radius about 63 LR pixels),
but the effective radius is much smaller: the error decays quickly with the overlap.

With --degraded, the LR images come from a degraded folder of scripts/make_degraded_lr.py and the
engine is told its degradation (a non-blind network: tiles then get the image continued past its
border as the degradation model continues it, see SREngine). The last column is the mean PSNR-Y of
the output against the HR images (crop = scale), whole image in the first row.

Example (the measurement behind DEFAULT_TILE_OVERLAP; a few minutes on a desktop CPU):
  python scripts/bench_tiling.py --images ../shared/datasets/benchmark/Set14/HR --n 14
Quick check:
  python scripts/bench_tiling.py --n 1 --crop 48 --tiles 16 --overlaps 0 8
The non-blind delta on degraded Set14 (README, "Degraded inputs"):
  python scripts/bench_tiling.py --opt options/test/test_CFSRDelta_NonBlind_x4.yml --n 14 --tiles 64 48 \
      --overlaps 32 --degraded datasets/degraded/Set14/classical/x4/k4_n0.00
"""
import argparse
import math
import os
import time


import numpy as np

import cfsrdelta_arch  # noqa: F401  (registers everything; must precede basicsr imports)
from basicsr.metrics import calculate_psnr

from cfsrdelta_arch.app.cli import add_model_args, check_model_args, engine_from_args
from cfsrdelta_arch.app.engine import Degradation
from cfsrdelta_arch.data.degradations import read_degradation
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from cfsrdelta_arch.data.lr_generation import bicubic_downsample, list_images, mod_crop, read_image_color
from cfsrdelta_arch.utils.inference import DEFAULT_TILE_OVERLAP
from cfsrdelta_arch.utils.tables import markdown_table


def psnr_uint8(a, b):
    """PSNR (dB) between two uint8 arrays; inf when identical."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def load_lr_images(folder, n, scale, crop=0, degraded=None):
    """(name, LR RGB uint8 (h, w, 3), HR BGR uint8 (s*h, s*w, 3)) of the first ``n`` images in HR
    ``folder``: the protocol's bicubic LR, or the image of the same name in the ``degraded`` LR folder;
    optionally center-cropped to ``crop`` x ``crop`` LR pixels (the HR with it)."""
    images = []
    for path in list_images(folder)[:n]:
        hr = mod_crop(read_image_color(path), scale)
        stem = os.path.splitext(os.path.basename(path))[0]
        lr = (read_image_color(os.path.join(degraded, stem + '.png')) if degraded  # make_degraded_lr writes PNG
              else bicubic_downsample(hr, scale))[..., ::-1]
        if crop:
            top, left = max((lr.shape[0] - crop) // 2, 0), max((lr.shape[1] - crop) // 2, 0)
            lr = lr[top:top + crop, left:left + crop]
            hr = hr[scale * top:scale * (top + crop), scale * left:scale * (left + crop)]
        images.append((os.path.basename(path), np.ascontiguousarray(lr), hr))
    return images


def timed_sr(engine, lr):
    """(float SR (1, 3, s*h, s*w) in [0, 1], seconds) of one RGB uint8 LR image."""
    start = time.perf_counter()
    sr = engine.sr_tensor(image_to_tensor(lr))
    return sr, time.perf_counter() - start


def psnr_y_to_hr(images, outputs, scale):
    """Mean PSNR-Y (crop = scale) of the float SR ``outputs`` against the images' HR."""
    return float(np.mean([calculate_psnr(tensor_to_image(sr, bgr=True), hr, scale, test_y_channel=True)
                          for (_, _, hr), sr in zip(images, outputs)]))


def measure(engine, images, tiles, overlaps):
    """Rows (tile, overlap, max uint8 diff, max float diff in levels, min PSNR vs whole, seconds, PSNR-Y vs HR)."""
    engine.tile_size = None
    whole = [timed_sr(engine, lr) for _, lr, _ in images]
    rows = [('whole', '-', 0, 0.0, math.inf, sum(t for _, t in whole),
             psnr_y_to_hr(images, [sr for sr, _ in whole], engine.scale))]
    for tile in tiles:
        for overlap in overlaps:
            engine.tile_size, engine.tile_overlap = tile, overlap
            max_u8, max_f, min_psnr, seconds, outputs = 0, 0.0, math.inf, 0.0, []
            for (_, lr, _), (ref, _) in zip(images, whole):
                sr, t = timed_sr(engine, lr)
                seconds += t
                outputs.append(sr)
                a, b = tensor_to_image(sr), tensor_to_image(ref)
                max_u8 = max(max_u8, int(np.abs(a.astype(np.int16) - b).max()))
                max_f = max(max_f, float((sr - ref).abs().max()) * 255)
                min_psnr = min(min_psnr, psnr_uint8(a, b))
            rows.append((tile, overlap, max_u8, max_f, min_psnr, seconds, psnr_y_to_hr(images, outputs, engine.scale)))
    return rows


def format_table(rows):
    """Markdown table of :func:`measure`'s rows (tile None: whole-image inference)."""
    return markdown_table(['tile', 'overlap', 'max abs diff (8-bit)', 'max abs diff (float, levels)',
                           'min PSNR vs whole dB', 'time s', 'mean PSNR-Y vs HR dB'],
                          [[tile, overlap, u8, f'{fl:.3f}', f'{psnr:.2f}', f'{sec:.2f}', f'{hr_psnr:.4f}']
                           for tile, overlap, u8, fl, psnr, sec, hr_psnr in rows])


def recommended_overlap(rows):
    """Smallest overlap with max uint8 difference <= 1 for every tile size measured (None if none)."""
    by_overlap = {}
    for tile, overlap, u8, *_ in rows[1:]:
        by_overlap.setdefault(overlap, []).append(u8)
    ok = [o for o, diffs in sorted(by_overlap.items()) if max(diffs) <= 1]
    return ok[0] if ok else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.set_defaults(arch='CFSR', scale=4, device='cpu')  # --weights: the official CFSR x4 unless --opt
    p.add_argument('--images', default='../shared/datasets/benchmark/Set14/HR', help='folder of HR images')
    p.add_argument('--n', type=int, default=3, help='number of images (default 3)')
    p.add_argument('--crop', type=int, default=0, help='center-crop LR to this size (0: whole; for quick runs)')
    p.add_argument('--tiles', type=int, nargs='+', default=[32, 64], help='LR tile sizes')
    p.add_argument('--overlaps', type=int, nargs='+', default=[0, 4, 8, 12, 16, 24, 32], help='LR overlaps')
    p.add_argument('--degraded', metavar='FOLDER', help='LR images (named like the HR images) from this folder of '
                   'scripts/make_degraded_lr.py, its degradation given to the engine (a non-blind network)')
    args = p.parse_args(argv)
    if args.opt:
        args.arch = None
    elif args.weights is None:
        args.weights = 'weights/official/CFSR_x4.pth'
    check_model_args(p, args)
    degradation = None
    try:
        if args.degraded:
            kernel, record = read_degradation(args.degraded)
            degradation = Degradation(kernel, float(record['noise_sigma']), record['setting'])
        engine = engine_from_args(args, degradation=degradation)
    except (ValueError, OSError) as err:  # one line naming the file or option
        p.error(str(err))
    if args.degraded and int(record['scale']) != engine.scale:
        p.error(f"--degraded {args.degraded} holds x{record['scale']} LR, the network is x{engine.scale}")
    images = load_lr_images(args.images, args.n, engine.scale, args.crop, args.degraded)
    sizes = ', '.join(f'{name} {lr.shape[1]}x{lr.shape[0]}' for name, lr, _ in images)
    print(f'{engine}; LR images: {sizes}')
    rows = measure(engine, images, args.tiles, args.overlaps)
    print(format_table(rows))
    print(f'smallest overlap with max |d| <= 1 level for all tile sizes: {recommended_overlap(rows)} '
          f'(default --tile-overlap: {DEFAULT_TILE_OVERLAP})')


if __name__ == '__main__':
    main()
