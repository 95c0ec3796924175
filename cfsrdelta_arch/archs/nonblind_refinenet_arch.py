"""NonBlindRefineNet: a refiner told the blur kernel and noise level, for a frozen bicubic-trained backbone."""
import math

import torch
from torch import nn
from torch.nn import functional as F

from cfsrdelta_arch.utils.compat import get_arch, register_arch
from cfsrdelta_arch.utils.weights import load_weights

from .bicubic_layers import pixel_unshuffle
from .blocks import residual_conv_body
from .degradation_psf import (DEGRADATIONS, check_degradations, degradation_psf, lr_wiener_to_bicubic,
                              pad_like_degradation)
from .usrnet_arch import DataNet, data_terms

# σ of the 8-bit rounding every LR has (on the [0, 1] scale): the noise level the data weight sees at σ_n = 0.
QUANTISATION_SIGMA = 1.0 / 255
# The shipped clean-bicubic delta (weights/cfsrdelta/CFSRDelta_BPRefineNet_x<s>.pth) is this refiner.
SHIPPED_CLEAN_REFINER = {'type': 'BPRefineNet', 'width': 20, 'num_convs': 3, 'bp_steps': 3}


def as_sigma(sigma, batch, like):
    """Noise levels σ on the [0, 1] scale as (N, 1, 1, 1) of ``like``'s dtype/device (None: 0)."""
    sigma = torch.zeros(()) if sigma is None else torch.as_tensor(sigma)
    return sigma.to(like).reshape(-1, 1, 1, 1).expand(batch, 1, 1, 1)


def noise_ratio(sigma):
    """``σ² / q²`` (q: :data:`QUANTISATION_SIGMA`): the noise variance in 8-bit levels², which the data
    weight (through its log1p) and the pre-filter's λ grow with."""
    return (sigma / QUANTISATION_SIGMA) ** 2


def model_values(value, name):
    """The values of a constant given for every degradation model or as ``{model: value}``, which must
    then name each model once (a typo would otherwise fall back to nothing)."""
    if not isinstance(value, dict):
        return [value]
    if sorted(value) != sorted(DEGRADATIONS):
        raise ValueError(f'{name} must give one value per degradation model ({", ".join(DEGRADATIONS)}), '
                         f'got {sorted(value)}')
    return list(value.values())


def per_sample(value, names):
    """The constant ``value`` (one number, or ``{model: number}``) for each sample's degradation model."""
    return [value[n] for n in names] if isinstance(value, dict) else [value] * len(names)


# Channels of :func:`degradation_code`: the model flag and the kernel's three second moments.
DEGRADATION_CODE_CHANNELS = 4


def degradation_code(kernel, scale, names):
    """(N, 4, 1, 1) what a conditioned body is told of each sample's degradation: 1 for 'classical'
    (0 for 'gaussian8'), then the blur kernel's second moments c_xx, c_yy, c_xy in LR pixels² (its
    covariance in HR pixels / s², e.g. c_xx = c_yy = σ_k² / s² for an isotropic Gaussian). The moments
    follow a flip or transpose of the kernel, as the x8 self-ensemble applies it.

    Args:
        kernel (Tensor): (N, 1, k, k) summing to 1. scale (int): s. names (list[str]): models.
    """
    weights = kernel[:, 0]
    coords = torch.arange(weights.shape[-1], dtype=weights.dtype, device=weights.device) - (weights.shape[-1] - 1) / 2
    dy = coords.view(1, -1, 1) - (weights.sum(-1) * coords).sum(-1).view(-1, 1, 1)
    dx = coords.view(1, 1, -1) - (weights.sum(-2) * coords).sum(-1).view(-1, 1, 1)
    moments = [(weights * a * b).sum((-2, -1)) / scale ** 2 for a, b in ((dx, dx), (dy, dy), (dx, dy))]
    classical = torch.tensor([n == 'classical' for n in names], dtype=weights.dtype, device=weights.device)
    return torch.stack([classical] + moments, dim=1).view(-1, DEGRADATION_CODE_CHANNELS, 1, 1)


def is_delta(kernel):
    """(N,) bool: the blur kernel (N, 1, k, k) is the identity (all its mass on one tap)."""
    return kernel.flatten(1).amax(dim=1) > 1 - 1e-6


@register_arch
class NonBlindRefineNet(nn.Module):
    """Refine a bicubic-trained backbone's SR of an LR image degraded by a *known* blur and noise level.

    Before the backbone (:meth:`backbone_input`, which BackboneDelta calls): a Wiener filter at LR
    resolution maps the degraded LR to an estimate of the clean bicubic LR of the same image
    (archs/degradation_psf.py, :func:`lr_wiener_to_bicubic`), so the backbone sees the kind of input it
    was trained on. Its regularisation is ``λ = prefilter_lambda[model] + prefilter_noise_lambda[model] · σ² / q²``:
    the floor per degradation model stands for what the filter's model leaves out — mostly aliasing,
    small after the bicubic antialiasing of 'gaussian8', large after the plain decimation of
    'classical' — and the second term for the noise. All three constants were chosen on the degraded
    val291 folders (CFSR after the filter alone: 23.90 -> 26.96 dB at gaussian8 σ_k 2.6, σ_n 0);
    ``prefilter_lambda=None`` feeds the backbone the degraded LR itself.

    After the backbone, ``stages`` times: a closed-form data step (USRNet's FFT solution of
    ``argmin_x ||y - (x ⊗ psf)↓s||² + α_t ||x - z||²``, with the PSF of the degradation model,
    archs/degradation_psf.py) pulls the estimate ``z`` onto the LR, then a learned LR-resolution body
    (on the pixel-unshuffled estimate, the LR and a σ map; with ``conditioned_bodies`` also the
    pre-filtered LR and :func:`degradation_code`, the degradation model and the kernel's covariance, as
    constant maps) removes what the inversion amplifies (ringing, noise):
    ``z <- x + pixel_shuffle(body_t(...))``. The data weight is noise-aware,
    ``log α_t = a_t + b_t · log(1 + σ² / q²)`` (q: 8-bit rounding, :data:`QUANTISATION_SIGMA`):
    with b_t = 1 it grows with the noise variance like a Wiener filter's; a_t, b_t are learned
    (2 scalars per stage), starting at ``log(alpha_init)`` and 1. The first ``z`` is the backbone's SR,
    so the network only has to learn what the degradation costs; the last body starts at ~zero output.
    Noise-free samples of a model not in ``noise_free_bodies`` get the data steps alone.

    Clean bicubic LR (identity blur kernel, or none, with the 'gaussian8' model and σ = 0) is what the
    backbone and the shipped delta were made for: those samples go through ``clean`` — the shipped
    BPRefineNet with its weights, frozen — so on clean input this network *is* today's CFSR-Delta.

    The FFT steps assume a circular boundary; the images are padded by ``pad`` LR pixels first
    (symmetric for 'gaussian8', whose blur and bicubic use reflect/symmetric borders; circular for
    'classical', whose blur is circular), which makes it exact up to the padding's far edge.

    Args:
        upscale (int): scale s. num_in_ch (int): image channels (3).
        stages (int): data step + body iterations. width, num_convs, init_std: each body
            (blocks.residual_conv_body). alpha_init (float): every α_t at σ = 0 at initialisation.
        pad (int): LR pixels of padding around the FFT steps (> the PSF radius / s; LR H, W > pad).
        prefilter_lambda (float | dict | None): the LR Wiener filter's λ at σ = 0, for every model or
            ``{model: λ}`` (None: no filter). prefilter_noise_lambda (float | dict): λ's growth per unit of
            σ² / q² (the noise variance in 8-bit levels²), for every model or ``{model: growth}``.
        noise_free_bodies (Sequence[str]): degradation models whose σ = 0 samples go through the
            bodies (default both). The shipped x4 option leaves out 'gaussian8': after the pre-filter
            the bodies cost 0.5-0.9 dB there on val291 (they add 0.2-0.7 dB on noise-free 'classical'
            LR and ~1 dB at σ_n 7.65).
        conditioned_bodies (bool): also feed each body the pre-filtered LR (the backbone's input) and
            :func:`degradation_code` (num_in_ch + 4 more input channels, appended after the others, so
            the weights of a network without them embed with zeros there: ``train.grow_pretrained_refiner``).
            Needs ``prefilter_lambda``.
        clean_refiner (dict | None): option dict of the clean-path refiner (default
            :data:`SHIPPED_CLEAN_REFINER` at ``upscale``). clean_weights (str | None): its checkpoint
            (verified, strict); clean_param_key (str): key inside it.

    ``forward(sr, lr, kernel=None, sigma=None, degradation='gaussian8')``: sr (N, 3, s*H, s*W) the
    backbone's SR in [0, 1], lr (N, 3, H, W) in [0, 1], kernel (N, k, k) or (N, 1, k, k) odd blur
    kernels summing to 1 (None: no blur), sigma noise levels on the [0, 1] scale (σ_n / 255; a
    number, (N,) or (N, 1, 1, 1); None: 0), degradation 'gaussian8' | 'classical' or one per
    sample. Returns (N, 3, s*H, s*W), unclamped. ``backbone_input`` takes the same LR and degradation.
    """

    def __init__(self, upscale=4, num_in_ch=3, stages=2, width=32, num_convs=4, init_std=1e-4, alpha_init=0.01, pad=8,
                 prefilter_lambda=None, prefilter_noise_lambda=6.8e-4,
                 noise_free_bodies=DEGRADATIONS, conditioned_bodies=False, clean_refiner=None, clean_weights=None,
                 clean_param_key='params_ema'):
        super().__init__()
        self.upscale, self.stages, self.pad = upscale, stages, pad
        floors = model_values(prefilter_lambda, 'prefilter_lambda')
        if any(f is not None and f <= 0 for f in floors) or any(
                g < 0 for g in model_values(prefilter_noise_lambda, 'prefilter_noise_lambda')):
            raise ValueError(f'prefilter_lambda must be > 0 and prefilter_noise_lambda >= 0, got {prefilter_lambda} '
                             f'and {prefilter_noise_lambda}')
        self.prefilter_lambda, self.prefilter_noise_lambda = prefilter_lambda, prefilter_noise_lambda
        check_degradations(list(noise_free_bodies), len(noise_free_bodies))
        self.noise_free_bodies = tuple(noise_free_bodies)
        clean = dict(clean_refiner or dict(SHIPPED_CLEAN_REFINER, upscale=upscale))
        self.clean = get_arch(clean.pop('type'))(**clean)
        if clean_weights:
            load_weights(self.clean, clean_weights, clean_param_key)
        self.clean.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.full((stages,), math.log(alpha_init)))
        self.noise_gain = nn.Parameter(torch.ones(stages))
        if not isinstance(conditioned_bodies, bool) or conditioned_bodies and prefilter_lambda is None:
            raise ValueError(f'conditioned_bodies must be true or false, and true needs prefilter_lambda (the bodies '
                             f'see the pre-filtered LR), got {conditioned_bodies!r}')
        self.conditioned_bodies = conditioned_bodies
        packed = num_in_ch * upscale * upscale
        body_in = packed + num_in_ch + 1 + (num_in_ch + DEGRADATION_CODE_CHANNELS if conditioned_bodies else 0)
        self.bodies = nn.ModuleList(residual_conv_body(body_in, width, packed, num_convs, init_std)
                                    for _ in range(stages))
        self.data_step = DataNet()

    def train(self, mode=True):
        """Switch the learned stages only; the frozen clean-path refiner stays in eval mode."""
        super().train(mode)
        self.clean.eval()
        return self

    def _pad(self, x, pixels, names):
        """Pad (N, C, H, W) by ``pixels`` on every side, each sample as its degradation model's LR continues
        (:func:`pad_like_degradation`: circular for 'classical', symmetric for 'gaussian8'). Called for
        batches with a degraded sample only (an all-clean batch of any size goes to the shipped delta); the
        image must be larger than the padding."""
        if min(x.shape[-2:]) <= pixels:
            raise ValueError(f'NonBlindRefineNet: a degraded input of {tuple(x.shape[-2:])} pixels must be larger '
                             f'than its padding ({pixels})')
        if len(set(names)) == 1:  # one model (every inference call): pad once
            return pad_like_degradation(x, pixels, names[0])
        circular = torch.tensor([n == 'classical' for n in names], device=x.device)
        return torch.where(circular.view(-1, 1, 1, 1), pad_like_degradation(x, pixels, 'classical'),
                           pad_like_degradation(x, pixels, 'gaussian8'))

    def restore(self, sr, lr, kernel, sigma, names):
        """The non-blind stages on a batch (all arguments per sample, as :meth:`forward` normalises them)."""
        s, p = self.upscale, self.pad
        lr = self._pad(lr, p, names)
        z = self._pad(sr, s * p, names)
        psf = degradation_psf(kernel, s, names)
        fb, fbc, f2b, fbfy = data_terms(lr, psf.to(lr), s)
        noise = torch.log1p(noise_ratio(sigma))  # (N, 1, 1, 1)
        alphas = torch.exp(self.log_alpha.view(1, -1, 1, 1) + self.noise_gain.view(1, -1, 1, 1) * noise)
        lr_size = lr.shape[-2:]
        given = [lr, sigma.expand(-1, 1, *lr_size)]  # what every body sees beside the estimate
        if self.conditioned_bodies:
            given += [self._prefiltered(lr, psf, sigma, names), degradation_code(kernel, s, names).expand(-1, -1, *lr_size)]
        with_bodies = (sigma.view(-1) > 0) | torch.tensor([m in self.noise_free_bodies for m in names], device=lr.device)
        gate = with_bodies.to(lr.dtype).view(-1, 1, 1, 1)
        for t, body in enumerate(self.bodies):
            x = self.data_step(z, fb, fbc, f2b, fbfy, alphas[:, t:t + 1], s)
            z = x + gate * F.pixel_shuffle(body(torch.cat([pixel_unshuffle(x, s)] + given, dim=1)), s)
        return z[..., s * p:z.shape[-2] - s * p, s * p:z.shape[-1] - s * p]

    def _degradation(self, lr, kernel, sigma, degradation):
        """Per-sample (kernel (N, 1, k, k), σ (N, 1, 1, 1), model names, clean (N,) bool) of :meth:`forward`'s arguments."""
        n = lr.shape[0]
        names = check_degradations(degradation, n)
        if kernel is None:
            kernel = lr.new_ones(n, 1, 1, 1)
        kernel = (kernel.unsqueeze(1) if kernel.dim() == 3 else kernel).to(lr)
        sigma = as_sigma(sigma, n, lr)
        clean = is_delta(kernel) & (sigma.view(-1) == 0) & torch.tensor([m == 'gaussian8' for m in names],
                                                                      device=lr.device)
        return kernel, sigma, names, clean

    def clean_samples(self, lr, kernel=None, sigma=None, degradation='gaussian8'):
        """(N,) bool: the samples of :meth:`forward`'s arguments that go to the shipped clean-path refiner
        (no padding, any size)."""
        return self._degradation(lr, kernel, sigma, degradation)[3]

    def backbone_input(self, lr, kernel=None, sigma=None, degradation='gaussian8'):
        """The LR (N, 3, H, W) the backbone runs on: the LR Wiener filter's estimate of the clean bicubic
        LR (clamped to [0, 1]), or ``lr`` itself for clean samples and without ``prefilter_lambda``."""
        kernel, sigma, names, clean = self._degradation(lr, kernel, sigma, degradation)
        if self.prefilter_lambda is None or clean.all():
            return lr
        p = self.pad
        psf = degradation_psf(kernel, self.upscale, names)
        filtered = self._prefiltered(self._pad(lr, p, names), psf, sigma, names)
        return torch.where(clean.view(-1, 1, 1, 1), lr, filtered[..., p:filtered.shape[-2] - p, p:filtered.shape[-1] - p])

    def _prefiltered(self, lr, psf, sigma, names):
        """(N, C, H, W) the LR Wiener filter's estimate of the clean bicubic LR of ``lr`` (N, C, H, W), padded
        already, clamped to [0, 1] (``lr`` itself without ``prefilter_lambda``); ``psf`` (N, 1, K, K) from
        :func:`degradation_psf`, σ (N, 1, 1, 1)."""
        if self.prefilter_lambda is None:
            return lr
        floor, growth = (torch.tensor(per_sample(value, names), dtype=torch.float64, device=lr.device)
                         for value in (self.prefilter_lambda, self.prefilter_noise_lambda))
        lam = floor + growth * noise_ratio(sigma.view(-1).double())
        return lr_wiener_to_bicubic(lr, psf, self.upscale, lam).clamp(0, 1)

    def forward(self, sr, lr, kernel=None, sigma=None, degradation='gaussian8'):
        s = self.upscale
        if sr.shape[-2:] != (lr.shape[-2] * s, lr.shape[-1] * s):
            raise ValueError(f'NonBlindRefineNet: SR of size {tuple(sr.shape[-2:])} does not match LR '
                             f'{tuple(lr.shape[-2:])} x{s}')
        kernel, sigma, names, clean = self._degradation(lr, kernel, sigma, degradation)
        if clean.all():
            return self.clean(sr, lr)
        restored = self.restore(sr, lr, kernel, sigma, names)
        if not clean.any():
            return restored
        return torch.where(clean.view(-1, 1, 1, 1), self.clean(sr, lr), restored)
