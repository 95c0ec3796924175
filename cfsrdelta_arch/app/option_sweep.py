"""Sweep one option of a non-blind network over values, scored on degraded validation folders.

How the pre-filter's λs of NonBlindRefineNet were chosen (docs/experiments.md #14, #15, #17): the
network of an option file is built once per value of one of its ``network_g`` options (e.g.
``refiner.prefilter_noise_lambda``), with its trained weights or, before training, as initialised
(``untrained``: the filter and the data steps, the bodies' output ~0), and every variant super-resolves
each LR image of folders made by scripts/make_degraded_lr.py from held-out training images (never a
benchmark); the backbone alone on the same LR is the reference row. Scores are PSNR-Y with
crop_border = s, as in the robustness table (:func:`cfsrdelta_arch.app.robustness.evaluate_case`).
"""
import math
import os

import numpy as np
import torch
import yaml

from cfsrdelta_arch.archs.backbone_delta_arch import BackboneDelta
from cfsrdelta_arch.archs.nonblind_refinenet_arch import NonBlindRefineNet
from cfsrdelta_arch.utils.fileio import OptionFileError
from .engine import (build_network, inference_form, load_inference_network, load_option_file, nonblind_inputs,
                     option_scale, option_weights, resolved_network_options)
from .options import check_call
from .robustness import degraded_cases, evaluate_case

BACKBONE_ROW = 'backbone alone'


def parse_value(text):
    """A value given on the command line: a number, or YAML (e.g. ``{gaussian8: 1e-3, classical: 1e-2}``)
    whose number-like strings become floats (YAML 1.1 reads ``1e-3`` as a string).

    Raises:
        OptionFileError: not YAML, or a number that is not finite (nan, inf).
    """
    def numbers(value):
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items()}
        if isinstance(value, list):
            return [numbers(v) for v in value]
        if not isinstance(value, (str, float)):
            return value
        try:
            number = float(value)
        except ValueError:
            return value
        if not math.isfinite(number):
            raise OptionFileError(f'value {text!r}: {value} is not a finite number')
        return number

    try:
        return numbers(yaml.safe_load(text))
    except yaml.YAMLError as err:
        raise OptionFileError(f'value {text!r} is not YAML: {str(err).splitlines()[0]}') from None


def with_option(network_opt, key, value):
    """A copy of ``network_opt`` with the dotted ``key`` (e.g. 'refiner.prefilter_lambda') set to ``value``.

    Raises:
        OptionFileError: a section on the way is missing or not a mapping (one line).
    """
    opt = dict(network_opt)
    *sections, leaf = key.split('.')
    node, path = opt, 'network_g'
    for name in sections:
        path += '.' + name
        if not isinstance(node.get(name), dict):
            raise OptionFileError(f'{path} is not a section of the option file\'s network_g')
        node[name] = dict(node[name])
        node = node[name]
    node[leaf] = value
    return opt


def build_variant(network_opt, weights, param_key):
    """The network of ``network_opt``: with ``weights`` loaded, or as initialised (seed 0, leaving the
    global random state as it was) when ``weights`` is None."""
    if weights:
        return load_inference_network(network_opt, weights, param_key)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return inference_form(build_network(network_opt))


def load_variants(opt_path, key, values, untrained=False):
    """(scale, {label: network}) of the option file's network at each value of ``key``, a dotted option
    of its NonBlindRefineNet (the variants share the backbone, the reference row).

    Raises:
        OptionFileError: not a non-blind BackboneDelta, a key outside the refiner or unknown to it, a
            repeated value.
    """
    opt = load_option_file(opt_path)
    scale = option_scale(opt, opt_path)
    network_opt = resolved_network_options(opt, opt_path)
    refiner = network_opt.get('refiner') if network_opt.get('type') == BackboneDelta.__name__ else None
    if not isinstance(refiner, dict) or refiner.get('type') != NonBlindRefineNet.__name__:
        raise OptionFileError(f'{opt_path}: the sweep needs a BackboneDelta with a NonBlindRefineNet refiner')
    if not key.startswith('refiner.'):
        raise OptionFileError(f"--key {key}: only the refiner's options are swept (refiner.<option>); the "
                              'backbone is the reference every variant shares')
    if len(set(values)) != len(values):
        raise OptionFileError(f'--values {" ".join(values)}: a value is repeated')
    weights, param_key = (None, None) if untrained else option_weights(opt, opt_path)
    variants = {}
    for text in values:
        variant = with_option(network_opt, key, parse_value(text))
        check_call(NonBlindRefineNet, {k: v for k, v in variant['refiner'].items() if k != 'type'},
                   f'{opt_path}: network_g.refiner')
        variants[f'{key} = {text}'] = build_variant(variant, weights, param_key)
    return scale, variants


@torch.inference_mode()
def variant_outputs(variants, scale, case, lr):
    """{label: SR} of every variant on one LR (1, 3, H, W), told the case's degradation, and the
    backbone alone on the same LR (all variants share its weights)."""
    kwargs = nonblind_inputs('delta', case.degradation, 1, scale, lr.device)[1]
    first = next(iter(variants.values()))
    out = {BACKBONE_ROW: first.forward_backbone(lr)}
    out.update({label: net(lr, **kwargs) for label, net in variants.items()})
    return out


def sweep(variants, scale, hr_folder, degraded_root, settings, kernels=None, noises=None, progress=None):
    """Scores of every variant on the degraded folders ``<degraded_root>/<setting>/x<s>/<kernel>_n<σ_n>``
    (filtered by ``kernels`` and ``noises``) of the HR images in ``hr_folder``.

    Returns:
        (header, rows) for :func:`cfsrdelta_arch.utils.tables.markdown_table`: one row per variant (and the backbone alone), one
        PSNR-Y column per folder, then their mean.

    Raises:
        FileNotFoundError: no such folder.
    """
    cases = degraded_cases(os.path.basename(os.path.normpath(degraded_root)), hr_folder, degraded_root, scale,
                           settings, kernels, noises)
    if not cases:
        raise FileNotFoundError(f'no degraded x{scale} folders of {", ".join(settings)} under {degraded_root}')
    psnr = {}
    for n, case in enumerate(cases):
        label = f'{case.setting} {case.kernel} n{case.noise:.2f}'
        result = evaluate_case(case, lambda lr: variant_outputs(variants, scale, case, lr), scale,
                               progress and (lambda i, total: progress(f'[{n + 1}/{len(cases)}] {label}', i, total)))
        if not result:
            raise FileNotFoundError(f'no LR images in {case.lr_folder}')
        for row, (value, _, _) in result.items():
            psnr.setdefault(row, {})[label] = value
    columns = list(next(iter(psnr.values())))
    rows = [[row] + [f'{scores[c]:.2f}' for c in columns] + [f'{np.mean(list(scores.values())):.3f}']
            for row, scores in psnr.items()]
    return ['variant'] + columns + ['mean'], rows
