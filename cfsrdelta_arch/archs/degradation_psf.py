"""Point-spread functions (PSFs) of the degradation models of docs/degradation_protocol.md.

Both models become ``y = (x ⊗ psf)[0::s, 0::s] + n``, the form USRNet's FFT data step solves:

- ``classical``: the blur kernel itself (blur, then the upper-left pixel of each s x s block);
- ``gaussian8``: the blur kernel convolved with the MATLAB bicubic antialiasing kernel, whose
  taps are off-centre (LR pixel i sits at HR coordinate s·i + (s-1)/2), so this PSF is not
  centred: its centre index is the offset of the sample at ``[0::s]``.

Exact away from the borders (the protocol's boundaries are reflect/symmetric or circular; the
data step's is circular, see NonBlindRefineNet's padding, :func:`pad_like_degradation`).

:func:`lr_wiener_to_bicubic` uses the same PSFs at LR resolution: it maps a degraded LR to an estimate
of the clean bicubic LR of the same HR image, the input a bicubic-trained backbone was made for.
"""
import math

import torch
from torch.nn import functional as F

from .bicubic_layers import _interior_taps

DEGRADATIONS = ('gaussian8', 'classical')
# Models whose LR, flipped or transposed, is the same model's LR of the flipped HR with the kernel flipped
# the same way (the x8 self-ensemble needs it): MATLAB's bicubic samples block centres, while 'classical'
# decimation keeps the top-left pixel of each s x s block, which a flip moves to another corner.
FLIP_EQUIVARIANT = ('gaussian8',)


def bicubic_psf_1d(scale):
    """1-D MATLAB bicubic downsampling by 1/``scale`` as a convolution kernel of odd length 2r+1.

    imresize computes ``y[i] = Σ_t w[t] · x[s·i + off + t]``; as a convolution sampled at ``s·i``,
    ``y[i] = Σ_m k[m] · x[s·i - m]``, so ``k[m] = w[-m - off]``, stored at index ``r + m``.

    Returns:
        Tensor: float64 (2r+1,), sums to 1.
    """
    n = 8
    weights, first = _interior_taps(n * scale, n, 1.0 / scale)
    taps, offset = weights[n // 2], int(first[n // 2]) - scale * (n // 2)
    radius = max(abs(offset), abs(offset + len(taps) - 1))
    kernel = torch.zeros(2 * radius + 1, dtype=torch.float64)
    for t, w in enumerate(taps):
        kernel[radius - offset - t] = w
    return kernel


def pad_like_degradation(x, pixels, model):
    """Pad (..., H, W) by ``pixels`` on every side the way ``model``'s LR continues past its border:
    periodically for 'classical' (its blur is circular), mirrored with the edge pixel repeated for
    'gaussian8' (its blur and bicubic use symmetric borders; period 2 x size). By indexing, so any
    dtype and any ``pixels`` (more than the image: the pattern repeats)."""
    def indices(size):
        index = torch.arange(-pixels, size + pixels, device=x.device)
        if model == 'classical':
            return index % size
        index = index % (2 * size)
        return torch.where(index < size, index, 2 * size - 1 - index)
    return x[..., indices(x.shape[-2]), :][..., indices(x.shape[-1])]


def check_flip_equivariant(names):
    """One-line ValueError unless every degradation model in ``names`` is in :data:`FLIP_EQUIVARIANT`."""
    other = sorted(set(names) - set(FLIP_EQUIVARIANT))
    if other:
        raise ValueError(f"self-ensemble is not supported on '{other[0]}' LR (a flipped LR samples another corner "
                         'of each s x s block, which no flipped kernel describes)')


def check_degradations(degradation, batch):
    """Per-sample list of degradation model names from one name or a sequence of ``batch`` names."""
    names = [degradation] * batch if isinstance(degradation, str) else list(degradation)
    unknown = sorted(set(names) - set(DEGRADATIONS))
    if unknown or len(names) != batch:
        raise ValueError(f'degradation must be one of {", ".join(DEGRADATIONS)} (or one per sample); '
                         f'got {degradation!r} for a batch of {batch}')
    return names


def center_pad(kernels, size):
    """Zero-pad odd (N, 1, k, k) kernels to (N, 1, size, size), centre kept at the centre."""
    pad = (size - kernels.shape[-1]) // 2
    return F.pad(kernels, (pad, pad, pad, pad))


def degradation_psf(kernel, scale, degradation):
    """PSF (N, 1, K, K) such that ``y = (x ⊗ psf)[0::s, 0::s]`` (centre index K // 2).

    Args:
        kernel (Tensor): blur kernels (N, kh, kw) or (N, 1, kh, kw), odd square, each summing to 1.
        scale (int): the SR scale.
        degradation (str | Sequence[str]): 'gaussian8' or 'classical', for all samples or per sample.

    Returns:
        Tensor: (N, 1, K, K) in the kernel's dtype; K = kh for an all-classical batch, else
        kh + len(bicubic_psf_1d(scale)) - 1.
    """
    kernel = kernel.unsqueeze(1) if kernel.dim() == 3 else kernel
    if kernel.shape[-1] != kernel.shape[-2] or kernel.shape[-1] % 2 == 0:
        raise ValueError(f'blur kernels must be odd and square, got {tuple(kernel.shape[-2:])}')
    names = check_degradations(degradation, kernel.shape[0])
    bicubic = [name == 'gaussian8' for name in names]
    if not any(bicubic):
        return kernel
    taps = bicubic_psf_1d(scale).to(kernel)
    cubic = torch.outer(taps, taps)[None, None]
    full = cubic.shape[-1] - 1
    # full 2-D convolution: correlation of the padded kernel with the flipped cubic PSF
    blurred = F.conv2d(F.pad(kernel, (full, full, full, full)), cubic.flip(-2, -1))
    mask = torch.tensor(bicubic, device=kernel.device).view(-1, 1, 1, 1)
    return torch.where(mask, blurred, center_pad(kernel, blurred.shape[-1]))


def lr_frequency_response(psf, height, width, scale):
    """Response (N, H, W) complex128 of the HR PSFs at the frequencies of an H x W LR grid's FFT.

    An LR frequency u (cycles per LR pixel) is u / s cycles per HR pixel; the PSF's phase is taken
    about its centre index K // 2, the HR pixel that LR pixel 0 samples. Aliasing is ignored.

    Args:
        psf (Tensor): (N, 1, K, K), odd K (as :func:`degradation_psf` returns).
    """
    taps = torch.arange(psf.shape[-1], dtype=torch.float64, device=psf.device) - psf.shape[-1] // 2

    def phases(n):
        freq = torch.fft.fftfreq(n, dtype=torch.float64, device=psf.device) / scale
        return torch.exp(-2j * math.pi * freq[:, None] * taps[None])

    return phases(height) @ psf[:, 0].to(torch.complex128) @ phases(width).T


def lr_wiener_to_bicubic(lr, psf, scale, lam):
    """Wiener estimate of the clean bicubic LR from an LR degraded by ``psf`` (circular boundary).

    With D, B the LR-grid responses of the degradation's PSF and of the bicubic one, the filter is
    ``B · conj(D) / (|D|² + λ)``: it undoes the blur (and, for 'classical', the (s-1)/2-pixel shift
    of its sampling) within the band the noise allows; λ is the noise-to-signal ratio. Pad first for
    another boundary.

    Args:
        lr (Tensor): (N, C, H, W). psf (Tensor): (N, 1, K, K) from :func:`degradation_psf`.
        scale (int): s. lam (Tensor): (N,) or (N, 1, 1, 1) regularisation λ > 0.

    Returns:
        Tensor: (N, C, H, W) in ``lr``'s dtype, not clamped.
    """
    height, width = lr.shape[-2:]
    degradation = lr_frequency_response(psf.double(), height, width, scale)
    bicubic = lr_frequency_response(degradation_psf(psf.new_ones(1, 1, 1, 1).double(), scale, 'gaussian8'),
                                    height, width, scale)
    lam = torch.as_tensor(lam).to(device=psf.device, dtype=torch.float64).reshape(-1, 1, 1)
    gain = bicubic * degradation.conj() / (degradation.abs() ** 2 + lam)
    spectrum = torch.fft.fft2(lr)
    return torch.fft.ifft2(spectrum * gain[:, None].to(spectrum.dtype)).real
