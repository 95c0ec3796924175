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
import threading
import time

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim

from cfsrdelta_arch.data.lr_generation import bicubic_downsample, mod_crop
from cfsrdelta_arch.utils.flops import count_conv_macs
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from cfsrdelta_arch.utils.inference import self_ensemble
from cfsrdelta_arch.utils.tables import markdown_table
from .backends import BACKENDS
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


def interleaved_median_seconds(fns, x, repeats):
    """{key: median seconds of ``fn(x)``} over ``repeats`` rounds that each call every fn once, so
    that changing machine load affects all alike."""
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn(x)
            times[key].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


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
    seconds = interleaved_median_seconds({(name, 'single'): net for name, net in nets.items()}, lr, repeats)
    if x8_repeats > 0:
        seconds.update(interleaved_median_seconds({(name, 'x8'): functools.partial(self_ensemble, net)
                                                   for name, net in nets.items()}, lr, x8_repeats))
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


@torch.inference_mode()
def matmul_macs_per_second(n=4096, repeats=3):
    """This machine's fp32 multiply-add rate as torch reaches it with its current thread count: the
    best of ``repeats`` timed (n, n) @ (n, n) matmuls (n^3 MACs each) after one warm-up. The
    reference for "fraction of peak" in :func:`measure_backends`."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return n ** 3 / min(times)


def rss_bytes():
    """This process's resident set size (Linux /proc)."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def peak_rss_during(fn, *args, interval=0.001):
    """(largest RSS in bytes, sampled every ``interval`` seconds while ``fn(*args)`` runs, fn's result);
    the runtimes release the GIL while computing, so the sampler runs alongside."""
    peak, done = [rss_bytes()], threading.Event()

    def sample():
        while not done.wait(interval):
            peak[0] = max(peak[0], rss_bytes())
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn(*args)
    finally:
        done.set()
        sampler.join()
    return max(peak[0], rss_bytes()), result


def measure_backends(cases, backends=BACKENDS, repeats=5, threads=2, peak_macs=None, progress=None):
    """Latency, throughput and accuracy of each backend on each case (the backend comparison table).

    Args:
        cases (list[tuple]): (label, net, scale, lr (1, 3, H, W) in [0, 1], tile size or None, MACs
            of the whole-image network on ``lr``).
        backends (tuple[str]): backend names (app/backends.py); 'torch' is the reference of the
            speed-up and of the difference, so it must be among them.
        repeats (int): interleaved timed rounds per case (median reported), after warm-up calls
            per backend (which also compile and fill the cache).
        threads (int): threads of every runtime (torch's set process-wide here).
        peak_macs (float | None): the machine's MACs/s; None measures it (:func:`matmul_macs_per_second`).
        progress (callable | None): called with a one-line status before each case.

    Returns:
        list[dict]: per case and backend: label, backend, seconds (median), speedup (torch's median
        / this one), macs_per_s, peak_fraction, peak_rss (bytes: the peak RSS during one call above the
        RSS of the warm process just before it, i.e. what a call allocates on top of the loaded
        backend; freed memory of earlier calls may be reused), output_bytes (the uint8 output's
        size), max_diff (max |output - torch output| of the float outputs, clamped).

    Timed calls are ``SREngine.enhance`` on the uint8 image of ``lr``, as cfsrdelta-infer runs them.
    """
    if 'torch' not in backends:
        raise ValueError("measure_backends: 'torch' must be among the backends (the reference)")
    torch.set_num_threads(threads)
    peak_macs = peak_macs or matmul_macs_per_second()
    rows = []
    for label, net, scale, lr, tile, macs in cases:
        if progress:
            progress(f'{label}: loading {", ".join(backends)}')
        image = tensor_to_image(lr)  # uint8 (H, W, 3) RGB, what cfsrdelta-infer hands the engine
        engines, calls, outputs, memory = {}, {}, {}, {}
        for name in backends:
            engine = engines[name] = SREngine(net, scale, device='cpu', tile_size=tile, backend=name, threads=threads)
            calls[name] = functools.partial(engine.enhance, channel_order='rgb')
            outputs[name] = engine.sr_tensor(lr)  # warm-up: compiles (or loads the cache) and allocates
            calls[name](image)
            before = rss_bytes()
            memory[name] = peak_rss_during(calls[name], image)[0] - before
        if progress:
            progress(f'{label}: {repeats} interleaved rounds')
        seconds = interleaved_median_seconds(calls, image, repeats)
        for name in backends:
            rows.append({'label': label, 'backend': name, 'seconds': seconds[name],
                         'speedup': seconds['torch'] / seconds[name], 'macs_per_s': macs / seconds[name],
                         'peak_fraction': macs / seconds[name] / peak_macs, 'peak_rss': memory[name],
                         'output_bytes': image.nbytes * scale ** 2,
                         'max_diff': (outputs[name] - outputs['torch']).abs().max().item()})
    return rows


def format_backend_table(rows):
    """Markdown table of :func:`measure_backends`' rows."""
    return markdown_table(
        ['case', 'backend', 'median latency', 'vs torch', 'GMAC/s', 'of fp32 peak', 'call peak RSS +MiB',
         'uint8 output MiB', 'max abs diff'],
        [[r['label'], r['backend'], f"{r['seconds'] * 1000:.0f} ms", f"{r['speedup']:.2f}x",
          f"{r['macs_per_s'] / 1e9:.1f}", f"{r['peak_fraction']:.1%}", f"{r['peak_rss'] / 2 ** 20:.0f}",
          f"{r['output_bytes'] / 2 ** 20:.1f}", f"{r['max_diff']:.1e}"] for r in rows])
