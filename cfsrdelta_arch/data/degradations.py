"""Degraded LR (blur, decimation, noise) per ``docs/degradation_protocol.md``, written once for the
degraded test sets (``scripts/make_degraded_lr.py``), the on-the-fly training data
(``degraded_onthefly_dataset.py``) and the non-blind models that read a folder's kernel and noise level.

Two degradation models, both on float64 ``hr = HR / 255`` (H, W, 3), rounded once at the end:

- ``gaussian8`` (IKC/DAN "Setting 1"): blur with ``scipy.ndimage.convolve(mode='reflect')`` (computed
  by :func:`blur`), then the protocol's MATLAB bicubic ``imresize(blurred, 1 / s)``;
- ``classical`` (USRNet): blur with ``mode='wrap'`` (circular), then decimation ``blurred[0::s, 0::s]``;

then ``lr += σ_n / 255 · N(0, 1)`` and ``clip(floor(lr · 255 + 0.5), 0, 255)`` to uint8. Images are
BGR as OpenCV reads them; the noise array is drawn in that (H, W, 3) layout.
"""
import contextlib
import json
import os
from collections import namedtuple

import cv2
import numpy as np
import scipy.io
import torch
from basicsr.data.degradations import bivariate_Gaussian
from basicsr.utils.matlab_functions import imresize

from cfsrdelta_arch.data.builder import check_apart, is_empty_folder, no_progress, staged_folder
from cfsrdelta_arch.data.lr_generation import check_sizes, mod_crop, read_image_color

SETTINGS = ('gaussian8', 'classical')
# How each degradation model's blur continues the image past its border, as numpy.pad modes: the
# protocol's scipy.ndimage.convolve modes 'reflect' (which repeats the edge pixel) and 'wrap'.
BLUR_PAD = {'gaussian8': 'symmetric', 'classical': 'wrap'}
# gaussian8: 8 isotropic widths per scale, linspace(lo, hi, 8), on a 21 x 21 grid.
GAUSSIAN8_RANGES = {2: (0.80, 1.60), 3: (1.35, 2.40), 4: (1.8, 3.2)}
GAUSSIAN8_SIZE = 21
# USRNet's 12 test kernels (25 x 25): k1-k4 isotropic, k5-k8 anisotropic Gaussians, k9-k12 motion blur.
# Source: the USRNet / KAIR repositories (MIT licence, Kai Zhang); see README, "Data".
KERNELS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kernels', 'kernels_12.mat')
NOISE_SEED = 0  # the generator is re-seeded with it for every image
# A kernel summing to 1 within this is used as given (float32 storage, as kernels_12.mat's, is off by ~1e-7).
KERNEL_SUM_TOLERANCE = 1e-6
# Widest Gaussian a user may ask for (a 241-pixel kernel); the protocol's widest is 3.2 (x4).
GAUSSIAN_SIGMA_MAX = 40.0
KERNEL_FILE_NAME, RECORD_FILE_NAME = 'kernel.npy', 'degradation.json'

Kernel = namedtuple('Kernel', 'name kernel sigma')  # sigma: σ_k of a gaussian8 kernel, else None


def check_setting(setting):
    if setting not in SETTINGS:
        raise ValueError(f"unknown degradation setting '{setting}'; choose one of {', '.join(SETTINGS)}")


def classical_kernels():
    """The 12 kernels of :data:`KERNELS_FILE` as float64 (25, 25) arrays (each sums to 1 within 1e-7:
    they are stored as float32 and used as stored, not renormalised)."""
    cells = scipy.io.loadmat(KERNELS_FILE)['kernels']
    return [cells[0, i].astype(np.float64) for i in range(cells.shape[1])]


def gaussian8_sigmas(scale):
    """The 8 kernel widths σ_k of setting gaussian8 at ``scale`` (2, 3 or 4)."""
    if scale not in GAUSSIAN8_RANGES:
        raise ValueError(f'setting gaussian8 is defined for scales {sorted(GAUSSIAN8_RANGES)}, not {scale}')
    return np.linspace(*GAUSSIAN8_RANGES[scale], 8)


def setting_kernels(setting, scale):
    """[:class:`Kernel`] of a setting: 'g1.80' ... (gaussian8, float64 21 x 21, sum 1) or 'k1' ... 'k12'."""
    check_setting(setting)
    if setting == 'gaussian8':
        return [Kernel(f'g{s:.2f}', bivariate_Gaussian(GAUSSIAN8_SIZE, s, s, 0, isotropic=True), float(s))
                for s in gaussian8_sigmas(scale)]
    return [Kernel(f'k{i + 1}', k, None) for i, k in enumerate(classical_kernels())]


def blur(hr, kernel, model):
    """Per-channel convolution of float64 (H, W, C) with ``kernel``, the image continued past its
    border per ``model``: the protocol's ``scipy.ndimage.convolve(hr[..., c], kernel, mode=...)`` to
    1e-15, about 25x faster (scipy's direct loop was 70% of the on-the-fly training data's time):
    OpenCV's filter2D, a correlation (hence the flipped kernel), on the explicitly padded image."""
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f'blur kernels have odd sizes (a centre tap), got {kernel.shape}')
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(hr, ((ph, ph), (pw, pw), (0, 0)), mode=BLUR_PAD[model])
    out = cv2.filter2D(padded, -1, np.ascontiguousarray(kernel[::-1, ::-1]), borderType=cv2.BORDER_CONSTANT)
    return out.reshape(padded.shape)[ph:ph + hr.shape[0], pw:pw + hr.shape[1]]


def blur_downsample(hr, kernel, scale, model):
    """Blur and downsample per degradation ``model`` ('gaussian8' or 'classical'), before noise.

    Args:
        hr (np.ndarray): float64 (H, W, C) in [0, 1]; H and W multiples of ``scale``.
        kernel (np.ndarray): float64 (kh, kw) blur kernel, odd sizes, summing to 1.
        scale (int): the SR scale.
        model (str): one of :data:`SETTINGS`.

    Returns:
        np.ndarray: float64 (H / s, W / s, C), unclipped.
    """
    check_setting(model)
    blurred = blur(hr, kernel, model)
    if model == 'gaussian8':
        return imresize(blurred, 1.0 / scale)
    return blurred[0::scale, 0::scale]


def add_noise(lr, noise_sigma, rng):
    """``lr + σ_n / 255 · rng.standard_normal(lr.shape)`` (σ_n on the 0-255 scale; 0 draws nothing)."""
    return lr + (noise_sigma / 255.0) * rng.standard_normal(lr.shape) if noise_sigma > 0 else lr


def quantise(lr):
    """float [0, 1] -> uint8 with MATLAB rounding, as the bicubic protocol rounds."""
    return np.clip(np.floor(lr * 255.0 + 0.5), 0, 255).astype(np.uint8)


def degrade(hr, kernel, scale, setting, noise_sigma, seed=NOISE_SEED):
    """The protocol's degraded LR of one uint8 HR image (mod-cropped to ``scale`` first).

    Args:
        hr (np.ndarray): uint8 (H, W, 3).
        kernel (np.ndarray): float64 blur kernel (see :func:`setting_kernels`).
        scale (int): the SR scale.
        setting (str): 'gaussian8' or 'classical'.
        noise_sigma (float): σ_n on the 0-255 scale.
        seed (int): noise generator seed, re-seeded per image.

    Returns:
        np.ndarray: uint8 (H // s, W // s, 3).
    """
    lr = blur_downsample(mod_crop(hr, scale).astype(np.float64) / 255.0, kernel, scale, setting)
    return quantise(add_noise(lr, noise_sigma, np.random.default_rng(seed)))


def folder_name(kernel_name, noise_sigma):
    """'<kernel>_n<σ_n with two decimals>', e.g. 'g1.80_n7.65', 'k1_n0.00'."""
    return f'{kernel_name}_n{noise_sigma:.2f}'


def degradation_folder(root, setting, scale, kernel_name, noise_sigma):
    """``<root>/<setting>/x<s>/<kernel>_n<σ_n>``."""
    return os.path.join(root, setting, f'x{scale}', folder_name(kernel_name, noise_sigma))


def degradation_record(setting, scale, kernel, noise_sigma):
    """The ``degradation.json`` content of one folder (keys and order of the protocol)."""
    return {'setting': setting, 'scale': scale, 'kernel': kernel.name, 'kernel_sigma': kernel.sigma,
            'noise_sigma': noise_sigma, 'seed': NOISE_SEED}


def read_degradation(folder):
    """(kernel float64 (kh, kw), record dict) of a degraded LR folder, for non-blind models.

    Raises:
        FileNotFoundError: a folder without ``kernel.npy`` / ``degradation.json`` (not made by
            scripts/make_degraded_lr.py).
    """
    paths = [os.path.join(folder, name) for name in (KERNEL_FILE_NAME, RECORD_FILE_NAME)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f'{missing[0]} is missing: {folder} is not a degraded LR folder made by '
                                'scripts/make_degraded_lr.py')
    with open(paths[1], encoding='utf-8') as f:
        return np.load(paths[0]), json.load(f)


def write_degraded_sets(hr_paths, hr_folder, out_root, setting, scales, noise_sigmas, overwrite=False,
                        progress=no_progress):
    """Write every folder ``<out_root>/<setting>/x<s>/<kernel>_n<σ_n>/`` of a setting for the HR images.

    Each folder holds ``<stem>.png`` per HR image, ``kernel.npy`` and ``degradation.json``. All targets
    are checked before any work; the folders of one kernel (all noise levels) are built whole in staging folders
    beside them and renamed into place (a failed or killed run leaves complete folders, never a partial one). The blur is computed
    once per image and kernel for all noise levels.

    Args:
        hr_paths (list[str]): HR image files (grayscale is read as 3 channels).
        hr_folder (str): their folder; ``out_root`` may not be, contain or lie inside it.
        out_root (str): root of the degraded sets.
        setting (str): 'gaussian8' or 'classical'.
        scales (list[int]), noise_sigmas (list[float]): what to build (σ_n on the 0-255 scale).
        overwrite (bool): rebuild existing folders from scratch instead of refusing.
        progress (callable): tqdm-like wrapper of the per-image loop.

    Returns:
        list[str]: the folders written.

    Raises:
        ValueError: unknown setting, unsupported scale, HR smaller than a scale, ``out_root`` overlapping
            the HR folder; FileExistsError: a target exists and ``overwrite`` is false.
    """
    check_setting(setting)
    check_apart(out_root, '--out', [('--hr', hr_folder)])
    jobs = [(s, k) for s in scales for k in setting_kernels(setting, s)]
    check_sizes(hr_paths, max(scales))
    for s, k in jobs:
        for n in noise_sigmas:
            target = degradation_folder(out_root, setting, s, k.name, n)
            if os.path.lexists(target) and not overwrite and not is_empty_folder(target):
                raise FileExistsError(f'{target} exists; pass --overwrite to rebuild it from scratch or choose '
                                      'another --out')
    images = [(os.path.splitext(os.path.basename(p))[0], read_image_color(p)) for p in hr_paths]
    written = []
    for s, k in jobs:
        folders = [degradation_folder(out_root, setting, s, k.name, n) for n in noise_sigmas]
        with contextlib.ExitStack() as stack:  # on an error every staging folder is removed
            staging = [stack.enter_context(staged_folder(f, overwrite)) for f in folders]
            for stem, hr in progress(images, total=len(images), desc=f'{setting} x{s} {k.name}'):
                clean = blur_downsample(mod_crop(hr, s).astype(np.float64) / 255.0, k.kernel, s, setting)
                for folder, n in zip(staging, noise_sigmas):
                    lr = quantise(add_noise(clean, n, np.random.default_rng(NOISE_SEED)))
                    path = os.path.join(folder, f'{stem}.png')
                    if not cv2.imwrite(path, lr):
                        raise OSError(f'cannot write {path}')
            for folder, n in zip(staging, noise_sigmas):
                np.save(os.path.join(folder, KERNEL_FILE_NAME), k.kernel)
                with open(os.path.join(folder, RECORD_FILE_NAME), 'w', encoding='utf-8') as f:
                    json.dump(degradation_record(setting, s, k, n), f, indent=2)
                    f.write('\n')
        written += folders
    return written


def checked_kernel(kernel, source):
    """A user's blur kernel (array-like or tensor) as float64 (k, k) summing to 1, or a one-line ValueError
    starting with ``source``: it must be a real 2-D array, square with an odd size, finite, non-negative,
    with a finite positive sum. A kernel of another total (e.g. an 8-bit image) is scaled to sum 1; one
    that sums to 1 within float32 precision is kept as it is, so the shipped float32 kernels stay the
    kernels the tables used."""
    if isinstance(kernel, torch.Tensor):
        kernel = kernel.detach().to('cpu', torch.float64).numpy()
    kernel = np.asarray(kernel)
    if kernel.dtype.kind not in 'biuf':
        raise ValueError(f'{source}: the kernel must hold real numbers, got {kernel.dtype}')
    kernel = kernel.astype(np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f'{source}: the kernel must be square with an odd size, got {kernel.shape}')
    with np.errstate(over='ignore'):  # an overflowing sum is refused below
        total = kernel.sum()
    if not np.isfinite(kernel).all() or kernel.min() < 0 or not 0 < total < np.inf:
        raise ValueError(f'{source}: the weights must be finite, non-negative and not all zero, with a finite sum')
    return kernel if abs(total - 1) <= KERNEL_SUM_TOLERANCE else kernel / total


def gaussian_kernel(sigma):
    """Isotropic Gaussian blur kernel of width ``sigma`` (HR pixels, in (0, GAUSSIAN_SIGMA_MAX]), float64
    (k, k) summing to 1, with k = 2·ceil(3σ) + 1 (>= 3), via BasicSR's ``bivariate_Gaussian``."""
    if not 0 < sigma <= GAUSSIAN_SIGMA_MAX:
        raise ValueError(f'the Gaussian blur width must be in (0, {GAUSSIAN_SIGMA_MAX:g}] HR pixels, got {sigma}')
    # BasicSR's kernel sums to 1 and is kept as it is; a width so small that σ² underflows gives 0/0 at
    # the centre, which the check names
    return checked_kernel(bivariate_Gaussian(max(3, 2 * int(np.ceil(3 * sigma)) + 1), sigma, sigma, 0, isotropic=True),
                          f'Gaussian blur width {sigma}')


def check_noise_sigma(sigma):
    """The noise level σ_n (0-255 scale; a number, or a 0-d array or tensor) as a float, or a one-line
    ValueError unless it is a real number in [0, 255] (a deviation beyond the whole range is a unit mistake)."""
    if isinstance(sigma, torch.Tensor):  # float64 first: numpy has no bfloat16
        sigma = (sigma.double() if sigma.is_floating_point() else sigma).detach().cpu().numpy()
    value = np.asarray(sigma)
    if value.ndim != 0 or value.dtype.kind not in 'iuf':
        raise ValueError(f'the noise level must be one number (σ_n on the 0-255 scale), got '
                         f'{type(sigma).__name__} of shape {value.shape}')
    sigma = float(value)
    if not 0 <= sigma <= 255:
        raise ValueError(f'the noise level must be in [0, 255] (σ_n on the 0-255 scale), got {sigma}')
    return sigma


def mat_kernel(path):
    """The kernel of a MATLAB file: the first 2-D numeric variable, or the first element of a cell array such
    as USRNet's ``kernels``; a 1 x 1 variable (a scale or σ saved beside the kernel) only when nothing
    larger is there."""
    found = [v for k, v in scipy.io.loadmat(path).items() if not k.startswith('__')]
    found = [v.flat[0] if v.dtype == object and v.size else v for v in found]
    arrays = [np.asarray(v) for v in found if np.ndim(v) == 2 and np.issubdtype(np.asarray(v).dtype, np.number)]
    if not arrays:
        raise ValueError('no 2-D numeric variable in it')
    return next((a for a in arrays if a.size > 1), arrays[0])


def load_kernel(path):
    """A blur kernel from a file, float64 (k, k), normalised to sum 1 (:func:`checked_kernel`).

    Formats: ``.npy`` (a 2-D array), ``.mat`` (:func:`mat_kernel`), or an image (a grayscale
    PNG/TIFF/..., the pixel values as weights).

    Raises:
        FileNotFoundError / ValueError: one line naming the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'kernel file {path} does not exist')
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == '.npy':
            kernel = np.load(path, allow_pickle=False)
        elif ext == '.mat':
            kernel = mat_kernel(path)
        else:
            kernel = cv2.imread(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
            if kernel is None:
                raise ValueError('not a readable image, .npy or .mat file')
    except Exception as err:  # numpy and scipy raise many types (EOFError, MatReadError, ...) for a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f'kernel file {path}: {reason}') from None
    return checked_kernel(kernel, f'kernel file {path}')
