"""Prepare a training set and a held-out validation split from HR folders (e.g. T91 + BSD200).

Writes, under --out:
  train/HR/<name>.png, val/HR/<name>.png      HR mod-cropped to a multiple of every scale
  {train,val}/LR_bicubic/X<s>/<name>x<s>.png  LR per protocol (MATLAB-compatible bicubic)
Every --val-every-th image of each source (in sorted order) goes to val/, so checkpoints are
selected on training-distribution images and never on a benchmark test set.

Example:
  python scripts/prepare_training_data.py --sources ../shared/datasets/train/T91 \\
      ../shared/datasets/train/BSD200 --out datasets/train291
"""
import argparse
import math
import os
import sys


from cfsrdelta_arch.utils.compat import install_functional_tensor_alias

install_functional_tensor_alias()
import cv2

from cfsrdelta_arch.data.lr_generation import list_images, mod_crop, read_image_color, write_lr_images


def split_sources(sources, val_every, min_size=0):
    """Return (train_paths, val_paths, skipped): every ``val_every``-th image of each source is held
    out; images with a side shorter than ``min_size`` HR pixels are skipped (too small for a patch)."""
    train, val, skipped, seen = [], [], [], {}
    for folder in sources:
        for i, path in enumerate(list_images(folder)):
            name = os.path.splitext(os.path.basename(path))[0]
            if name in seen:
                raise ValueError(f'image name {name} appears in {seen[name]} and {path}; rename one')
            seen[name] = path
            if min_size and min(read_image_color(path).shape[:2]) < min_size:
                skipped.append(path)
                continue
            (val if val_every and i % val_every == val_every - 1 else train).append(path)
    return train, val, skipped


def write_split(paths, root, scales, label):
    """Write mod-cropped HR copies and their LR images for one split under ``root``."""
    hr_dir = os.path.join(root, 'HR')
    os.makedirs(hr_dir, exist_ok=True)
    multiple = math.lcm(*scales)
    hr_paths = []
    for i, path in enumerate(paths):
        out = os.path.join(hr_dir, os.path.splitext(os.path.basename(path))[0] + '.png')
        if not cv2.imwrite(out, mod_crop(read_image_color(path), multiple)):
            raise OSError(f'cannot write {out}')
        hr_paths.append(out)
        print(f'\r[{label}] HR {i + 1}/{len(paths)}', end='', flush=True)
    print()
    write_lr_images(hr_paths, root, scales,
                    lambda i, n, p: print(f'\r[{label}] LR {i}/{n}', end='\n' if i == n else '', flush=True))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sources', nargs='+', required=True, help='HR image folders to combine')
    p.add_argument('--out', required=True, help='output folder (gets train/ and val/)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4], help='LR scales (default: 2 3 4)')
    p.add_argument('--val-every', type=int, default=10,
                   help='hold out every N-th image of each source for validation (default 10; 0: none)')
    p.add_argument('--min-size', type=int, default=108,
                   help='skip images whose shorter side is below this many HR pixels, so that every image '
                        'fits a 96-pixel training patch after mod-cropping (default 108; 0: keep all)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        train, val, skipped = split_sources(args.sources, args.val_every, args.min_size)
        if skipped:
            print(f'skipped {len(skipped)} images smaller than {args.min_size} px: '
                  + ', '.join(os.path.basename(p) for p in skipped))
        write_split(train, os.path.join(args.out, 'train'), args.scales, 'train')
        if val:
            write_split(val, os.path.join(args.out, 'val'), args.scales, 'val')
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    print(f'{len(train)} training and {len(val)} validation images under {args.out}')


if __name__ == '__main__':
    main()
