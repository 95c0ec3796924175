"""The robustness table (README, "Degraded inputs"): every method on clean and degraded LR, per kernel.

A *case* is one LR folder of one test set: the protocol's clean bicubic LR (``<benchmark>/<set>/
LR_bicubic/X<s>``) or a degraded folder made by scripts/make_degraded_lr.py
(``<degraded>/<set>/<setting>/x<s>/<kernel>_n<σ_n>``, with its kernel.npy and degradation.json). Each
method super-resolves every LR image of a case; the score is BasicSR's PSNR / SSIM on Y with
crop_border = s against the mod-cropped HR, as in docs/degradation_protocol.md. Results go to a
CSV, one row per (set, setting, kernel, noise, method), which may be built in parts (each part
replaces its own rows and records its command and commit); :func:`summary_rows` averages a
setting's kernels for the README.
"""
import csv
import functools
import os
import subprocess
import sys
from collections import namedtuple

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils.matlab_functions import imresize

from cfsrdelta_arch.archs.degradation_psf import check_flip_equivariant
from cfsrdelta_arch.data.degradations import read_degradation, setting_kernels
from cfsrdelta_arch.data.lr_generation import list_images, mod_crop, read_image_color
from cfsrdelta_arch.utils.fileio import atomic_path
from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
from cfsrdelta_arch.utils.inference import self_ensemble
from cfsrdelta_arch.utils.tables import markdown_table
from .benchmark import format_cost_table, measure_cost
from .engine import Degradation, network_from_option_file, nonblind_inputs

Case = namedtuple('Case', 'set setting kernel noise lr_folder hr_folder tmpl degradation')
# degradation: the Degradation of the folder (no kernel for clean bicubic LR)

# Method name -> (README label, option files under options/test it needs).
METHODS = {
    'bicubic': ('Bicubic upsampling', ()),
    'cfsr': ('CFSR', ('test_CFSR_x{s}.yml',)),
    'cfsr_delta': ('CFSR + BPRefineNet (shipped, bicubic)', ('test_CFSR_x{s}.yml', 'test_CFSRDelta_BPRefineNet_x{s}.yml')),
    'cfsr_nonblind': ('CFSR + NonBlindRefineNet', ('test_CFSR_x{s}.yml', 'test_CFSRDelta_NonBlind_x{s}.yml')),
    'cfsr_nonblind_x8': ('CFSR + NonBlindRefineNet (x8 self-ensemble)',
                         ('test_CFSR_x{s}.yml', 'test_CFSRDelta_NonBlind_x{s}.yml')),
    'usrnet_tiny': ('USRNet-tiny (trained here)', ('test_USRNet_tiny_x{s}.yml',)),
    'lesrcnn': ('LESRCNN', ('test_LESRCNN_x{s}.yml',)),
}
CSV_FIELDS = ('set', 'setting', 'kernel', 'noise', 'method', 'psnr', 'ssim', 'images', 'commit', 'command')


def find_cases(sets, scale, benchmark_root, degraded_root, settings=('clean', 'gaussian8', 'classical'), kernels=None,
               noises=None):
    """Every case of ``sets`` at ``scale`` found on disk, sorted; a missing set or setting is skipped.
    ``kernels`` (names, e.g. ['k1', 'k2']) and ``noises`` (σ_n values) keep only those degraded folders.

    Returns:
        list[Case]
    """
    cases = []
    for name in sets:
        hr = os.path.join(benchmark_root, name, 'HR')
        if 'clean' in settings:
            clean = os.path.join(benchmark_root, name, 'LR_bicubic', f'X{scale}')
            if os.path.isdir(clean):
                cases.append(Case(name, 'clean', 'bicubic', 0.0, clean, hr, '{}x%d' % scale, Degradation()))
        if degraded_root:
            cases += degraded_cases(name, hr, os.path.join(degraded_root, name), scale, settings, kernels, noises)
    return sorted(cases, key=case_order)


def degraded_cases(name, hr_folder, root, scale, settings, kernels=None, noises=None):
    """The cases of the degraded folders ``<root>/<setting>/x<s>/<kernel>_n<σ_n>`` of one set (HR in
    ``hr_folder``), filtered as :func:`find_cases` does, sorted by setting, kernel and noise; a
    missing setting is skipped."""
    cases = []
    for setting in settings:
        folder = os.path.join(root, setting, f'x{scale}')
        if setting == 'clean' or not os.path.isdir(folder):
            continue
        for sub in sorted(os.listdir(folder)):
            kernel, record = read_degradation(os.path.join(folder, sub))
            if (kernels and record['kernel'] not in kernels) or (
                    noises is not None and float(record['noise_sigma']) not in noises):
                continue
            cases.append(Case(name, setting, record['kernel'], float(record['noise_sigma']),
                              os.path.join(folder, sub), hr_folder, '{}',
                              Degradation(kernel, float(record['noise_sigma']), setting)))
    return sorted(cases, key=case_order)


def case_order(case):
    return case.set, case.setting, kernel_order(case.kernel), case.noise


def kernel_order(name):
    """Sort key: k2 before k10, g1.80 before g2.00."""
    return (name[0], float(name[1:])) if name[1:].replace('.', '').isdigit() else (name, 0.0)


def load_methods(methods, scale, options_dir):
    """{method: nn.Module} of the networks the methods need (one CFSR shared), on the CPU, eval mode."""
    nets = {}
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")
        for name in METHODS[method][1]:
            name = name.format(s=scale)
            if name not in nets:
                net = network_from_option_file(os.path.join(options_dir, name))[0]
                nets[name] = net.to(memory_format=torch.channels_last)  # as TorchBackend runs (app/backends.py)
    return nets


@torch.inference_mode()
def method_outputs(methods, nets, scale, case, lr):
    """{method: SR (1, 3, s*H, s*W)} of one LR tensor (1, 3, H, W) RGB in [0, 1]. CFSR on the LR runs once;
    the non-blind delta runs its own backbone pass, on its pre-filtered LR."""
    out, base = {}, None
    for method in methods:
        files = [name.format(s=scale) for name in METHODS[method][1]]
        if method == 'bicubic':
            up = imresize(lr[0].permute(1, 2, 0).cpu().numpy().astype(np.float64), scale)
            out[method] = torch.from_numpy(up).permute(2, 0, 1)[None].float()
            continue
        if method in ('cfsr', 'cfsr_delta') and base is None:
            base = nets[files[0]](lr).clamp(0, 1)
        if method == 'cfsr':
            out[method] = base
        elif method == 'cfsr_delta':
            out[method] = nets[files[1]](lr, base=base)
        elif method == 'cfsr_nonblind':
            kwargs = nonblind_inputs('delta', case.degradation, 1, scale, lr.device)[1]
            out[method] = nets[files[1]](lr, **kwargs)
        elif method == 'cfsr_nonblind_x8':  # the kernel follows every flip/transpose of the image
            kwargs = nonblind_inputs('delta', case.degradation, 1, scale, lr.device)[1]
            kernel = kwargs.pop('kernel')
            kernel = lr.new_ones(1, 1, 1) if kernel is None else kernel
            out[method] = self_ensemble(lambda x, k: nets[files[1]](x, kernel=k, **kwargs), lr, kernel)
        elif method == 'usrnet_tiny':
            out[method] = nets[files[0]](lr, *nonblind_inputs('usrnet', case.degradation, 1, scale, lr.device)[0])
        else:  # a single network: LESRCNN
            out[method] = nets[files[0]](lr)
    return out


def evaluate_case(case, outputs, scale, progress=None):
    """{name: (mean PSNR, mean SSIM, images)} over the case's LR images, for each SR that
    ``outputs(lr)`` returns as ``{name: SR}`` (e.g. :func:`method_outputs` of the table's methods)."""
    scores = {}
    names = list_images(case.lr_folder)
    for i, path in enumerate(names):
        stem = os.path.splitext(os.path.basename(path))[0]
        hr_stem = stem[:-len(case.tmpl.format(''))] if case.tmpl != '{}' else stem
        hr = mod_crop(read_image_color(os.path.join(case.hr_folder, hr_stem + '.png')), scale)
        lr = image_to_tensor(read_image_color(path), bgr=True).contiguous(memory_format=torch.channels_last)
        for method, sr in outputs(lr).items():
            img = tensor_to_image(sr, bgr=True)
            scores.setdefault(method, []).append((calculate_psnr(img, hr, scale, test_y_channel=True),
                                                  calculate_ssim(img, hr, scale, test_y_channel=True)))
        if progress:
            progress(i + 1, len(names))
    return {m: (float(np.mean([p for p, _ in v])), float(np.mean([s for _, s in v])), len(v)) for m, v in scores.items()}


def current_commit(root):
    """Short commit of ``root`` ('+dirty' with uncommitted changes outside docs/, where the tables'
    own CSVs and figures are written while they run), or 'unknown' outside git."""
    try:
        commit = subprocess.run(['git', '-C', root, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', root, 'status', '--porcelain', '--untracked-files=no', '--', '.',
                                ':(exclude)docs'],
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ('+dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def row_key(row):
    return (row['set'], row['setting'], row['kernel'], f"{float(row['noise']):.2f}", row['method'])


def read_rows(path):
    """The CSV's rows (dicts of strings), or [] when it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


def merge_rows(path, new_rows):
    """Write ``new_rows`` into the CSV at ``path``, replacing rows with the same key, atomically; sorted."""
    rows = {row_key(r): r for r in read_rows(path)}
    rows.update({row_key(r): {k: str(v) for k, v in r.items()} for r in new_rows})
    ordered = sorted(rows.values(), key=lambda r: (r['set'], r['setting'], kernel_order(r['kernel']),
                                                   float(r['noise']), list(METHODS).index(r['method'])))
    with atomic_path(path) as tmp, open(tmp, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(ordered)


def summary_rows(rows, sets, kernels_of=None):
    """Markdown-ready rows: one per (set, setting, noise) group, one column per method: the mean PSNR
    over the group's kernels (``kernels_of(setting, kernel)`` filters them, e.g. classical k1-k8),
    followed by '(n/N)' where a method was run on n of the group's N kernels only; '–' where it has none.

    Returns:
        (header, rows) for :func:`cfsrdelta_arch.utils.tables.markdown_table`.
    """
    groups = sorted({(r['setting'], float(r['noise'])) for r in rows},
                    key=lambda g: (['clean', 'gaussian8', 'classical'].index(g[0]), g[1]))
    methods = [m for m in METHODS if any(r['method'] == m for r in rows)]
    table = []
    for s in sets:
        for setting, noise in groups:
            values = {method: [float(r['psnr']) for r in rows if r['method'] == method and r['set'] == s
                               and r['setting'] == setting and float(r['noise']) == noise
                               and (kernels_of is None or kernels_of(setting, r['kernel']))] for method in methods}
            kernels = max(len(v) for v in values.values())
            cells = [('–' if not v else f'{np.mean(v):.2f}' if len(v) == kernels else f'{np.mean(v):.2f} ({len(v)}/{kernels})')
                     for v in values.values()]
            if any(c != '–' for c in cells):
                table.append([s, setting if setting == 'clean' else f'{setting} σ_n {noise:g}'] + cells)
    return ['set', 'LR'] + [METHODS[m][0] for m in methods], table


def format_summary(rows, sets, kernels_of=None):
    return markdown_table(*summary_rows(rows, sets, kernels_of))


def run(cases, methods, nets, scale, csv_path, command, commit):
    """Evaluate every case with every method, merging the rows into ``csv_path`` after each case
    (an interrupted run keeps what it finished). Progress on stderr.

    Raises:
        ValueError: the x8 self-ensemble asked for on 'classical' LR (a flipped classical LR samples
            another corner of each s x s block, which the flipped kernel does not describe).
    """
    if 'cfsr_nonblind_x8' in methods:
        try:
            check_flip_equivariant([case.setting for case in cases if case.setting != 'clean'])
        except ValueError as err:
            raise ValueError(f'cfsr_nonblind_x8 runs on clean and gaussian8 LR only (use --settings clean '
                             f'gaussian8): {err}') from None
    for n, case in enumerate(cases):
        label = f'[{n + 1}/{len(cases)}] {case.set} {case.setting} {case.kernel} n{case.noise:.2f}'

        def progress(i, total):
            print(f'\r{label}: {i}/{total}', end='', file=sys.stderr, flush=True)

        result = evaluate_case(case, functools.partial(method_outputs, methods, nets, scale, case), scale, progress)
        print(f"\r{label}: " + ', '.join(f'{m} {p:.2f}' for m, (p, _, _) in result.items()), file=sys.stderr, flush=True)
        merge_rows(csv_path, [dict(set=case.set, setting=case.setting, kernel=case.kernel, noise=f'{case.noise:.2f}',
                                   method=m, psnr=f'{p:.4f}', ssim=f'{s:.4f}', images=k, commit=commit,
                                   command=command) for m, (p, s, k) in result.items()])


class WithDegradation(torch.nn.Module):
    """A non-blind BackboneDelta with a fixed degradation, callable as ``net(lr)`` (for :func:`measure_cost`)."""

    def __init__(self, net, **degradation):
        super().__init__()
        self.net, self.degradation = net, degradation

    def forward(self, lr, base=None):
        return self.net(lr, base=base, **self.degradation)


def nonblind_cost(options_dir, repeats, scale=4):
    """Markdown cost table at a 1280x720 output: CFSR, the shipped delta and the non-blind delta (told
    gaussian8 σ_k 2.60 and σ_n 7.65), their conv MACs and CPU latencies interleaved in one loop.
    The non-blind delta's FFTs (data steps) are not in the conv MACs; its latency includes them."""
    nets = load_methods(['cfsr_delta', 'cfsr_nonblind'], scale, options_dir)
    kernel = torch.from_numpy(setting_kernels('gaussian8', scale)[4].kernel).float()[None]
    deltas = {'BPRefineNet (shipped)': nets[f'test_CFSRDelta_BPRefineNet_x{scale}.yml'],
              'NonBlindRefineNet': WithDegradation(nets[f'test_CFSRDelta_NonBlind_x{scale}.yml'], kernel=kernel,
                                                   sigma=7.65 / 255, degradation='gaussian8')}
    return format_cost_table(measure_cost(scale, nets[f'test_CFSR_x{scale}.yml'], deltas, repeats))
