"""Fixed bicubic convolutions, saturation-aware back-projection and BPRefineNet.

The projection's premise is checked on the protocol itself: an HR image is consistent (to LR
rounding) with the LR that scripts/make_benchmark_lr.py makes from it, including where the LR clips.
"""
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.utils.matlab_functions import calculate_weights_indices, imresize
from conftest import encode_base
from test_data_scripts import load_script

from cfsrdelta_arch.archs.bprefinenet_arch import BPRefineNet
from cfsrdelta_arch.archs.backbone_delta_arch import BackboneDelta
from cfsrdelta_arch.archs.back_projection import BackProjection, consistency_residual
from cfsrdelta_arch.utils.image_io import image_to_tensor
from cfsrdelta_arch.archs.bicubic_layers import BicubicDown, BicubicUp, _interior_taps
from cfsrdelta_arch.utils.flops import count_conv_macs
from cfsrdelta_arch.utils.inference import dihedral
from cfsrdelta_arch.data.lr_generation import bicubic_downsample

SCALES = (2, 3, 4)
LR_H, LR_W = 10, 7


def hard_edge_image(scale, seed=0):
    """uint8 (H, W, 3) image with black text-like bars on white: bicubic overshoot gets clipped."""
    rng = np.random.default_rng(seed)
    img = np.full((LR_H * scale * 2, LR_W * scale * 2, 3), 255, np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, img.shape[0] - 4), rng.integers(0, img.shape[1] - 4)
        img[y:y + rng.integers(1, 5), x:x + rng.integers(2, 12)] = 0
    noisy = rng.integers(0, 256, (img.shape[0] // 2, img.shape[1], 3))
    img[img.shape[0] // 2:] = noisy.astype(np.uint8)  # and a part without saturation
    return img


@pytest.mark.parametrize('scale', SCALES)
def test_bicubic_down_and_up_match_basicsr_imresize(scale):
    rng = np.random.default_rng(scale)
    hr = rng.random((LR_H * scale, LR_W * scale, 3))
    lr = rng.random((LR_H, LR_W, 3))
    to_t = lambda a: torch.from_numpy(a.transpose(2, 0, 1)[None]).float()  # noqa: E731
    assert torch.allclose(BicubicDown(scale)(to_t(hr)), to_t(imresize(hr, 1 / scale)), atol=1e-5)
    assert torch.allclose(BicubicUp(scale)(to_t(lr)), to_t(imresize(lr, scale)), atol=1e-5)



@pytest.mark.parametrize('scale', SCALES)
def test_tap_weights_are_bit_identical_to_basicsr(scale):
    """The archs compute MATLAB's bicubic taps themselves (no BasicSR needed): same bits as BasicSR's."""
    for in_length, out_length, factor in ((8 * scale, 8, 1 / scale), (8, 8 * scale, float(scale))):
        weights, indices, sym_start, _ = calculate_weights_indices(in_length, out_length, factor, 'cubic', 4, True)
        own_weights, own_first = _interior_taps(in_length, out_length, factor)
        assert torch.equal(own_weights, weights.double())
        assert torch.equal(own_first, indices[:, 0].long() - sym_start)

def test_fixed_bicubic_convs_are_counted_as_macs():
    """Their F.conv2d calls are invisible to Conv2d hooks; they report themselves (utils/flops.py)."""
    hr = torch.rand(1, 3, 32, 48)
    down, up = BicubicDown(4), BicubicUp(4)
    taps = 4 * down.blocks  # 16: W pass at (LR rows + blocks - 1) x LR cols for each of 4 row phases, then H pass
    assert count_conv_macs(down, hr) == 3 * 4 * (8 + down.blocks - 1) * 12 * taps + 3 * 8 * 12 * taps
    assert count_conv_macs(up, down(hr)) == 3 * 32 * 48 * up.kernel.shape[-1] ** 2


def test_consistency_residual_is_one_sided_only_where_lr_is_saturated():
    lr = torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0, 1.0]).view(1, 1, 1, 6)
    d_sr = torch.tensor([-0.1, 0.1, 0.4, 0.6, 0.9, 1.1]).view(1, 1, 1, 6)
    expected = torch.tensor([0.0, -0.1, 0.1, -0.1, 0.1, 0.0]).view(1, 1, 1, 6)
    assert torch.allclose(consistency_residual(lr, d_sr), expected)


@pytest.mark.parametrize('scale', SCALES)
def test_protocol_hr_is_consistent_with_its_lr_including_clipped_pixels(scale):
    hr = hard_edge_image(scale)
    hr_t, lr_t = image_to_tensor(hr, bgr=True), image_to_tensor(bicubic_downsample(hr, scale), bgr=True)
    down = BicubicDown(scale)(hr_t)
    aware = consistency_residual(lr_t, down).abs().max().item()
    plain = (lr_t - down).abs().max().item()
    assert aware <= 0.5 / 255 + 1e-5  # only the LR rounding is left
    assert plain > 2 / 255  # the image does clip: without saturation handling HR looks inconsistent


@pytest.mark.parametrize('scale', SCALES)
def test_back_projection_makes_sr_consistent_and_keeps_consistent_images(scale):
    torch.manual_seed(scale)
    project = BackProjection(scale, steps=3)
    hr = torch.rand(1, 3, LR_H * scale, LR_W * scale) * 0.8 + 0.1
    lr = project.down(hr)
    assert torch.allclose(project(hr, lr), hr, atol=1e-6)  # a consistent image is a fixed point
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    before, after = project.residual(sr, lr).abs().mean(), project.residual(project(sr, lr), lr).abs().mean()
    assert after < 0.2 * before


@pytest.mark.parametrize('scale', SCALES)
def test_back_projection_commutes_with_flips_and_transposes(scale):
    """Needed for self-ensemble: the 8 variants see the same projection."""
    torch.manual_seed(0)
    project = BackProjection(scale)
    lr = torch.rand(1, 3, LR_H, LR_W)
    sr = torch.rand(1, 3, LR_H * scale, LR_W * scale)
    for k in range(8):
        assert torch.allclose(project(dihedral(sr, k), dihedral(lr, k)), dihedral(project(sr, lr), k), atol=1e-5)


@pytest.mark.parametrize('scale', SCALES)
@pytest.mark.parametrize('size', [(LR_H, LR_W), (7, 7), (23, 16)])
def test_down_up_filter_is_the_two_passes(scale, size):
    """DU as one LR filter after symmetric padding equals D(U(r)), borders included."""
    project = BackProjection(scale)
    r = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(scale))
    assert torch.allclose(project.down_up(r), project.down(project.up(r)), atol=1e-6)


@pytest.mark.parametrize('scale', SCALES)
@pytest.mark.parametrize('aware', [True, False])
def test_back_projection_equals_the_step_by_step_iteration(scale, aware):
    """The LR-resolution form (one D, one U) against the definition, x <- x + U(r(x)) at full
    resolution, with saturated LR pixels so the one-sided residuals matter."""
    gen = torch.Generator().manual_seed(scale)
    lr = (torch.rand(1, 3, LR_H, LR_W, generator=gen) * 1.4 - 0.2).clamp(0, 1)
    sr = torch.rand(1, 3, LR_H * scale, LR_W * scale, generator=gen)
    for steps in (1, 3):
        project = BackProjection(scale, steps=steps, saturation_aware=aware)
        x = sr
        for _ in range(steps):
            x = x + project.up(project.residual(x, lr))
        assert torch.allclose(project(sr, lr), x, atol=2e-6)


def test_back_projection_macs_are_one_down_one_up_and_the_lr_filters():
    project = BackProjection(4, steps=3)
    sr, lr = torch.rand(1, 3, LR_H * 4, LR_W * 4), torch.rand(1, 3, LR_H, LR_W)
    lr_filters = 2 * 3 * LR_H * LR_W * project.down_up_kernel[0].numel()  # steps - 1 of them
    passes = count_conv_macs(project.down, sr) + count_conv_macs(project.up, lr)
    assert count_conv_macs(project, sr, lr) == passes + lr_filters


def test_back_projection_rejects_negative_steps():
    with pytest.raises(ValueError, match='steps must be >= 0'):
        BackProjection(4, steps=-1)


def test_bprefinenet_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match='does not match LR'):
        BPRefineNet(upscale=4)(torch.rand(1, 3, 40, 28), torch.rand(1, 3, 10, 8))


def test_cfsrdelta_with_bprefinenet_stays_under_a_tenth_of_cfsr_x4_macs():
    """The issue's budget: refiner MACs <= 10% of CFSR x4's, fixed bicubic convs included."""
    net = BackboneDelta({'type': 'CFSR', 'upscale': 4}, {'type': 'BPRefineNet', 'upscale': 4})
    lr = torch.rand(1, 3, 45, 80)  # 1280x720 / 16 in each dimension: MACs scale with the area
    backbone = count_conv_macs(net.backbone, lr)
    refiner = count_conv_macs(net.refiner, net.backbone(lr), lr)
    assert refiner <= 0.10 * backbone
    with torch.no_grad():
        assert net(lr).shape == (1, 3, 180, 320)


def test_bench_back_projection_table_on_a_tiny_split(tmp_path, tiny_dataset, capsys):
    """The ablation script: SR_base row, plain and saturation-aware rows, projection gains on a blurry base."""
    bench = load_script('bench_back_projection')

    hr_dir, lr_dir = tiny_dataset(4, n=2, size=48)
    split = os.path.dirname(hr_dir)
    os.makedirs(os.path.join(split, 'SRbase_Toy_x4'))
    for name in os.listdir(hr_dir):  # a deliberately inconsistent SR_base: the blurred HR
        hr = cv2.imread(os.path.join(hr_dir, name)).astype(np.float64) / 255
        with open(os.path.join(split, 'SRbase_Toy_x4', name), 'wb') as f:
            f.write(encode_base(cv2.GaussianBlur(hr, (0, 0), 2.0)))
    bench.main(['--split', split, '--scale', '4', '--backbone', 'Toy', '--steps', '1', '3'])
    out = capsys.readouterr().out
    rows = {line.split(' | ')[0].strip('| '): float(line.split(' | ')[1]) for line in out.splitlines()
            if line.startswith('| ') and not line.startswith('| setting')}
    assert list(rows) == ['SR_base', 'plain, 1 step', 'plain, 3 steps',
                          'saturation-aware, 1 step', 'saturation-aware, 3 steps']
    assert rows['saturation-aware, 3 steps'] > rows['saturation-aware, 1 step'] > rows['SR_base']
    with pytest.raises(SystemExit, match='error: '):
        bench.main(['--split', str(tmp_path / 'missing'), '--scale', '4'])
