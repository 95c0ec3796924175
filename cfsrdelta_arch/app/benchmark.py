"""Benchmark evaluation written once: CFSR and CFSR-Delta refiners, single and x8 self-ensemble.

Used by scripts/bench_results_table.py (the README's results table), scripts/run_benchmark.py (the
main job) and scripts/make_figures.py. Each HR image is mod-cropped and downsampled per the
benchmark protocol; every method runs through its own network's forward (``BackboneDelta.forward``
for the deltas), with the backbone computed once per input and handed to each delta as its
``base``; "x8" is :func:`cfsrdelta_arch.utils.inference.self_ensemble` of that, i.e. what
``val.self_ensemble: true`` gives. Metrics: BasicSR's calculate_psnr/ssim on Y, crop_border = scale.
"""
import functools
import os
import statistics
import sys
import time

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim

from cfsrdelta_arch.data.lr_generation import bicubic_downsample, mod_crop
from cfsrdelta_arch.utils.flops import count_conv_macs
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from cfsrdelta_arch.utils.inference import self_ensemble
from cfsrdelta_arch.utils.tables import markdown_table
from .engine import SREngine

BACKBONE = 'CFSR'


def check_same_backbone(backbone, delta, name):
    """Raise ValueError unless ``delta`` (a BackboneDelta) runs exactly ``backbone`` on its input,
    which is what lets one backbone pass serve as the ``base`` of every delta."""
    own, theirs = backbone.state_dict(), delta.backbone.state_dict()
    same = own.keys() == theirs.keys() and all(torch.equal(own[k], theirs[k]) for k in own)
    if not same or delta.backbone_pad_multiple != 1:
        raise ValueError(f'{name}: its frozen backbone is not the {BACKBONE} of the benchmark '
                         '(other weights or backbone_pad_multiple)')


def load_networks(scale, refiners, options_dir):
    """(backbone, {refiner name: BackboneDelta}) for one scale, from the test option files
    ``test_CFSR_x<s>.yml`` and ``test_CFSRDelta_<name>_x<s>.yml`` in ``options_dir``."""
    backbone = SREngine.from_option_file(os.path.join(options_dir, f'test_CFSR_x{scale}.yml')).net
    deltas = {}
    for name in refiners:
        path = os.path.join(options_dir, f'test_CFSRDelta_{name}_x{scale}.yml')
        deltas[name] = SREngine.from_option_file(path).net
        check_same_backbone(backbone, deltas[name], path)
    return backbone, deltas


def method_outputs(backbone, deltas, lr):
    """Every method's SR of ``lr`` (1, 3, H, W), stacked (1 + len(deltas), 3, s*H, s*W): the
    backbone's output first, then each delta's, the backbone computed once."""
    base = backbone(lr)
    return torch.cat([base] + [delta(lr, base=base) for delta in deltas.values()])


@torch.inference_mode()
def evaluate_image(hr, scale, backbone, deltas, ensemble=True):
    """PSNR/SSIM of every method on one uint8 BGR HR image.

    Returns {(method, 'single'|'x8'): (psnr, ssim)}; method is 'CFSR' or a refiner name.
    """
    hr = mod_crop(hr, scale)
    lr = image_to_tensor(bicubic_downsample(hr, scale), bgr=True)
    run = functools.partial(method_outputs, backbone, deltas)
    outputs = [('single', run(lr))] + ([('x8', self_ensemble(run, lr))] if ensemble else [])
    result = {}
    for mode, stacked in outputs:
        for name, out in zip([BACKBONE, *deltas], stacked):
            sr = tensor_to_image(out, bgr=True)
            result[(name, mode)] = (calculate_psnr(sr, hr, scale, test_y_channel=True),
                                    calculate_ssim(sr, hr, scale, test_y_channel=True))
    return result


def evaluate_images(images, scale, backbone, deltas, label, ensemble=True):
    """Mean PSNR/SSIM per (method, mode) over ``images`` = [(name, uint8 BGR HR)], with progress."""
    acc = {}
    for i, (_, hr) in enumerate(images):
        for key, value in evaluate_image(hr, scale, backbone, deltas, ensemble).items():
            acc.setdefault(key, []).append(value)
        print(f'\r  {label} {i + 1}/{len(images)}', end='\n' if i + 1 == len(images) else '', file=sys.stderr,
              flush=True)
    return {key: tuple(np.mean(v, axis=0)) for key, v in acc.items()}


@torch.inference_mode()
def measure_cost(scale, backbone, deltas, repeats, out_hw=(720, 1280), x8_repeats=0):
    """{(method, mode): (params, conv GMACs, latency ratio vs backbone, median seconds)} for an
    ``out_hw`` output; mode 'single', plus 'x8' (self-ensemble: 8 passes) when ``x8_repeats`` > 0.
    Each method is its whole network (a delta runs its own backbone). The methods' timings are
    interleaved in one loop so machine load affects all alike; the x8 rows get their own (shorter)
    interleaved loop, and every ratio is against the backbone alone."""
    lr = torch.rand(1, 3, out_hw[0] // scale, out_hw[1] // scale)
    nets = {BACKBONE: backbone, **deltas}
    sizes = {name: (sum(p.numel() for p in net.parameters()), count_conv_macs(net, lr) / 1e9)
             for name, net in nets.items()}

    def median_seconds(fns, n):
        times = {key: [] for key in fns}
        for _ in range(n):
            for key, fn in fns.items():
                start = time.perf_counter()
                fn(lr)
                times[key].append(time.perf_counter() - start)
        return {key: statistics.median(t) for key, t in times.items()}

    seconds = median_seconds({(name, 'single'): net for name, net in nets.items()}, repeats)
    if x8_repeats > 0:
        seconds.update(median_seconds({(name, 'x8'): functools.partial(self_ensemble, net)
                                       for name, net in nets.items()}, x8_repeats))
    t0 = seconds[(BACKBONE, 'single')]
    return {(name, mode): (sizes[name][0], sizes[name][1] * (8 if mode == 'x8' else 1), t / t0, t)
            for (name, mode), t in seconds.items()}


def method_label(name, mode='single'):
    label = BACKBONE if name == BACKBONE else f'{BACKBONE} + {name}'
    return label + (' (x8 self-ensemble)' if mode == 'x8' else '')


def format_quality_table(quality, datasets, methods, modes=('single', 'x8')):
    """Markdown rows 'PSNR / SSIM' per method and dataset; ``quality[dataset][(method, mode)]``."""
    rows = [[method_label(name, mode)] + [f'{quality[d][(name, mode)][0]:.4f} / {quality[d][(name, mode)][1]:.4f}'
                                          for d in datasets]
            for name in methods for mode in modes]
    return markdown_table(['method', *datasets], rows)


def format_cost_table(cost):
    """Markdown table of :func:`measure_cost`'s result."""
    rows = [[method_label(name, mode), f'{params:,d}', f'{gmacs:.2f}', f'{seconds * 1000:.0f} ms', f'{ratio:.3f}x']
            for (name, mode), (params, gmacs, ratio, seconds) in cost.items()]
    return markdown_table(['method', 'params', 'GMACs (1280x720 out)', 'CPU latency', f'vs {BACKBONE}'], rows)
