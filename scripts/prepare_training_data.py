"""Prepare a training set and a held-out validation split from HR folders (e.g. T91 + BSD200).

Writes, under --out:
  train/HR/<name>.png, val/HR/<name>.png      HR mod-cropped to a multiple of every scale
  {train,val}/LR_bicubic/X<s>/<name>x<s>.png  LR per protocol (MATLAB-compatible bicubic)
Every --val-every-th image of each source (in sorted order) goes to val/, so checkpoints are
selected on training-distribution images and never on a benchmark test set.

--out is built whole and put in place at the end: an existing --out is refused unless --overwrite
is given, which rebuilds it from scratch (caches inside it included); an interrupted run leaves
the old --out or none. --out may not be, lie inside or contain a source folder.

Example:
  python scripts/prepare_training_data.py --sources ../shared/datasets/train/T91 \\
      ../shared/datasets/train/BSD200 --out datasets/train291
"""
import argparse
import os
import sys

from tqdm import tqdm

from cfsrdelta_arch.data.training_split import prepare_training_data


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
    p.add_argument('--overwrite', action='store_true', help='rebuild an existing --out from scratch')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        train, val, skipped = prepare_training_data(args.sources, args.out, args.scales, args.val_every,
                                                    args.min_size, args.overwrite, tqdm)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    if skipped:
        print(f'skipped {len(skipped)} images smaller than {args.min_size} px: '
              + ', '.join(os.path.basename(p) for p in skipped))
    print(f'{len(train)} training and {len(val)} validation images under {args.out}')


if __name__ == '__main__':
    main()
