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
Images are processed one at a time per worker (--workers processes), so memory stays at a few
images whatever the folder size. Unreadable or mismatched images are reported and skipped; the
exit status is non-zero at the end if any failed.

Example (DIV2K x4, 480 px HR sub-images every 240 px):
  python scripts/extract_subimages.py --hr datasets/DIV2K/DIV2K_train_HR \\
      --lr datasets/DIV2K/DIV2K_train_LR_bicubic/X4 --scales 4 --out datasets/DIV2K_sub --workers 8
"""
import argparse
import math
import multiprocessing
import os
import sys
from functools import partial
from typing import NamedTuple


from cfsrdelta_arch.utils.compat import install_functional_tensor_alias

install_functional_tensor_alias()
import cv2

from cfsrdelta_arch.data.lr_generation import list_images, mod_crop, read_image_color


class Settings(NamedTuple):
    """What every worker needs besides the image paths."""
    out_root: str
    crop_size: int  # HR pixels
    step: int  # HR pixels
    thresh_size: int  # HR pixels
    compress_level: int  # PNG compression 0..9


class Result(NamedTuple):
    """Outcome of one HR image: sub-images written, or why none were."""
    hr_path: str
    crops: int
    error: str = ''  # non-empty: the image failed
    note: str = ''  # non-empty: skipped on purpose (e.g. smaller than the crop)


def crop_starts(length, crop_size, step, thresh_size):
    """Start offsets of the crops along one axis of ``length`` pixels.

    0, step, 2*step, ... while a whole crop fits, plus ``length - crop_size`` when more than
    ``thresh_size`` pixels would otherwise stay uncovered. Empty when ``length < crop_size``.
    """
    if length < crop_size:
        return []
    starts = list(range(0, length - crop_size + 1, step))
    if length - (starts[-1] + crop_size) > thresh_size:
        starts.append(length - crop_size)
    return starts


def crop_grid(height, width, crop_size, step, thresh_size):
    """Top-left corners (y, x) of all crops of an image, row-major."""
    return [(y, x) for y in crop_starts(height, crop_size, step, thresh_size)
            for x in crop_starts(width, crop_size, step, thresh_size)]


def subimage_name(stem, index, scale=None):
    """File name of sub-image ``index`` (1-based): '<stem>_s001.png', or '<stem>_s001x<s>.png' for LR."""
    return f'{stem}_s{index:03d}' + (f'x{scale}' if scale else '') + '.png'


def lr_folder_of(out_root, scale):
    """Output folder of the LR sub-images of one scale."""
    return os.path.join(out_root, 'LR_bicubic', f'X{scale}')


def match_lr_images(hr_paths, lr_folders, scales, name_tmpl):
    """For each HR path, the dict {scale: LR path}; raises FileNotFoundError listing missing LR files.

    Args:
        name_tmpl (str): LR file stem from the HR stem, e.g. '{name}x{scale}' (EDSR/DIV2K naming).
    """
    by_stem = [{os.path.splitext(os.path.basename(p))[0]: p for p in list_images(f)} for f in lr_folders]
    pairs, missing = [], []
    for hr in hr_paths:
        stem = os.path.splitext(os.path.basename(hr))[0]
        lrs = {}
        for folder, index, s in zip(lr_folders, by_stem, scales):
            lr_stem = name_tmpl.format(name=stem, scale=s)
            if lr_stem in index:
                lrs[s] = index[lr_stem]
            else:
                missing.append(os.path.join(folder, lr_stem + '.*'))
        pairs.append(lrs)
    if missing:
        more = f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''
        raise FileNotFoundError('no LR image for some HR images: ' + ', '.join(missing[:5]) + more)
    return pairs


def read_aligned(hr_path, lr_paths):
    """Read one HR image and its LR images, checking that LR x<s> is (H // s, W // s).

    Returns (hr, {scale: lr}), uint8 BGR (H, W, 3) and (H // s, W // s, 3). Raises OSError/ValueError.
    """
    hr = read_image_color(hr_path)
    lrs = {}
    for s, path in lr_paths.items():
        lr = read_image_color(path)
        expected = (hr.shape[0] // s, hr.shape[1] // s)
        if lr.shape[:2] != expected:
            raise ValueError(f'{path} is {lr.shape[0]}x{lr.shape[1]}, expected {expected[0]}x{expected[1]} '
                             f'(x{s} LR of the {hr.shape[0]}x{hr.shape[1]} HR image)')
        lrs[s] = lr
    return hr, lrs


def write_png(path, img, compress_level):
    if not cv2.imwrite(path, img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level]):
        raise OSError(f'cannot write {path}')


def extract_one(settings, task):
    """Worker: write all sub-images of one HR image (and its LR images).

    Args:
        settings (Settings): crop geometry and output folder.
        task (tuple[str, dict[int, str]]): HR path and {scale: LR path}.

    Returns:
        Result: never raises for a bad image; the error is in ``Result.error``.
    """
    hr_path, lr_paths = task
    try:
        hr, lrs = read_aligned(hr_path, lr_paths)
        # Crop corners must be multiples of every scale: lay the grid on the HR mod-cropped to their lcm.
        hr = mod_crop(hr, math.lcm(1, *lrs.keys()))
        grid = crop_grid(hr.shape[0], hr.shape[1], settings.crop_size, settings.step, settings.thresh_size)
        if not grid:
            return Result(hr_path, 0, note=f'{hr.shape[0]}x{hr.shape[1]} is smaller than the '
                                           f'{settings.crop_size}px crop')
        stem = os.path.splitext(os.path.basename(hr_path))[0]
        c = settings.crop_size
        for i, (y, x) in enumerate(grid, start=1):
            write_png(os.path.join(settings.out_root, 'HR', subimage_name(stem, i)), hr[y:y + c, x:x + c],
                      settings.compress_level)
            for s, lr in lrs.items():
                write_png(os.path.join(lr_folder_of(settings.out_root, s), subimage_name(stem, i, s)),
                          lr[y // s:(y + c) // s, x // s:(x + c) // s], settings.compress_level)
        return Result(hr_path, len(grid))
    except (OSError, ValueError, cv2.error) as err:
        return Result(hr_path, 0, error=str(err))


def run_tasks(func, tasks, workers):
    """Yield ``func(task)`` for every task, in completion order, using ``workers`` processes (1: in-process)."""
    if workers <= 1:
        yield from map(func, tasks)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap_unordered(func, tasks)


def check_geometry(crop_size, step, thresh_size, scales):
    """Raise ValueError unless the crop geometry is positive and divisible by every LR scale."""
    if crop_size <= 0 or step <= 0 or thresh_size < 0:
        raise ValueError(f'need --crop-size > 0, --step > 0, --thresh-size >= 0; got {crop_size}, {step}, '
                         f'{thresh_size}')
    multiple = math.lcm(1, *scales)
    if crop_size % multiple or step % multiple:
        raise ValueError(f'--crop-size ({crop_size}) and --step ({step}) must be multiples of {multiple} '
                         f'so that LR crops of scales {scales} stay aligned')


def prepare_output(out_root, scales, overwrite):
    """Create the output folders; refuse to mix with sub-images of an earlier run unless ``overwrite``."""
    folders = [os.path.join(out_root, 'HR')] + [lr_folder_of(out_root, s) for s in scales]
    for folder in folders:
        if not overwrite and os.path.isdir(folder) and os.listdir(folder):
            raise FileExistsError(f'{folder} is not empty; pass --overwrite or another --out')
        os.makedirs(folder, exist_ok=True)


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
    p.add_argument('--overwrite', action='store_true', help='write into non-empty output folders')
    args = p.parse_args(argv)
    if len(args.lr) != len(args.scales):
        p.error(f'--lr has {len(args.lr)} folders but --scales has {len(args.scales)} values')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        check_geometry(args.crop_size, args.step, args.thresh_size, args.scales)
        hr_paths = list_images(args.hr)
        lr_paths = match_lr_images(hr_paths, args.lr, args.scales, args.lr_name)
        prepare_output(args.out, args.scales, args.overwrite)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')

    settings = Settings(args.out, args.crop_size, args.step, args.thresh_size, args.compress_level)
    failed, skipped, total = [], [], 0
    n = len(hr_paths)
    for i, res in enumerate(run_tasks(partial(extract_one, settings), zip(hr_paths, lr_paths), args.workers), 1):
        total += res.crops
        if res.error:
            failed.append(res)
            print(f'\nerror: {res.hr_path}: {res.error} (skipped)', file=sys.stderr, flush=True)
        elif res.note:
            skipped.append(res)
            print(f'\nnote: {res.hr_path}: {res.note} (skipped)', flush=True)
        print(f'\r[{i}/{n}] {os.path.basename(res.hr_path)}: {res.crops} sub-images   ', end='', flush=True)
    print(f'\nwrote {total} sub-images of {n - len(failed) - len(skipped)} images under {args.out}'
          + (f'; {len(skipped)} too small' if skipped else ''))
    if failed:
        sys.exit(f'error: {len(failed)} of {n} images failed: '
                 + ', '.join(os.path.basename(r.hr_path) for r in failed[:10]) + (' ...' if len(failed) > 10 else ''))


if __name__ == '__main__':
    main()
