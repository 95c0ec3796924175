"""Shared fixtures. Tests needing ../shared skip locally with a reason, but fail when CI is set."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
SHARED = os.path.abspath(os.path.join(ROOT, os.pardir, 'shared'))

import cfsrdelta_arch  # noqa: F401  (registers everything; must precede basicsr imports)


def require_shared(*relative):
    """Absolute path inside ../shared; skip (locally) or fail (CI) when it is missing."""
    path = os.path.join(SHARED, *relative)
    if not os.path.exists(path):
        msg = f'{path} is missing: tests that use the upstream weights/datasets need ../shared beside the checkout'
        if os.environ.get('CI'):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def official_weights(name):
    """Path of an upstream checkpoint, e.g. official_weights('CFSR_x4.pth')."""
    return require_shared('weights', 'official', name)


def write_tiny_dataset(root, scale, n=3, size=48, seed=0):
    """Smooth random HR images (size x size) with protocol LR, in the EDSR layout under ``root``.

    Returns (hr_dir, lr_dir); LR files are named '<name>x<scale>.png'.
    """
    import cv2
    from cfsrdelta_arch.data.lr_generation import bicubic_downsample
    rng = np.random.default_rng(seed)
    hr_dir = os.path.join(root, 'HR')
    lr_dir = os.path.join(root, 'LR_bicubic', f'X{scale}')
    os.makedirs(hr_dir, exist_ok=True)
    os.makedirs(lr_dir, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        hr = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(hr_dir, f'img{i}.png'), hr)
        cv2.imwrite(os.path.join(lr_dir, f'img{i}x{scale}.png'), bicubic_downsample(hr, scale))
    return hr_dir, lr_dir


@pytest.fixture
def tiny_dataset(tmp_path):
    """Factory: ``tiny_dataset(scale, n=3, size=48)`` -> (hr_dir, lr_dir) under a temp folder."""
    def make(scale, n=3, size=48):
        return write_tiny_dataset(str(tmp_path / f'tiny_x{scale}'), scale, n, size)
    return make
