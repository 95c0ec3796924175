"""Image files for inference, read and written in one place (CLI, benchmarks, tests).

In memory an image is a numpy array in one of four layouts, with the file's bit depth kept:

- (H, W): grayscale;
- (H, W, 2): gray + alpha (PNG colour type 4; OpenCV decodes it as BGRA with B = G = R, so
  :func:`read_image` tells it from RGBA by the PNG header);
- (H, W, 3): RGB;
- (H, W, 4): RGBA (straight, not premultiplied, alpha);

dtype uint8 (0..255) or uint16 (0..65535, e.g. 16-bit PNG/TIFF). Channel order is RGB, not
OpenCV's BGR: the conversion happens here and nowhere else, and so does the conversion between
image arrays and network tensors (:func:`image_to_tensor`, :func:`tensor_to_image`).

Files are written atomically (a temporary file renamed over the target), so an interrupted or
killed run leaves no truncated image.
"""
import os
import warnings

import cv2
import numpy as np
import torch
from PIL import Image

from cfsrdelta_arch.utils.fileio import atomic_path

# Formats that only store 8 bits per sample: 16-bit images are reduced (round(v / 257)) before writing.
EIGHT_BIT_ONLY = ('.jpg', '.jpeg', '.webp', '.bmp')
# Formats without an alpha channel: the alpha plane is dropped before writing.
NO_ALPHA = ('.jpg', '.jpeg')
JPEG = ('.jpg', '.jpeg')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_GRAY_ALPHA = 4  # PNG colour type of gray + alpha (IHDR byte 25 of the file)


class ImageReadError(OSError):
    """A file that is not a readable 8/16-bit gray, gray+alpha, RGB or RGBA image; the message names
    the file."""


def dtype_max(dtype):
    """Largest sample value of a supported image dtype: 255 (uint8) or 65535 (uint16)."""
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise TypeError(f'unsupported image dtype {dtype} (8- or 16-bit images only)')


def to_float(img):
    """uint8/uint16 image -> float32 array of the same shape in [0, 1]; a float image (already in
    [0, 1], e.g. from the Python API) -> float32 unchanged in value."""
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float32)
    return img.astype(np.float32) / dtype_max(img.dtype)


def from_float(x, dtype):
    """float array in [0, 1] (values outside are clipped) -> ``dtype``: uint8/uint16 rounded, a float
    dtype as is (no rounding)."""
    if np.issubdtype(dtype, np.floating):
        return np.clip(x, 0, 1).astype(dtype)
    peak = dtype_max(dtype)
    return np.clip(np.round(x * peak), 0, peak).astype(dtype)


def image_tensor_view(img):
    """Image (H, W) or (H, W, C) of any dtype -> tensor (1, C, H, W) of the same dtype sharing the
    array's memory (no copy; an array with negative strides is copied first).

    Tiled inference keeps the LR image like this, as the file's integers, and converts one tile at
    a time with :func:`tile_to_float`, so no float copy of the whole image is ever made.
    """
    img = img[..., None] if img.ndim == 2 else img
    if any(stride < 0 for stride in img.strides):  # e.g. img[..., ::-1]: torch has no negative strides
        img = np.ascontiguousarray(img)
    with warnings.catch_warnings():  # a read-only array (np.asarray of a PIL image): the view is never written
        warnings.filterwarnings('ignore', message='The given NumPy array is not writable')
        return torch.from_numpy(img).permute(2, 0, 1)[None]


def tile_to_float(x, bgr=False):
    """(Part of) an image tensor (N, C, h, w), uint8/uint16 or float in [0, 1], any device -> float32
    in [0, 1], channels in RGB order (``bgr``: ``x`` is in OpenCV's BGR order)."""
    x = x.float() / torch.iinfo(x.dtype).max if not x.is_floating_point() else x.float()
    return x.flip(1) if bgr else x


def image_to_tensor(img, bgr=False):
    """uint8/uint16 (or float in [0, 1]) image (H, W) or (H, W, C) -> float32 tensor (1, C, H, W) in
    [0, 1] (C = 1 for gray), contiguous.

    ``bgr``: the array is in OpenCV's BGR order (cv2.imread, BasicSR's data pipeline); the tensor
    is RGB.
    """
    return tile_to_float(image_tensor_view(img), bgr).contiguous()


def tensor_to_image(x, dtype=np.uint8, bgr=False):
    """float tensor (1, C, H, W) or (C, H, W), any device -> ``dtype`` image (H, W, C), or (H, W)
    when C = 1; clipped to [0, 1] and rounded like BasicSR's tensor2img; BGR order when ``bgr``."""
    img = x.reshape(x.shape[-3:]).detach().float().cpu().numpy().transpose(1, 2, 0)
    img = from_float(img[..., ::-1] if bgr else img, dtype)
    return img[..., 0] if img.shape[2] == 1 else img


def _swap_rb(img):
    """RGB(A) <-> BGR(A); gray and gray+alpha are returned unchanged."""
    if img.ndim == 3 and img.shape[2] >= 3:
        return np.ascontiguousarray(img[..., [2, 1, 0, 3][:img.shape[2]]])
    return img


def _is_png_gray_alpha(data):
    """Whether the file bytes ``data`` (uint8 array) are a PNG of colour type gray + alpha."""
    return data[:8].tobytes() == PNG_SIGNATURE and data.size > 25 and data[25] == PNG_GRAY_ALPHA


def read_image(path, bgr=False):
    """Read an image file as gray (H, W), gray+alpha (H, W, 2), RGB (H, W, 3) or RGBA (H, W, 4),
    uint8 or uint16; ``bgr``: color in OpenCV's BGR(A) order instead (as decoded: no copy).

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
    if img.ndim == 3 and img.shape[2] == 4 and _is_png_gray_alpha(data):
        img = np.ascontiguousarray(img[..., [0, 3]])  # B = G = R: one of them is the gray plane
    if img.ndim == 3 and img.shape[2] not in (2, 3, 4):
        raise ImageReadError(f'{path}: {img.shape[2]} channels are not supported (gray, RGB or RGBA, '
                             'with or without alpha)')
    return img if bgr else _swap_rb(img)


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

    8-bit-only formats get uint16 reduced to uint8 (round(v / 257)); JPEG drops the alpha plane
    (gray+alpha becomes gray). Gray+alpha stays as it is for PNG (8 or 16 bits, written with
    pypng: OpenCV encodes 1, 3 or 4 channels only) and becomes RGBA with R = G = B for every other
    format. Everything else is returned unchanged.
    """
    ext = ext.lower()
    if ext in NO_ALPHA and img.ndim == 3 and img.shape[2] in (2, 4):
        img = img[..., 0] if img.shape[2] == 2 else img[..., :3]
    if ext in EIGHT_BIT_ONLY and img.dtype == np.uint16:
        img = np.round(img / 257.0).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 2 and ext != '.png':
        img = img[..., [0, 0, 0, 1]]
    return img


def _write_png_gray_alpha(path, img):
    """Write a gray+alpha (H, W, 2) uint8/uint16 image as a PNG of colour type 4, row by row."""
    import png  # pypng: the PNG writer that has 16-bit gray+alpha (OpenCV and Pillow do not)
    height, width = img.shape[:2]
    big_endian = img.dtype.newbyteorder('>')  # PNG stores 16-bit samples big-endian
    writer = png.Writer(width, height, greyscale=True, alpha=True, bitdepth=8 * img.dtype.itemsize)
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        writer.write_packed(f, (row.astype(big_endian).tobytes() for row in img.reshape(height, -1)))


def write_image(path, img, bgr=False):
    """Write a gray/gray+alpha/RGB/RGBA uint8/uint16 image atomically; the format follows the
    file extension.

    The image is first adapted with :func:`fit_to_format`; missing parent folders are created.
    ``bgr``: a colour image is in OpenCV's BGR(A) order. It is what OpenCV encodes, so no swapped
    copy is made; and OpenCV encodes straight into the (temporary) file, so no encoded copy is held
    either: writing needs no memory beyond ``img`` (what keeps large tiled outputs cheap).

    Raises:
        OSError: the format is unknown to OpenCV or the file cannot be written.
    """
    ext = os.path.splitext(path)[1].lower()
    img = fit_to_format(img, ext)
    if img.ndim == 3 and img.shape[2] == 2:
        _write_png_gray_alpha(path, img)
        return
    with atomic_path(path, suffix=f'.part{ext}') as tmp:
        try:
            ok = cv2.imwrite(tmp, img if bgr else _swap_rb(img))
        except cv2.error:
            ok = False
        if not ok:
            raise OSError(f'{path}: cannot encode a {img.dtype} {img.shape} image as {ext or "(no extension)"}')
