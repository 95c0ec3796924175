"""Benchmark evaluation written once: CFSR and CFSR-Delta refiners, single and x8 self-ensemble.

Used by scripts/bench_results_table.py (the README's results table), scripts/run_benchmark.py (the
main job) and scripts/make_figures.py. Each HR image is mod-cropped and downsampled per the
benchmark protocol; every method runs through its own network's forward (``BackboneDelta.forward``
for the deltas), with the backbone computed once per input and handed to each delta as its
``base``; "x8" is :func:`cfsrdelta_arch.utils.inference.self_ensemble` of that, i.e. what
``val.self_ensemble: true`` gives. Metrics: BasicSR's calculate_psnr/ssim on Y, crop_border = scale.
"""
import collections
import concurrent.futures
import functools
import multiprocessing
import os
import statistics
import sys
import threading
import time

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from torch import nn

from cfsrdelta_arch.data.lr_generation import bicubic_downsample, mod_crop
from cfsrdelta_arch.utils.allocator import keep_freed_memory_for_reuse
from cfsrdelta_arch.utils.flops import conv_macs_per_layer, count_conv_macs
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from cfsrdelta_arch.utils.inference import DEFAULT_TILE_OVERLAP, self_ensemble, super_resolve
from cfsrdelta_arch.utils.tables import markdown_table
from .backends import BACKENDS, numpy_input
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


def protocol_pair(hr, scale):
    """(HR mod-cropped to ``scale``, its LR (1, 3, H, W) RGB float tensor) per the benchmark protocol, for
    a uint8 BGR HR image."""
    hr = mod_crop(hr, scale)
    return hr, image_to_tensor(bicubic_downsample(hr, scale), bgr=True)


@torch.inference_mode()
def evaluate_image(hr, scale, backbone, deltas, ensemble=True):
    """PSNR/SSIM of every method on one uint8 BGR HR image.

    Returns {(method, 'single'|'x8'): (psnr, ssim)}; method is 'CFSR' or a refiner name.
    """
    hr, lr = protocol_pair(hr, scale)
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


EAGER = 'eager (reference)'


def eager_call(net, scale, tile):
    """``fn(x)``: ``net`` called as it is (NCHW, ``torch.no_grad``) through ``tile``-sized tiling;
    ``x`` a uint8 image (H, W, 3) as the engines get it, or a float LR tensor."""
    @torch.no_grad()
    def call(x):
        x = image_to_tensor(x) if isinstance(x, np.ndarray) else x
        return super_resolve(net.eval(), x, scale, tile_size=tile)
    return call


def backend_call(net, scale, backend, tile, threads):
    """``SREngine.enhance`` of ``backend`` on an RGB image as cfsrdelta-infer runs it, or the
    :func:`eager_call` for :data:`EAGER`; also returns the engine (None for eager)."""
    if backend == EAGER:
        return eager_call(net, scale, tile), None
    engine = SREngine(net, scale, device='cpu', tile_size=tile, backend=backend, threads=threads)
    return functools.partial(engine.enhance, channel_order='rgb'), engine


def fresh_process_call_memory(net, scale, backend, image, tile, threads, keep_freed_memory):
    """Run in a new process (:func:`measure_backends`): the peak RSS during the first full-size call
    on ``image`` above the RSS after a warm-up call on one tile window (tiled) or on the image itself
    (whole images compile per size), so that no memory freed by earlier work is reused."""
    if keep_freed_memory:
        keep_freed_memory_for_reuse()
    torch.set_num_threads(threads)
    call, _ = backend_call(net, scale, backend, tile, threads)
    window = tile + 2 * DEFAULT_TILE_OVERLAP if tile else max(image.shape)
    call(image[:window, :window])
    before = rss_bytes()
    return peak_rss_during(call, image)[0] - before


def measure_backends(cases, backends=BACKENDS, repeats=5, threads=2, peak_macs=None, progress=None,
                     keep_freed_memory=True):
    """Latency, throughput, memory and accuracy of each backend on each case (the backend table),
    against plain PyTorch eager.

    Args:
        cases (list[tuple]): (label, net, scale, lr (1, 3, H, W) in [0, 1], tile size or None, MACs
            of the whole-image network on ``lr``).
        backends (tuple[str]): backend names (app/backends.py).
        repeats (int): interleaved timed rounds per case (median reported), after warm-up calls
            per backend (which also compile and fill the cache).
        threads (int): threads of every runtime (torch's set process-wide here).
        peak_macs (float | None): the machine's MACs/s; None measures it (:func:`matmul_macs_per_second`).
        progress (callable | None): called with a one-line status before each case.
        keep_freed_memory (bool): the memory-measuring processes use the CLI's allocator settings
            (utils/allocator.py); the caller sets this process's own.

    Returns:
        list[dict]: per case, :data:`EAGER` first, then each backend: label, backend, seconds (median),
        speedup (eager's median / this one), macs_per_s, peak_fraction, peak_rss (bytes, from
        :func:`fresh_process_call_memory`: what one image costs on top of the loaded, warm backend),
        output_bytes (the uint8 output's size), max_diff (max |output - eager output| of the float
        outputs, clamped).

    Timed calls are ``SREngine.enhance`` on the uint8 image of ``lr``, as cfsrdelta-infer runs them;
    the reference is the network called as it is (NCHW, ``torch.no_grad``) through the same tiling
    on the float LR, i.e. without the uint8 conversions the others include.
    """
    torch.set_num_threads(threads)
    peak_macs = peak_macs or matmul_macs_per_second()
    spawn = multiprocessing.get_context('spawn')
    rows = []
    for label, net, scale, lr, tile, macs in cases:
        image = tensor_to_image(lr)  # uint8 (H, W, 3) RGB, what cfsrdelta-infer hands the engine
        names = [EAGER, *backends]
        memory = {}
        for name in names:
            if progress:
                progress(f'{label}: memory of {name} (a fresh process)')
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                memory[name] = pool.submit(fresh_process_call_memory, net, scale, name, image, tile, threads,
                                           keep_freed_memory).result()
        if progress:
            progress(f'{label}: loading {", ".join(backends)}')
        calls, outputs = {}, {}
        for name in names:
            calls[name], engine = backend_call(net, scale, name, tile, threads)
            out = calls[name](lr) if engine is None else engine.sr_tensor(lr)  # warm-up; float output
            outputs[name] = out.clamp(0, 1)
        if progress:
            progress(f'{label}: {repeats} interleaved rounds')
        seconds = interleaved_median_seconds(calls, image, repeats)
        for name in names:
            rows.append({'label': label, 'backend': name, 'seconds': seconds[name],
                         'speedup': seconds[EAGER] / seconds[name], 'macs_per_s': macs / seconds[name],
                         'peak_fraction': macs / seconds[name] / peak_macs, 'peak_rss': memory[name],
                         'output_bytes': image.nbytes * scale ** 2,
                         'max_diff': (outputs[name] - outputs[EAGER]).abs().max().item()})
    return rows


def conv_kind(conv):
    """'1x1', 'depthwise' or 'dense' for an ``nn.Conv2d``: the three conv kinds of the OpenVINO profile."""
    if conv.groups > 1:
        return 'depthwise'
    return '1x1' if conv.kernel_size == (1, 1) else 'dense'


def conv_macs_by_kind(net, lr):
    """{conv kind: MACs of ``net``'s ``nn.Conv2d`` layers of that kind on ``lr``} (see :func:`conv_kind`)."""
    totals = collections.Counter()
    for module, macs in conv_macs_per_layer(net, lr):
        if isinstance(module, nn.Conv2d):
            totals[conv_kind(module)] += macs
    return totals


def openvino_node_kind(node_type, exec_type):
    """The conv kind (:func:`conv_kind`) of an OpenVINO CPU profile entry, else its node type."""
    if node_type == 'GroupConvolution':
        return 'depthwise'
    if node_type == 'Convolution':
        return '1x1' if '1x1' in exec_type else 'dense'
    return node_type


def openvino_layer_profile(net, lr, threads=2, repeats=5, peak_macs=None):
    """Where OpenVINO's time goes: ``net`` compiled as the openvino backend compiles it (static shape of
    ``lr``, LATENCY hint, ``threads``), with per-node performance counters.

    Returns:
        (float, list[dict]): the median latency in seconds over ``repeats`` runs (after one warm-up),
        and one row per kind (1x1 / depthwise / dense conv, or OpenVINO's node type for the rest:
        'Subgraph' is a fused element-wise chain, e.g. LayerNorm's arithmetic and the gating product),
        slowest first: kind, nodes, exec types, seconds (summed node times of the last run), share,
        macs (conv kinds: ``nn.Conv2d`` MACs) and macs_per_s, peak_fraction (None without MACs).
        Fused post-operations (activations, residual adds) count in the node they are fused into.
    """
    from .backends import OpenVinoBackend
    backend = OpenVinoBackend(net, threads, profile=True)
    request = backend.request(tuple(lr.shape))
    x = {0: numpy_input(lr)}
    request.infer(x)  # warm-up
    seconds_median = interleaved_median_seconds({'openvino': request.infer}, x, repeats)['openvino']
    peak_macs = peak_macs or matmul_macs_per_second()
    macs = conv_macs_by_kind(net, lr)
    seconds, nodes, execs = collections.Counter(), collections.Counter(), collections.defaultdict(set)
    for info in request.get_profiling_info():
        if info.exec_type in ('undef', 'unknown_f32'):  # fused into another node, or the graph's ends
            continue
        kind = openvino_node_kind(info.node_type, info.exec_type)
        seconds[kind] += info.real_time.total_seconds()
        nodes[kind] += 1
        execs[kind].add(info.exec_type)
    total = sum(seconds.values())
    rows = []
    for kind, sec in seconds.most_common():
        rate = macs[kind] / sec if macs.get(kind) and sec else None
        rows.append({'kind': kind, 'nodes': nodes[kind], 'exec': ', '.join(sorted(execs[kind])), 'seconds': sec,
                     'share': sec / total, 'macs': macs.get(kind), 'macs_per_s': rate,
                     'peak_fraction': rate / peak_macs if rate else None})
    return seconds_median, rows


def format_layer_profile(rows):
    """Markdown table of :func:`openvino_layer_profile`'s rows."""
    def maybe(value, fmt):
        return '' if value is None else format(value, fmt)
    return markdown_table(
        ['layers', 'nodes', 'OpenVINO kernels', 'time', 'share', 'GMAC', 'GMAC/s', 'of fp32 peak'],
        [[r['kind'], r['nodes'], r['exec'], f"{r['seconds'] * 1000:.0f} ms", f"{r['share']:.0%}",
          maybe(r['macs'] and r['macs'] / 1e9, '.2f'), maybe(r['macs_per_s'] and r['macs_per_s'] / 1e9, '.1f'),
          maybe(r['peak_fraction'], '.0%')] for r in rows])


def format_backend_table(rows):
    """Markdown table of :func:`measure_backends`' rows."""
    return markdown_table(
        ['case', 'backend', 'median latency', 'vs eager', 'GMAC/s', 'of fp32 peak', 'image peak RSS +MiB',
         'uint8 output MiB', 'max abs diff'],
        [[r['label'], r['backend'], f"{r['seconds'] * 1000:.0f} ms", f"{r['speedup']:.2f}x",
          f"{r['macs_per_s'] / 1e9:.1f}", f"{r['peak_fraction']:.1%}", f"{r['peak_rss'] / 2 ** 20:.0f}",
          f"{r['output_bytes'] / 2 ** 20:.1f}", f"{r['max_diff']:.1e}"] for r in rows])
