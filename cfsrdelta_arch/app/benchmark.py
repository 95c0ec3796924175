"""Benchmark evaluation written once: CFSR and CFSR-Delta refiners, single and x8 self-ensemble.

Used by scripts/bench_results_table.py (the README's results table) and scripts/run_benchmark.py
(the main job). Each HR image is mod-cropped and downsampled per the protocol; the backbone runs
once per flip/transpose variant of the LR and every refiner reuses those outputs: "single" is the
identity variant, "x8" the mean of all 8 mapped back, i.e. what ``val.self_ensemble: true`` gives.
Metrics: BasicSR's calculate_psnr/ssim on Y with crop_border = scale.
"""
import functools
import os
import statistics
import sys
import time

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim

from cfsrdelta_arch.utils.flops import count_conv_macs
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from cfsrdelta_arch.utils.inference import dihedral, inverse_dihedral, self_ensemble
from cfsrdelta_arch.data.lr_generation import bicubic_downsample, mod_crop
from .engine import SREngine

BACKBONE = 'CFSR'


def load_networks(scale, refiners, options_dir):
    """(backbone, {refiner name: refiner}) for one scale, from the test option files
    ``test_CFSR_x<s>.yml`` and ``test_CFSRDelta_<name>_x<s>.yml`` in ``options_dir``."""
    backbone = SREngine.from_option_file(os.path.join(options_dir, f'test_CFSR_x{scale}.yml')).net
    found = {}
    for name in refiners:
        path = os.path.join(options_dir, f'test_CFSRDelta_{name}_x{scale}.yml')
        found[name] = SREngine.from_option_file(path).net.refiner
    return backbone, found


@torch.inference_mode()
def evaluate_image(hr, scale, backbone, refiners, ensemble=True):
    """PSNR/SSIM of every method on one uint8 BGR HR image.

    Returns {(method, 'single'|'x8'): (psnr, ssim)}; method is 'CFSR' or a refiner name.
    """
    hr = mod_crop(hr, scale)
    lr = image_to_tensor(bicubic_downsample(hr, scale), bgr=True)
    sums, singles = {}, {}
    for k in range(8 if ensemble else 1):
        lr_k = dihedral(lr, k)
        base = backbone(lr_k)
        clamped = base.clamp(0, 1)  # what BackboneDelta feeds its refiner
        outs = {BACKBONE: base, **{name: ref(clamped, lr_k) for name, ref in refiners.items()}}
        for name, out in outs.items():
            out = inverse_dihedral(out, k)
            sums[name] = out if k == 0 else sums[name] + out
            singles.setdefault(name, out)
    result = {}
    for name in sums:
        modes = [('single', singles[name])] + ([('x8', sums[name] / 8)] if ensemble else [])
        for mode, out in modes:
            sr = tensor_to_image(out, bgr=True)
            result[(name, mode)] = (calculate_psnr(sr, hr, scale, test_y_channel=True),
                                    calculate_ssim(sr, hr, scale, test_y_channel=True))
    return result


def evaluate_images(images, scale, backbone, refiners, label, ensemble=True):
    """Mean PSNR/SSIM per (method, mode) over ``images`` = [(name, uint8 BGR HR)], with progress."""
    acc = {}
    for i, (_, hr) in enumerate(images):
        for key, value in evaluate_image(hr, scale, backbone, refiners, ensemble).items():
            acc.setdefault(key, []).append(value)
        print(f'\r  {label} {i + 1}/{len(images)}', end='\n' if i + 1 == len(images) else '', file=sys.stderr,
              flush=True)
    return {key: tuple(np.mean(v, axis=0)) for key, v in acc.items()}


@torch.inference_mode()
def measure_cost(scale, backbone, refiners, repeats, out_hw=(720, 1280), x8_repeats=0):
    """{(method, mode): (params, conv GMACs, latency ratio vs backbone, median seconds)} for an
    ``out_hw`` output; mode 'single', plus 'x8' (self-ensemble: 8 passes) when ``x8_repeats`` > 0.
    The methods' timings are interleaved in one loop so machine load affects all alike; the x8
    rows get their own (shorter) interleaved loop, and every ratio is against the backbone alone."""
    lr = torch.rand(1, 3, out_hw[0] // scale, out_hw[1] // scale)
    base = backbone(lr).clamp(0, 1)
    n_backbone = sum(p.numel() for p in backbone.parameters())
    macs_backbone = count_conv_macs(backbone, lr)
    sizes = {BACKBONE: (n_backbone, macs_backbone / 1e9)}
    for name, ref in refiners.items():
        sizes[name] = (n_backbone + sum(p.numel() for p in ref.parameters()),
                       (macs_backbone + count_conv_macs(ref, base, lr)) / 1e9)

    def method(name):  # LR -> SR of one method, as BackboneDelta computes it
        if name == BACKBONE:
            return backbone
        return lambda x: refiners[name](backbone(x).clamp(0, 1), x)

    def median_seconds(fns, n):
        times = {key: [] for key in fns}
        for _ in range(n):
            for key, fn in fns.items():
                start = time.perf_counter()
                fn(lr)
                times[key].append(time.perf_counter() - start)
        return {key: statistics.median(t) for key, t in times.items()}

    seconds = median_seconds({(name, 'single'): method(name) for name in sizes}, repeats)
    if x8_repeats > 0:
        seconds.update(median_seconds({(name, 'x8'): functools.partial(self_ensemble, method(name))
                                       for name in sizes}, x8_repeats))
    t0 = seconds[(BACKBONE, 'single')]
    return {(name, mode): (sizes[name][0], sizes[name][1] * (8 if mode == 'x8' else 1), t / t0, t)
            for (name, mode), t in seconds.items()}


def method_label(name, mode='single'):
    label = BACKBONE if name == BACKBONE else f'{BACKBONE} + {name}'
    return label + (' (x8 self-ensemble)' if mode == 'x8' else '')


def format_quality_table(quality, datasets, methods, modes=('single', 'x8')):
    """Markdown rows 'PSNR / SSIM' per method and dataset; ``quality[dataset][(method, mode)]``."""
    lines = ['| method | ' + ' | '.join(datasets) + ' |', '|---|' + '---|' * len(datasets)]
    for name in methods:
        for mode in modes:
            cells = [f'{quality[d][(name, mode)][0]:.4f} / {quality[d][(name, mode)][1]:.4f}' for d in datasets]
            lines.append(f'| {method_label(name, mode)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def format_cost_table(cost):
    """Markdown table of :func:`measure_cost`'s result."""
    lines = ['| method | params | GMACs (1280x720 out) | CPU latency | vs CFSR |', '|---|---|---|---|---|']
    for (name, mode), (params, gmacs, ratio, seconds) in cost.items():
        lines.append(f'| {method_label(name, mode)} | {params:,d} | {gmacs:.2f} | {seconds * 1000:.0f} ms '
                     f'| {ratio:.3f}x |')
    return '\n'.join(lines)
