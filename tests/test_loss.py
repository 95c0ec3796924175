"""L1FFTLoss on inputs whose orthonormal FFT magnitudes are known in closed form.

For an H x W image with ``norm='ortho'``:
- constant c: DC magnitude |c| * sqrt(H*W), every other coefficient 0;
- single impulse of height a (anywhere): magnitude |a| / sqrt(H*W) at every frequency.
"""
import math

import pytest
import torch
from basicsr.losses import build_loss

from cfsrdelta_arch.losses.l1fft_loss import L1FFTLoss

H, W = 8, 8
N, C = 2, 3


def const(value):
    return torch.full((N, C, H, W), float(value), dtype=torch.float64)


def impulse(value, y=0, x=0):
    t = torch.zeros(N, C, H, W, dtype=torch.float64)
    t[..., y, x] = value
    return t


def loss_at(loss, it, pred, target):
    loss.set_iter(it)
    return loss(pred, target).item()


def test_constant_images():
    # L1 = 0.5; FFT term: one coefficient of H*W differs by 0.5 * 8 -> mean 0.5 * 8 / 64 = 0.0625.
    loss = L1FFTLoss(loss_weight=2.0, fft_weight=0.5, ramp_iters=0)
    value = loss(const(0.75), const(0.25)).item()
    assert value == pytest.approx(2.0 * (0.5 + 0.5 * 0.5 / math.sqrt(H * W)), rel=1e-12)
    assert value == pytest.approx(1.0625, rel=1e-12)


def test_impulse_against_zero():
    a = 0.8
    loss = L1FFTLoss(loss_weight=1.0, fft_weight=1.0, ramp_iters=0)
    expected = a / (H * W) + a / math.sqrt(H * W)
    assert loss(impulse(a, 3, 5), const(0)).item() == pytest.approx(expected, rel=1e-12)


def test_fft_magnitude_is_shift_invariant():
    # Shifted impulses: equal FFT magnitudes, so only the pixel L1 (two differing pixels) remains.
    a = 0.6
    loss = L1FFTLoss(loss_weight=1.0, fft_weight=1.0, ramp_iters=0)
    value = loss(impulse(a, 0, 0), impulse(a, 4, 2)).item()
    assert value == pytest.approx(2 * a / (H * W), rel=1e-9)


def test_equal_inputs_give_zero_and_finite_gradients():
    # Most FFT coefficients are exactly 0 here: |z| is not differentiable at 0, grads must stay finite.
    pred = const(0.3).requires_grad_(True)
    loss = L1FFTLoss(fft_weight=0.5, ramp_iters=0)
    out = loss(pred, const(0.3))
    assert out.item() == 0
    out.backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize('it,fraction', [(0, 0.0), (50, 0.5), (100, 1.0), (101, 1.0), (10_000, 1.0)])
def test_ramp(it, fraction):
    loss = L1FFTLoss(loss_weight=1.0, fft_weight=0.2, ramp_iters=100)
    loss.set_iter(it)
    assert loss.current_fft_weight() == pytest.approx(0.2 * fraction, abs=1e-15)
    expected = 0.5 + 0.2 * fraction * 0.5 / math.sqrt(H * W)
    assert loss_at(loss, it, const(0.75), const(0.25)) == pytest.approx(expected, rel=1e-12)


def test_ramp_zero_applies_full_weight_from_the_start():
    loss = L1FFTLoss(fft_weight=0.2, ramp_iters=0)
    for it in (0, 1, 5000):
        loss.set_iter(it)
        assert loss.current_fft_weight() == 0.2


def test_counts_own_calls_in_training_mode_only():
    loss = L1FFTLoss(fft_weight=1.0, ramp_iters=4)
    pred, target = const(0.75), const(0.25)
    values = [loss(pred, target).item() for _ in range(6)]  # nn.Module starts in training mode
    assert values == pytest.approx([0.5 + min(i / 4, 1) * 0.0625 for i in range(6)], rel=1e-12)
    assert loss.current_iter == 6
    loss.eval()
    loss.set_iter(2)
    assert loss(pred, target).item() == pytest.approx(0.5 + 0.5 * 0.0625, rel=1e-12)
    assert loss.current_iter == 2


def test_defaults_are_the_prior_arts():
    loss = L1FFTLoss()
    assert (loss.loss_weight, loss.fft_weight, loss.ramp_iters) == (1.0, 0.005, 2000)


def test_built_from_options_through_the_registry():
    loss = build_loss({'type': 'L1FFTLoss', 'loss_weight': 2.0, 'fft_weight': 0.5, 'ramp_iters': 0})
    assert isinstance(loss, L1FFTLoss)
    assert loss(const(0.75), const(0.25)).item() == pytest.approx(1.0625, rel=1e-12)


@pytest.mark.parametrize('kwargs', [{'reduction': 'sum'}, {'reduction': 'none'}, {'ramp_iters': -1},
                                    {'fft_weight': -0.1}])
def test_bad_options_raise(kwargs):
    with pytest.raises(ValueError):
        L1FFTLoss(**kwargs)
