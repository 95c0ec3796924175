"""LR generation per ../shared/docs/protocol.md, written once for benchmarks, training data and demos.

HR -> mod-crop to a multiple of the scale -> MATLAB-compatible bicubic with antialiasing
(``basicsr.utils.matlab_functions.imresize``) -> round like MATLAB (floor(x + 0.5)) -> uint8.
OpenCV's INTER_CUBIC is not equivalent and must not be used for evaluation data.
"""
import numpy as np
from basicsr.utils.matlab_functions import imresize


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
