"""Overlapping sub-images of large training images (DIV2K, Flickr2K), HR and LR aligned: the work of
scripts/extract_subimages.py, whose help describes the grid convention and the output layout.

The grid is laid once on the HR image (:func:`crop_grid`) and the LR crop of scale s is the HR crop
divided by s (:func:`extract_one`). The output folder is built whole and put in place at the end
(:func:`cfsrdelta_arch.data.builder.staged_folder`).
"""
import math
import os
from functools import partial
from typing import NamedTuple

import cv2

from cfsrdelta_arch.data.builder import check_apart, no_progress, run_tasks, staged_folder
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
        Result: never raises for a bad image; the error, naming the file, is in ``Result.error``.
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
    except (OSError, ValueError) as err:  # their messages name the file
        return Result(hr_path, 0, error=str(err))
    except cv2.error as err:
        return Result(hr_path, 0, error=f'{hr_path}: {err}')


def check_geometry(crop_size, step, thresh_size, scales):
    """Raise ValueError unless the crop geometry is positive and divisible by every LR scale."""
    if crop_size <= 0 or step <= 0 or thresh_size < 0:
        raise ValueError(f'need --crop-size > 0, --step > 0, --thresh-size >= 0; got {crop_size}, {step}, '
                         f'{thresh_size}')
    if any(s < 1 for s in scales):
        raise ValueError(f'--scales must be positive, got {scales}')
    multiple = math.lcm(1, *scales)
    if crop_size % multiple or step % multiple:
        raise ValueError(f'--crop-size ({crop_size}) and --step ({step}) must be multiples of {multiple} '
                         f'so that LR crops of scales {scales} stay aligned')


def extract_subimages(hr_folder, lr_folders, scales, out, crop_size=480, step=240, thresh_size=0,
                      compress_level=3, lr_name='{name}x{scale}', workers=1, overwrite=False,
                      progress=no_progress, on_result=None):
    """Cut every image of ``hr_folder`` (and its LR images) into sub-images under ``out``.

    Everything that can be checked before the work is (geometry, folders, LR files for every HR
    image, ``out`` apart from the inputs, an existing ``out`` without ``overwrite``) and raises
    OSError/ValueError with one line. Unreadable or mismatched images are not fatal: they end up
    in the returned results with their error, and the other images' sub-images are kept.

    Args:
        lr_folders (list[str]): one LR folder per entry of ``scales``.
        lr_name (str): LR file stem from the HR stem, e.g. '{name}x{scale}'.
        workers (int): processes (1: this one); memory stays at a few images per worker.
        on_result (callable | None): called with each :class:`Result` as it arrives.

    Returns:
        list[Result]: one per HR image, in sorted order.
    """
    check_geometry(crop_size, step, thresh_size, scales)
    hr_paths = list_images(hr_folder)
    lr_paths = match_lr_images(hr_paths, lr_folders, scales, lr_name)
    check_apart(out, '--out', [('--hr', hr_folder)] + [('--lr', f) for f in lr_folders])
    results = []
    with staged_folder(out, overwrite) as staging:
        for folder in [os.path.join(staging, 'HR')] + [lr_folder_of(staging, s) for s in scales]:
            os.makedirs(folder)
        settings = Settings(staging, crop_size, step, thresh_size, compress_level)
        tasks = run_tasks(partial(extract_one, settings), zip(hr_paths, lr_paths), workers)
        for res in progress(tasks, total=len(hr_paths), desc='sub-images'):
            results.append(res)
            if on_result:
                on_result(res)
    return results
