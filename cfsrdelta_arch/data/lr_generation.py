"""LR generation of the standard bicubic SR benchmark protocol (README, "Data"), written once for
benchmarks, training data and demos.

HR -> mod-crop to a multiple of the scale -> MATLAB-compatible bicubic with antialiasing
(``basicsr.utils.matlab_functions.imresize``) -> round like MATLAB (floor(x + 0.5)) -> uint8.
OpenCV's INTER_CUBIC is not equivalent and must not be used for evaluation data.
"""
import os

import cv2
import numpy as np
from basicsr.utils.matlab_functions import imresize

from cfsrdelta_arch.utils.image_io import image_size


def mod_crop(img, scale):
    """Drop the bottom/right rows and columns so that H and W are multiples of ``scale``.

    Args:
        img (np.ndarray): (H, W) or (H, W, C) image, any dtype.
        scale (int): the SR scale.
    """
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale, ...]


def bicubic_downsample(hr, scale):
    """MATLAB-compatible bicubic downsampling of a uint8 image by 1/``scale``.

    Args:
        hr (np.ndarray): uint8 (H, W) or (H, W, C) image; H and W need not be multiples of the
            scale: the image is mod-cropped first.
        scale (int): 2, 3, 4, ...

    Returns:
        np.ndarray: uint8 (H // scale, W // scale[, C]) image.
    """
    if hr.dtype != np.uint8:
        raise TypeError(f'bicubic_downsample expects a uint8 image, got {hr.dtype}')
    hr = mod_crop(hr, scale)
    lr = imresize(hr.astype(np.float64) / 255.0, 1.0 / scale)
    return np.clip(np.floor(lr * 255.0 + 0.5), 0, 255).astype(np.uint8)


IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def list_images(folder):
    """Sorted image paths directly inside ``folder``; a clear error if it is missing or has none.

    Hidden files are not images: macOS '._name.png' metadata, and the '.name.png.*.part.png'
    temporary files of atomic writes (left only by a killed process).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'not a folder: {folder}')
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
    if not paths:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
    return paths


def check_sizes(hr_paths, scale):
    """Raise ValueError naming the first HR image with nothing left after mod-crop to ``scale`` (H or W
    below it); reads image headers only, so it runs before any LR is written."""
    for path in hr_paths:
        h, w = image_size(path)
        if h < scale or w < scale:
            raise ValueError(f'{path} is {w}x{h} (WxH), smaller than the scale {scale}: nothing is left after '
                             'mod-crop; remove it or leave that scale out of --scales')


def read_image_color(path, keep_16bit=False):
    """Read an image as BGR (H, W, 3); grayscale is replicated to 3 channels (protocol step 4).

    Returns uint8, or uint16 for a 16-bit file when ``keep_16bit`` (e.g. a cached SR_base PNG);
    without it 16-bit files are reduced to uint8.
    """
    img = cv2.imread(path, cv2.IMREAD_COLOR | (cv2.IMREAD_ANYDEPTH if keep_16bit else 0))
    if img is None:
        raise OSError(f'cannot read image: {path}')
    return img


def lr_path(out_root, stem, scale):
    """EDSR-layout path of the x``scale`` LR image of HR ``<stem>.*``: ``out_root/LR_bicubic/X<s>/<stem>x<s>.png``."""
    return os.path.join(out_root, 'LR_bicubic', f'X{scale}', f'{stem}x{scale}.png')


def write_lr_of(hr, stem, out_root, scales):
    """Write the protocol LR of one uint8 HR image (H, W, 3) for every scale at :func:`lr_path`.

    Folders are created; raises OSError naming a file that cannot be written.
    """
    for s in scales:
        out = lr_path(out_root, stem, s)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if not cv2.imwrite(out, bicubic_downsample(hr, s)):
            raise OSError(f'cannot write {out}')


def write_lr_images(hr_paths, out_root, scales, progress=None):
    """Write EDSR-layout LR images ``out_root/LR_bicubic/X<s>/<stem>x<s>.png`` for each HR image.

    Args:
        hr_paths (list[str]): HR image files.
        out_root (str): dataset folder that receives ``LR_bicubic``.
        scales (list[int]): e.g. [2, 3, 4].
        progress (callable | None): called as ``progress(i, n, path)`` after each image.

    Returns:
        int: number of LR files written.
    """
    for i, path in enumerate(hr_paths):
        write_lr_of(read_image_color(path), os.path.splitext(os.path.basename(path))[0], out_root, scales)
        if progress:
            progress(i + 1, len(hr_paths), path)
    return len(hr_paths) * len(scales)
