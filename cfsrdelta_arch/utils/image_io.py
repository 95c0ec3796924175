"""Image files for inference, read and written in one place (CLI, benchmarks, tests).

In memory an image is a numpy array in one of three layouts, with the file's bit depth kept:

- (H, W): grayscale;
- (H, W, 3): RGB;
- (H, W, 4): RGBA (straight, not premultiplied, alpha);

dtype uint8 (0..255) or uint16 (0..65535, e.g. 16-bit PNG/TIFF). Channel order is RGB, not
OpenCV's BGR: the conversion happens here and nowhere else, and so does the conversion between
image arrays and network tensors (:func:`image_to_tensor`, :func:`tensor_to_image`).
"""
import os

import cv2
import numpy as np
import torch
from PIL import Image

# Formats that only store 8 bits per sample: 16-bit images are reduced (round(v / 257)) before writing.
EIGHT_BIT_ONLY = ('.jpg', '.jpeg', '.webp', '.bmp')
# Formats without an alpha channel: the alpha plane is dropped before writing.
NO_ALPHA = ('.jpg', '.jpeg')
JPEG = ('.jpg', '.jpeg')


class ImageReadError(OSError):
    """A file that is not a readable 8/16-bit gray, RGB or RGBA image; the message names the file."""


def dtype_max(dtype):
    """Largest sample value of a supported image dtype: 255 (uint8) or 65535 (uint16)."""
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise TypeError(f'unsupported image dtype {dtype} (8- or 16-bit images only)')


def to_float(img):
    """uint8/uint16 image -> float32 array of the same shape in [0, 1]."""
    return img.astype(np.float32) / dtype_max(img.dtype)


def from_float(x, dtype):
    """float array in [0, 1] (values outside are clipped) -> ``dtype`` (uint8/uint16), rounded."""
    peak = dtype_max(dtype)
    return np.clip(np.round(x * peak), 0, peak).astype(dtype)


def image_to_tensor(img, bgr=False):
    """uint8/uint16 (H, W, 3) image -> float32 RGB tensor (1, 3, H, W) in [0, 1].

    ``bgr``: the array is in OpenCV's BGR order (cv2.imread, BasicSR's data pipeline).
    """
    x = to_float(img[..., ::-1] if bgr else img)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def tensor_to_image(x, dtype=np.uint8, bgr=False):
    """float RGB tensor (1, 3, H, W) or (3, H, W), any device -> (H, W, 3) ``dtype`` image, clipped
    to [0, 1] and rounded like BasicSR's tensor2img; BGR order when ``bgr``."""
    img = x.reshape(x.shape[-3:]).detach().float().cpu().numpy().transpose(1, 2, 0)
    return from_float(img[..., ::-1] if bgr else img, dtype)


def _swap_rb(img):
    """RGB(A) <-> BGR(A); grayscale is returned unchanged."""
    if img.ndim == 3:
        return np.ascontiguousarray(img[..., [2, 1, 0, 3][:img.shape[2]]])
    return img


def read_image(path):
    """Read an image file as gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4), uint8 or uint16.

    JPEGs are read with their EXIF orientation applied; other files exactly as stored (alpha and
    16 bits kept). Paths with non-ASCII characters work on every platform.

    Raises:
        ImageReadError: missing, empty, corrupt or unsupported file (one-line message naming it).
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f'{path}: cannot open ({err.strerror or err})') from None
    if data.size == 0:
        raise ImageReadError(f'{path}: empty file')
    jpeg = os.path.splitext(path)[1].lower() in JPEG
    try:
        img = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR if jpeg else cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise ImageReadError(f'{path}: not a readable image (corrupt or unsupported format)')
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f'{path}: {img.dtype} samples are not supported (8- or 16-bit images only)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] not in (3, 4):
        raise ImageReadError(f'{path}: {img.shape[2]} channels are not supported (gray, RGB or RGBA only)')
    return _swap_rb(img)


def image_size(path):
    """(H, W) of an image file from its header alone (PIL opens lazily), e.g. to check a dataset's
    pairs before any image is decoded.

    Raises:
        ImageReadError: missing file or a header PIL cannot identify (one line naming the file).
    """
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except OSError as err:  # UnidentifiedImageError is an OSError
        raise ImageReadError(f'{path}: cannot read image header ({err.strerror or err})') from None


def fit_to_format(img, ext):
    """Adapt an image to what the file format ``ext`` ('.png', '.jpg', ...) can store.

    8-bit-only formats get uint16 reduced to uint8 (round(v / 257)); JPEG drops the alpha plane.
    Everything else is returned unchanged.
    """
    ext = ext.lower()
    if ext in NO_ALPHA and img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if ext in EIGHT_BIT_ONLY and img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)
    return img


def write_image(path, img):
    """Write a gray/RGB/RGBA uint8/uint16 image; the format follows the file extension.

    The image is first adapted with :func:`fit_to_format`; missing parent folders are created.

    Raises:
        OSError: the format is unknown to OpenCV or the file cannot be written.
    """
    ext = os.path.splitext(path)[1].lower()
    try:
        ok, buf = cv2.imencode(ext, _swap_rb(fit_to_format(img, ext)))
    except cv2.error:
        ok = False
    if not ok:
        raise OSError(f'{path}: cannot encode a {img.dtype} {img.shape} image as {ext or "(no extension)"}')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buf.tofile(path)
