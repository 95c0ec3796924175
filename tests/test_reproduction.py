"""Official CFSR x4 on Set5, with LR made by the project's own bicubic_downsample (protocol.md).

Reference (reference_tables.md): 32.3270 dB / 0.8963 (Y channel, crop_border 4).
"""
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim

from cfsrdelta_arch.archs.cfsr_arch import CFSR
from cfsrdelta_arch.data.lr_generation import bicubic_downsample, list_images, mod_crop
from cfsrdelta_arch.utils.weights import load_weights
from conftest import official_weights, require_shared

SCALE = 4
REF_PSNR, REF_SSIM = 32.3270, 0.8963


def super_resolve_uint8(net, lr_bgr):
    """uint8 BGR LR -> uint8 BGR SR (clamped, rounded)."""
    x = torch.from_numpy(np.ascontiguousarray(lr_bgr[..., ::-1].transpose(2, 0, 1))).float().div(255)[None]
    with torch.no_grad():
        sr = net(x)[0].clamp(0, 1).mul(255).round().byte().numpy()
    return np.ascontiguousarray(sr.transpose(1, 2, 0)[..., ::-1])


def test_set5_x4_matches_reference():
    hr_paths = list_images(require_shared('datasets', 'benchmark', 'Set5', 'HR'))
    assert len(hr_paths) == 5
    net = load_weights(CFSR(upscale=SCALE), official_weights('CFSR_x4.pth')).eval()
    psnrs, ssims = [], []
    for path in hr_paths:
        hr = mod_crop(cv2.imread(path, cv2.IMREAD_COLOR), SCALE)
        sr = super_resolve_uint8(net, bicubic_downsample(hr, SCALE))
        assert sr.shape == hr.shape, os.path.basename(path)
        psnrs.append(calculate_psnr(sr, hr, crop_border=SCALE, test_y_channel=True))
        ssims.append(calculate_ssim(sr, hr, crop_border=SCALE, test_y_channel=True))
    assert np.mean(psnrs) == pytest.approx(REF_PSNR, abs=0.005)
    assert np.mean(ssims) == pytest.approx(REF_SSIM, abs=0.0005)
