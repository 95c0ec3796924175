"""CFSR: the ConvFormer lightweight SR network (Wu et al., "Transforming Image Super-Resolution: A
ConvFormer-based Efficient Approach", IEEE TIP 2024; official code github.com/Aitical/CFSR).

Two forms share one class:
- deploy form (``deploy=True``, the default): each EFN has a single depthwise ``pos`` conv; the
  official x2/x3/x4 weights load into it strictly.
- train form (``deploy=False``): each EFN also carries the three fixed-mask edge branches (Sobel-x,
  Sobel-y, Laplacian) with learned per-channel scales and biases, for training CFSR from scratch.
  :meth:`CFSR.merge` folds them into ``pos`` exactly and switches the module to deploy form.
"""
import torch
from torch import nn
from torch.nn import functional as F

from cfsrdelta_arch.utils.compat import register_arch
from cfsrdelta_arch.utils.weights import check_state_dict

RGB_MEAN = (0.4488, 0.4371, 0.4040)

# Edge masks exactly as released (row-major). The Sobel-x mask is not the textbook one: kept as is
# so that trained-from-scratch models match the published design.
EDGE_MASKS = {
    'sobel_x': ((0., 1., -1.), (2., 0., -2.), (1., 0., -1.)),
    'sobel_y': ((1., 2., 1.), (0., 0., 0.), (-1., -2., -1.)),
    'laplacian': ((1., 0., 0.), (1., -4., 1.), (0., 1., 0.)),
}


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (eps 1e-6), affine per channel."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class LargeKernelConv(nn.Module):
    """Depthwise ``k x k`` conv (named ``lkb_reparam`` as in the released weights)."""

    def __init__(self, dim, kernel_size):
        super().__init__()
        self.lkb_reparam = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x):
        return self.lkb_reparam(x)


class ConvMod(nn.Module):
    """ConvFormer token mixer: ``proj(a(norm(x)) * v(norm(x)))``."""

    def __init__(self, dim, dw_size):
        super().__init__()
        self.norm = ChannelLayerNorm(dim)
        self.a = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(), LargeKernelConv(dim, dw_size))
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        y = self.norm(x)
        return self.proj(self.a(y) * self.v(y))


class EFN(nn.Module):
    """Edge-preserving feed-forward network.

    Train form adds three depthwise edge branches (fixed mask x learned per-channel scale, plus a
    learned bias) in parallel with ``pos``; deploy form has ``pos`` only.
    """

    def __init__(self, dim, hidden, deploy=True):
        super().__init__()
        self.norm = ChannelLayerNorm(dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.deploy = deploy
        if not deploy:
            for name, mask in EDGE_MASKS.items():
                self.register_buffer(f'{name}_mask', torch.tensor(mask).view(1, 1, 3, 3), persistent=False)
                self.register_parameter(f'{name}_scale', nn.Parameter(torch.randn(hidden, 1, 1, 1) * 1e-3))
                self.register_parameter(f'{name}_bias', nn.Parameter(torch.randn(hidden) * 1e-3))

    def _edge_kernel_and_bias(self):
        """Sum of the three edge branches as one depthwise (hidden, 1, 3, 3) kernel and bias."""
        kernel = sum(getattr(self, f'{n}_scale') * getattr(self, f'{n}_mask') for n in EDGE_MASKS)
        bias = sum(getattr(self, f'{n}_bias') for n in EDGE_MASKS)
        return kernel, bias

    def forward(self, x):
        h = self.act(self.fc1(self.norm(x)))
        e = self.pos(h)
        if not self.deploy:
            kernel, bias = self._edge_kernel_and_bias()
            e = e + F.conv2d(h, kernel, bias, padding=1, groups=h.shape[1])
        return self.fc2(h + self.act(e))

    @torch.no_grad()
    def merge(self):
        """Fold the edge branches into ``pos`` (exact: all are linear depthwise 3x3 convs)."""
        if self.deploy:
            return
        kernel, bias = self._edge_kernel_and_bias()
        self.pos.weight.add_(kernel)
        self.pos.bias.add_(bias)
        for name in EDGE_MASKS:
            delattr(self, f'{name}_scale')
            delattr(self, f'{name}_bias')
            delattr(self, f'{name}_mask')
        self.deploy = True


class Block(nn.Module):
    """ConvFormer block: two residual branches (ConvMod, EFN), each scaled per channel."""

    def __init__(self, dim, dw_size, mlp_ratio, deploy):
        super().__init__()
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), 1e-6))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), 1e-6))
        self.attn = ConvMod(dim, dw_size)
        self.mlp = EFN(dim, int(dim * mlp_ratio), deploy)

    def forward(self, x):
        x = x + self.layer_scale_1[None, :, None, None] * self.attn(x)
        return x + self.layer_scale_2[None, :, None, None] * self.mlp(x)


class Layer(nn.Module):
    """``depth`` blocks followed by a residual 1x1 conv."""

    def __init__(self, dim, depth, dw_size, mlp_ratio, deploy):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, dw_size, mlp_ratio, deploy) for _ in range(depth))
        self.conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.conv(x) + x


@register_arch
class CFSR(nn.Module):
    """CFSR super-resolution network.

    Args:
        in_chans (int): image channels (3, RGB).
        embed_dim (int): feature width (48 in the release).
        depths (tuple[int]): blocks per layer ((6, 6) in the release).
        dw_size (int): large depthwise kernel size (9).
        mlp_ratio (float): EFN hidden width / embed_dim (2).
        img_range (float): multiplier applied after mean subtraction (1.0).
        upscale (int): 2, 3 or 4.
        upsampler (str): only 'pixelshuffledirect' (the released design) is supported.
        deploy (bool): True builds the merged form the official weights load into; False adds the
            trainable edge branches (call :meth:`merge` before export).

    Input (N, 3, H, W) RGB in [0, 1]; output (N, 3, H*upscale, W*upscale), same range (unclamped).
    """

    def __init__(self, in_chans=3, embed_dim=48, depths=(6, 6), dw_size=9, mlp_ratio=2, img_range=1.0,
                 upscale=4, upsampler='pixelshuffledirect', deploy=True):
        super().__init__()
        if upsampler != 'pixelshuffledirect':
            raise ValueError(f"CFSR: upsampler '{upsampler}' is not supported; the released design uses "
                             "'pixelshuffledirect'")
        if upscale not in (2, 3, 4):
            raise ValueError(f'CFSR: upscale must be 2, 3 or 4, got {upscale}')
        self.upscale = upscale
        self.img_range = img_range
        self.register_buffer('mean', torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.layers = nn.ModuleList(Layer(embed_dim, d, dw_size, mlp_ratio, deploy) for d in depths)
        self.norm = ChannelLayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.upsample = nn.Sequential(
            nn.Conv2d(embed_dim, in_chans * upscale * upscale, 3, padding=1), nn.PixelShuffle(upscale))

    @property
    def deploy(self):
        return all(m.deploy for m in self.modules() if isinstance(m, EFN))

    def forward(self, x):
        x = (x - self.mean) * self.img_range
        feat = self.conv_first(x)
        y = feat
        for layer in self.layers:
            y = layer(y)
        y = self.conv_after_body(self.norm(y)) + feat
        return self.upsample(y) / self.img_range + self.mean

    def merge(self):
        """Fold every EFN's edge branches into ``pos``; outputs are unchanged (up to float rounding)."""
        for m in self.modules():
            if isinstance(m, EFN):
                m.merge()
        return self

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """``nn.Module.load_state_dict`` that first names a wrong network or scale in one line."""
        check_state_dict(self, state_dict, arch_name='CFSR', scale_key='upsample.0.weight',
                         scale_of=lambda shape: round((shape[0] // 3) ** 0.5), scale=self.upscale)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
