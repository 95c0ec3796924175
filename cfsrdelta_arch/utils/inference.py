"""Inference mechanisms written once: x8 self-ensemble, overlapping-tile inference and padding to a
size multiple (window-attention backbones).

All take a function ``fn`` mapping an LR batch (N, C, H, W) in [0, 1] to its SR (N, C, s*H, s*W),
so the BasicSR models, the inference CLI and the benchmark scripts share them.
"""
import functools

import torch
from torch.nn import functional as F

# LR pixels of real context around each tile. scripts/bench_tiling.py (official CFSR x4, Set14
# baboon/barbara/bridge, tiles 32 and 64) gives the largest tiled-vs-whole difference before
# rounding, in 8-bit levels: overlap 16: 4.6, 20: 1.5, 24: 0.31, 32: 0.004. 24 is the smallest
# overlap within one level; 32 keeps a wide margin for other images and for a refiner's extra context
# (CFSR-Delta) at about 10% more time than 24 with 256-pixel tiles.
DEFAULT_TILE_OVERLAP = 32


def dihedral(x, k):
    """The k-th of the 8 dihedral transforms (k in 0..7): optional transpose, then rot90 k%4 times."""
    if k >= 4:
        x = x.transpose(-2, -1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def inverse_dihedral(x, k):
    """Undo :func:`dihedral` ``k`` (also maps an SR of the transformed LR back to the original frame)."""
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    if k >= 4:
        x = x.transpose(-2, -1)
    return x


def self_ensemble(fn, x, *aligned):
    """Mean of ``fn`` over the 8 flip/transpose variants of ``x`` (each mapped back first).

    ``aligned``: tensors that must undergo the same flip/transpose as the image and are passed to
    ``fn`` after it, e.g. a non-blind network's blur kernel (..., k, k).
    Costs 8 forward passes; gains about +0.085 dB for CFSR x4 on Set5 (README, "Results").
    """
    out = None
    for k in range(8):
        y = inverse_dihedral(fn(dihedral(x, k), *(dihedral(a, k) for a in aligned)), k)
        out = y if out is None else out + y
    return out / 8


def tiled_forward(fn, x, scale, tile_size, tile_overlap=DEFAULT_TILE_OVERLAP, store=None, margin=0):
    """Run ``fn`` on overlapping LR tiles and put their cores together into the full SR image.

    Each tile of ``tile_size`` LR pixels is run inside a window of ``tile_size + 2 * tile_overlap``
    LR pixels (or the whole image where it is smaller) around it; windows at the image border are
    shifted inward rather than cut, so every call of ``fn`` gets the same input size (a runtime
    compiled for static shapes compiles once: app/backends.py) and edge tiles get more context, not
    less. Only the tile's own core is kept, so every output pixel comes from a window in which it
    has at least ``tile_overlap`` LR pixels of context (or the image border). With an overlap at least the network's effective receptive radius the result equals
    whole-image inference; see scripts/bench_tiling.py for the measured seam error.

    Args:
        fn (callable): LR (N, C, h, w) -> SR (N, C', scale*h, scale*w).
        x (Tensor): LR batch (N, C, H, W); ``fn`` only ever sees crops of it.
        scale (int): upscale factor of ``fn``.
        tile_size (int): core tile size in LR pixels (> 0).
        tile_overlap (int): context added around each core, in LR pixels (>= 0).
        store (callable | None): ``store(rows, cols, sr)`` receives each core as it is computed:
            ``sr`` (N, C', h, w) is the SR at output rows ``rows`` and columns ``cols`` (slices).
            Lets the caller keep the output in its own form, e.g. a preallocated uint8 image, so
            that float SR data is held for one tile at a time. None: the cores are copied into a
            new tensor like ``x`` (then C' must equal C).
        margin (int): ``x`` carries this many LR pixels of context on every side (e.g. the image
            continued past its border as its degradation model continues it) that windows may use
            but that are not output: the output is (H - 2 margin, W - 2 margin) x ``scale``.

    Returns:
        Tensor | None: (N, C', scale*H', scale*W') (H', W': without the margin) when ``store`` is
        None, else None.
    """
    if tile_size <= 0 or tile_overlap < 0 or margin < 0:
        raise ValueError(f'tile_size must be > 0, tile_overlap and margin >= 0, got {tile_size}, {tile_overlap}, '
                         f'{margin}')
    n, c, h, w = x.shape
    out = None
    if store is None:
        if h <= tile_size and w <= tile_size and not margin:
            return fn(x)
        out = x.new_empty(n, c, (h - 2 * margin) * scale, (w - 2 * margin) * scale)

        def store(rows, cols, sr):
            out[..., rows, cols] = sr
    win_h, win_w = min(tile_size + 2 * tile_overlap, h), min(tile_size + 2 * tile_overlap, w)
    for top in range(margin, h - margin, tile_size):  # cores in x's coordinates, windows clamped to x
        for left in range(margin, w - margin, tile_size):
            bottom, right = min(top + tile_size, h - margin), min(left + tile_size, w - margin)
            t0 = min(max(top - tile_overlap, 0), h - win_h)
            l0 = min(max(left - tile_overlap, 0), w - win_w)
            sr = fn(x[..., t0:t0 + win_h, l0:l0 + win_w])
            store(slice((top - margin) * scale, (bottom - margin) * scale),
                  slice((left - margin) * scale, (right - margin) * scale),
                  sr[..., (top - t0) * scale:(bottom - t0) * scale, (left - l0) * scale:(right - l0) * scale])
    return out


def padded_forward(fn, x, multiple):
    """Run ``fn`` on ``x`` padded at the bottom/right to multiples of ``multiple``, then crop.

    For networks that only accept sizes divisible by some number, e.g. window attention (SwinIR:
    ``window_size``). The padding mirrors the image (reflect; replicate where the image is smaller
    than the padding); the output is cropped to ``scale * (H, W)``, the scale being read from the
    output's size, so padding only affects pixels near the bottom/right border.

    Args:
        fn (callable): LR (N, C, h, w) -> SR (N, C, s*h, s*w).
        x (Tensor): LR batch (N, C, H, W).
        multiple (int): required divisor of h and w (1: no padding).

    Returns:
        Tensor: (N, C, s*H, s*W).
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return fn(x)
    mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
    y = fn(F.pad(x, (0, pad_w, 0, pad_h), mode=mode))
    scale = y.shape[-2] // (h + pad_h)
    return y[..., :h * scale, :w * scale]


def super_resolve(fn, x, scale, self_ensemble_on=False, tile_size=None, tile_overlap=DEFAULT_TILE_OVERLAP,
                  pad_multiple=1, store=None, margin=0):
    """Full inference recipe: optional tiling around optional self-ensemble around optional padding.

    Args:
        fn (callable): LR -> SR network function.
        x (Tensor): LR batch (N, C, H, W) in [0, 1].
        scale (int): upscale factor.
        self_ensemble_on (bool): average the 8 dihedral variants.
        tile_size (int | None): LR tile size; None runs the whole image (as one tile).
        tile_overlap (int): LR context around each tile.
        pad_multiple (int): pad every input of ``fn`` to multiples of this (see :func:`padded_forward`).
        store (callable | None): receives the SR piece by piece instead of it being returned (see
            :func:`tiled_forward`).
        margin (int): LR context around ``x`` that is not output (see :func:`tiled_forward`).

    Returns:
        Tensor | None: SR (N, C, scale*H, scale*W), unclamped; None when ``store`` is given.
    """
    if pad_multiple > 1:
        fn = functools.partial(padded_forward, fn, multiple=pad_multiple)
    run = (lambda t: self_ensemble(fn, t)) if self_ensemble_on else fn
    return tiled_forward(run, x, scale, tile_size or max(x.shape[-2:]), tile_overlap, store, margin)
