"""USRNet: deep unfolding network for non-blind SR under the classical degradation y = (x ⊗ k)↓s + n.

Zhang, Van Gool, Timofte, "Deep Unfolding Network for Image Super-Resolution", CVPR 2020. Written from
the paper and the module structure of KAIR's ``models/network_usrnet.py`` / ``basicblock.py`` (MIT
licence, Kai Zhang), so that the KAIR model-zoo files ``usrnet.pth`` / ``usrnet_tiny.pth`` load
strictly (parameter names ``d`` (no parameters), ``p.m_head`` ... ``p.m_tail``, ``h.mlp.*``).
The FFT code uses ``torch.fft`` complex tensors instead of KAIR's (real, imag) pairs.

Each of ``n_iter`` iterations alternates a closed-form data step (:class:`DataNet`, circular
boundary, exact for the 'classical' setting of docs/degradation_protocol.md) and a learned prior step
(:class:`ResUNet`, a denoiser conditioned on β); :class:`HyPaNet` maps (σ, s) to every iteration's α, β.
"""
import torch
from torch import nn
from torch.nn import functional as F

from cfsrdelta_arch.utils.compat import register_arch
from cfsrdelta_arch.utils.weights import check_state_dict


def sequential(*modules):
    """``nn.Sequential`` of the modules, or the module itself when there is one (KAIR's
    ``B.sequential``, which decides the parameter names: ``m_head.weight``, not ``m_head.0.weight``)."""
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


class ResBlock(nn.Module):
    """x + conv(act(conv(x))), 3x3 convolutions without bias; parameters ``res.0``, ``res.2``."""

    def __init__(self, nc, act_mode='R'):
        super().__init__()
        act = {'R': nn.ReLU(inplace=True), 'L': nn.LeakyReLU(0.2, inplace=True)}[act_mode]
        self.res = nn.Sequential(nn.Conv2d(nc, nc, 3, 1, 1, bias=False), act, nn.Conv2d(nc, nc, 3, 1, 1, bias=False))

    def forward(self, x):
        return x + self.res(x)


class ResUNet(nn.Module):
    """The prior module: a 4-level residual U-Net (x_k = P(z_k, β_k)), input padded to multiples of 8.

    Args:
        in_nc (int): image channels + 1 (the β map). out_nc (int): image channels.
        nc (list[int]): channels of the 4 levels. nb (int): ResBlocks per level.
        act_mode (str): 'R' (ReLU) or 'L' (LeakyReLU 0.2).
        downsample_mode (str): 'strideconv' (2x2, stride 2). upsample_mode (str): 'convtranspose'
            (2x2, stride 2). KAIR's other modes are not implemented (no released model uses them).
    """

    def __init__(self, in_nc=4, out_nc=3, nc=(64, 128, 256, 512), nb=2, act_mode='R', downsample_mode='strideconv',
                 upsample_mode='convtranspose'):
        super().__init__()
        if act_mode not in ('R', 'L') or downsample_mode != 'strideconv' or upsample_mode != 'convtranspose':
            raise ValueError(f"USRNet supports act_mode 'R'/'L', downsample_mode 'strideconv' and upsample_mode "
                             f"'convtranspose'; got {act_mode!r}, {downsample_mode!r}, {upsample_mode!r}")

        def blocks(c):
            return [ResBlock(c, act_mode) for _ in range(nb)]

        self.m_head = nn.Conv2d(in_nc, nc[0], 3, 1, 1, bias=False)
        self.m_down1 = sequential(*blocks(nc[0]), nn.Conv2d(nc[0], nc[1], 2, 2, 0, bias=False))
        self.m_down2 = sequential(*blocks(nc[1]), nn.Conv2d(nc[1], nc[2], 2, 2, 0, bias=False))
        self.m_down3 = sequential(*blocks(nc[2]), nn.Conv2d(nc[2], nc[3], 2, 2, 0, bias=False))
        self.m_body = sequential(*blocks(nc[3]))
        self.m_up3 = sequential(nn.ConvTranspose2d(nc[3], nc[2], 2, 2, 0, bias=False), *blocks(nc[2]))
        self.m_up2 = sequential(nn.ConvTranspose2d(nc[2], nc[1], 2, 2, 0, bias=False), *blocks(nc[1]))
        self.m_up1 = sequential(nn.ConvTranspose2d(nc[1], nc[0], 2, 2, 0, bias=False), *blocks(nc[0]))
        self.m_tail = nn.Conv2d(nc[0], out_nc, 3, 1, 1, bias=False)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 8, 0, -h % 8), mode='replicate')  # three stride-2 levels
        x1 = self.m_head(x)
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        x = self.m_body(x4)
        x = self.m_up3(x + x4)
        x = self.m_up2(x + x3)
        x = self.m_up1(x + x2)
        return self.m_tail(x + x1)[..., :h, :w]


def p2o(kernel, shape):
    """Optical transfer function of a point-spread function: FFT of the kernel zero-padded to ``shape``
    and rolled so that its centre (index size // 2) sits at the origin.

    Args:
        kernel (Tensor): (N, 1, kh, kw), real. shape (tuple[int, int]): (H, W) of the HR image.

    Returns:
        Tensor: complex (N, 1, H, W); multiplying an image's FFT by it is circular convolution.

    Raises:
        ValueError: the kernel is larger than ``shape``.
    """
    if kernel.shape[-2] > shape[0] or kernel.shape[-1] > shape[1]:
        raise ValueError(f'the blur PSF ({kernel.shape[-2]}x{kernel.shape[-1]}) is larger than the '
                         f'{shape[0]}x{shape[1]} HR image it blurs: use a smaller kernel or a larger image')
    otf = kernel.new_zeros(kernel.shape[:-2] + tuple(shape))
    otf[..., :kernel.shape[-2], :kernel.shape[-1]] = kernel
    otf = torch.roll(otf, (-(kernel.shape[-2] // 2), -(kernel.shape[-1] // 2)), dims=(-2, -1))
    return torch.fft.fft2(otf)


def block_mean(x, sf):
    """Mean of the sf x sf blocks of a spectrum (N, C, H, W) -> (N, C, H/sf, W/sf): the block
    (i, j) covers rows i·H/sf ... and columns j·W/sf ... (decimation by sf aliases these together)."""
    n, c, h, w = x.shape
    # two single-axis sums: ~6x faster on the CPU than one mean over the two strided axes (complex input)
    return x.view(n, c, sf, h // sf, sf, w // sf).sum(2).sum(3) / (sf * sf)


def data_terms(y, kernel, sf):
    """What the data step needs of (y, k, s), computed once per forward.

    Args:
        y (Tensor): LR (N, C, h, w). kernel (Tensor): (N, 1, kh, kw). sf (int): scale.

    Returns:
        tuple: FB = F(k) (N, 1, s·h, s·w), its conjugate FBC, F2B = |FB|² (real), and
        FBFy = conj(FB) · F(y zero-upsampled by s) (N, C, s·h, s·w), complex.
    """
    fb = p2o(kernel, (y.shape[-2] * sf, y.shape[-1] * sf))
    fbc = fb.conj()
    # y zero-upsampled by s has the LR spectrum repeated s x s times: one LR-sized FFT instead of an HR one
    return fb, fbc, (fb * fbc).real, fbc * torch.fft.fft2(y).repeat(1, 1, sf, sf)


class DataNet(nn.Module):
    """The data step (no parameters): the closed-form solution of

        z = argmin_z ||y - (z ⊗ k)↓s||² + α ||z - x||²

    with circular boundary, in the Fourier domain (Zhao et al.'s fast single-image SR solution);
    α (N, 1, 1, 1) > 0, x (N, C, H, W) the previous estimate, H = s·h.
    """

    def forward(self, x, fb, fbc, f2b, fbfy, alpha, sf):
        fr = fbfy + torch.fft.fft2(alpha * x)
        n, c, height, width = fr.shape
        inv_wbr = block_mean(fb * fr, sf) / (block_mean(f2b, sf) + alpha)  # (N, C, H/sf, W/sf)
        blocks = (sf, height // sf, sf, width // sf)  # the correction repeats over the sf x sf blocks
        fx = (fr.view(n, c, *blocks) - fbc.view(fbc.shape[0], fbc.shape[1], *blocks) * inv_wbr[:, :, None, :, None])
        fx = fx.view(n, c, height, width) / alpha
        # the solution is real, so its spectrum is Hermitian: the inverse needs the non-negative half only
        return torch.fft.irfft2(fx[..., :width // 2 + 1], s=(height, width))


class HyPaNet(nn.Module):
    """Hyper-parameter module: (σ, s) (N, 2, 1, 1) -> (α_1..α_n, β_1..β_n) (N, 2n, 1, 1), positive."""

    def __init__(self, in_nc=2, out_nc=16, channel=64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(in_nc, channel, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channel, channel, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channel, out_nc, 1), nn.Softplus())

    def forward(self, x):
        return self.mlp(x) + 1e-6


@register_arch
class USRNet(nn.Module):
    """USRNet; full model: the defaults (17,016,016 parameters); USRNet-tiny: ``n_iter=6, h_nc=32,
    nc=[16, 32, 64, 64]`` (590,332 parameters). Weights: KAIR model zoo (README, "Degraded inputs").

    Args:
        n_iter (int): unfolding iterations. h_nc (int): HyPaNet width.
        in_nc, out_nc, nc, nb, act_mode, downsample_mode, upsample_mode: see :class:`ResUNet`.
        upscale (int | None): the scale this model serves, for BasicSR's option checks only (the
            forward takes ``sf``); not part of KAIR's arguments.
    """

    def __init__(self, n_iter=8, h_nc=64, in_nc=4, out_nc=3, nc=(64, 128, 256, 512), nb=2, act_mode='R',
                 downsample_mode='strideconv', upsample_mode='convtranspose', upscale=None):
        super().__init__()
        self.d = DataNet()
        self.p = ResUNet(in_nc, out_nc, nc, nb, act_mode, downsample_mode, upsample_mode)
        self.h = HyPaNet(in_nc=2, out_nc=n_iter * 2, channel=h_nc)
        self.n = n_iter
        self.upscale = upscale

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """``nn.Module.load_state_dict`` that first names a wrong network or configuration in one line."""
        check_state_dict(self, state_dict, arch_name='USRNet')
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, x, k, sf, sigma):
        """Super-resolve ``x`` degraded by kernel ``k``, decimation by ``sf`` and noise ``sigma``.

        Args:
            x (Tensor): LR (N, 3, h, w) in [0, 1].
            k (Tensor): blur kernels (N, 1, kh, kw) or (N, kh, kw), each summing to 1, odd sizes.
            sf (int): scale factor.
            sigma (Tensor): noise levels (N, 1, 1, 1) or (N,), on the [0, 1] scale (σ_n / 255).

        Returns:
            Tensor: SR (N, 3, sf·h, sf·w), unclamped.
        """
        k = k.unsqueeze(1) if k.dim() == 3 else k
        sigma = sigma.reshape(-1, 1, 1, 1).to(x)
        fb, fbc, f2b, fbfy = data_terms(x, k.to(x), sf)
        x = F.interpolate(x, scale_factor=sf, mode='nearest')
        ab = self.h(torch.cat((sigma, torch.full_like(sigma, float(sf))), dim=1))
        for i in range(self.n):
            x = self.d(x, fb, fbc, f2b, fbfy, ab[:, i:i + 1], sf)
            beta = ab[:, self.n + i:self.n + i + 1].expand(-1, -1, x.shape[-2], x.shape[-1])
            x = self.p(torch.cat((x, beta), dim=1))
        return x
