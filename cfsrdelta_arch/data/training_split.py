"""A training set and a held-out validation split from HR folders: the work of
scripts/prepare_training_data.py, whose help describes the layout (EDSR naming, what the train
option files read).

Every ``val_every``-th image of each source goes to val/, so checkpoints are selected on
training-distribution images and never on a benchmark test set. The whole output folder is built
apart and put in place at the end (:func:`cfsrdelta_arch.data.builder.staged_folder`), so a rebuild
with other settings never leaves an image in both splits or a file of the earlier run.
"""
import math
import os

import cv2

from cfsrdelta_arch.data.builder import check_apart, no_progress, staged_folder
from cfsrdelta_arch.data.lr_generation import list_images, mod_crop, read_image_color, write_lr_of


def split_sources(sources, val_every, min_size=0):
    """Return (train_paths, val_paths, skipped): every ``val_every``-th image of each source is held
    out (0: none); images with a side shorter than ``min_size`` HR pixels are skipped (too small
    for a training patch). Raises OSError/ValueError naming a missing folder, an unreadable image or
    a name that two sources share."""
    if val_every < 0 or min_size < 0:
        raise ValueError(f'--val-every and --min-size must be >= 0, got {val_every} and {min_size}')
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


def write_split(paths, root, scales, progress=no_progress, label=''):
    """Write mod-cropped HR copies (``root/HR``) and their LR images (``root/LR_bicubic``) of one split."""
    hr_dir = os.path.join(root, 'HR')
    os.makedirs(hr_dir, exist_ok=True)
    multiple = math.lcm(*scales)
    for path in progress(paths, total=len(paths), desc=label):
        stem = os.path.splitext(os.path.basename(path))[0]
        hr = mod_crop(read_image_color(path), multiple)
        out = os.path.join(hr_dir, stem + '.png')
        if not cv2.imwrite(out, hr):
            raise OSError(f'cannot write {out}')
        write_lr_of(hr, stem, root, scales)


def prepare_training_data(sources, out, scales, val_every=10, min_size=0, overwrite=False, progress=no_progress):
    """Build ``out`` (train/ and val/) from the HR folders ``sources``; see the module docstring.

    Refuses, before any work, an ``out`` that overlaps a source, and an existing ``out`` unless
    ``overwrite`` (then it is rebuilt from scratch).

    Returns:
        tuple: (train_paths, val_paths, skipped_paths) of the source images.
    """
    if min(scales) < 1:
        raise ValueError(f'--scales must be positive, got {scales}')
    check_apart(out, '--out', [('--sources', folder) for folder in sources])
    with staged_folder(out, overwrite) as staging:
        train, val, skipped = split_sources(sources, val_every, min_size)
        if not train:
            raise ValueError(f'no training images left in {", ".join(sources)} (--val-every {val_every}, '
                             f'--min-size {min_size})')
        write_split(train, os.path.join(staging, 'train'), scales, progress, 'train')
        if val:
            write_split(val, os.path.join(staging, 'val'), scales, progress, 'val')
    return train, val, skipped
