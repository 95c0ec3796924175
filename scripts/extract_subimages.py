"""Cut large training images (e.g. DIV2K, Flickr2K) into overlapping sub-images, HR and LR aligned.

Sub-image grid (the usual DIV2K convention): along each axis, crops start at 0, step, 2*step, ...
as long as a whole crop fits; if more than --thresh-size pixels remain uncovered after the last
one, one more crop is added flush with the bottom/right border. An image smaller than the crop in
either direction gives no sub-images (reported, not an error).

With --lr folders (EDSR naming, e.g. X4/0001x4.png for HR 0001.png) the grid is computed once on
the HR image and the LR crop of scale s is exactly the HR crop divided by s, so pairs stay aligned
(--crop-size and --step must be multiples of every scale). Each LR image must be the protocol LR
of its HR: size (H // s, W // s).

Writes, under --out (EDSR layout, names usable with filename_tmpl '{}x<s>'):
  HR/<name>_s001.png, HR/<name>_s002.png, ...           (row-major order)
  LR_bicubic/X<s>/<name>_s001x<s>.png, ...
--out is built whole and put in place at the end: an existing --out is refused unless --overwrite
is given, which rebuilds it from scratch; an interrupted run leaves the old --out or none. --out
may not be, lie inside or contain an input folder. Images are processed one at a time per worker
(--workers processes), so memory stays at a few images whatever the folder size. Unreadable or
mismatched images are reported and skipped; the exit status is non-zero at the end if any failed.

Example (DIV2K x4, 480 px HR sub-images every 240 px):
  python scripts/extract_subimages.py --hr datasets/DIV2K/DIV2K_train_HR \\
      --lr datasets/DIV2K/DIV2K_train_LR_bicubic/X4 --scales 4 --out datasets/DIV2K_sub --workers 8
"""
import argparse
import sys

from tqdm import tqdm

from cfsrdelta_arch.data.builder import name_list
from cfsrdelta_arch.data.subimages import extract_subimages


def report(result):
    """One line (above the progress bar) for an image that failed or was skipped."""
    if result.error:
        tqdm.write(f'error: {result.error} (skipped)', file=sys.stderr)
    elif result.note:
        tqdm.write(f'note: {result.hr_path}: {result.note} (skipped)')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--hr', required=True, help='folder of HR images')
    p.add_argument('--lr', nargs='+', default=[], help='LR folders to crop alongside (one per --scales entry)')
    p.add_argument('--scales', type=int, nargs='+', default=[], help='scale of each --lr folder, e.g. 2 3 4')
    p.add_argument('--lr-name', default='{name}x{scale}',
                   help="LR file stem from the HR stem (default '{name}x{scale}': 0001.png -> 0001x4.png)")
    p.add_argument('--out', required=True, help='output folder (gets HR/ and LR_bicubic/X<s>/)')
    p.add_argument('--crop-size', type=int, default=480, help='HR sub-image size (default 480)')
    p.add_argument('--step', type=int, default=240, help='HR distance between crops (default 240)')
    p.add_argument('--thresh-size', type=int, default=0,
                   help='add a border-flush crop if more than this many HR pixels stay uncovered (default 0)')
    p.add_argument('--compress-level', type=int, default=3, choices=range(10), metavar='0..9',
                   help='PNG compression level (default 3)')
    p.add_argument('--workers', type=int, default=1, help='parallel processes (default 1)')
    p.add_argument('--overwrite', action='store_true', help='rebuild an existing --out from scratch')
    args = p.parse_args(argv)
    if len(args.lr) != len(args.scales):
        p.error(f'--lr has {len(args.lr)} folders but --scales has {len(args.scales)} values')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        results = extract_subimages(args.hr, args.lr, args.scales, args.out, args.crop_size, args.step,
                                    args.thresh_size, args.compress_level, args.lr_name, args.workers,
                                    args.overwrite, tqdm, report)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    failed = [r for r in results if r.error]
    skipped = [r for r in results if r.note]
    print(f'wrote {sum(r.crops for r in results)} sub-images of {len(results) - len(failed) - len(skipped)} '
          f'images under {args.out}' + (f'; {len(skipped)} too small' if skipped else ''))
    if failed:
        sys.exit(f'error: {len(failed)} of {len(results)} images failed: {name_list([r.hr_path for r in failed])}')


if __name__ == '__main__':
    main()
