"""Sweep one option of a non-blind network over values, scored on degraded validation folders.

How the pre-filter's λs of NonBlindRefineNet were chosen (docs/experiments.md #14, #15, #16): the
network of an option file is built once per value of one of its ``network_g`` options (e.g.
``refiner.prefilter_noise_lambda``), with its trained weights or, before training, as initialised
(``untrained``: the filter and the data steps, the bodies' output ~0), and every variant super-resolves
each LR image of folders made by scripts/make_degraded_lr.py from held-out training images (never a
benchmark); the backbone alone on the same LR is the reference row. Scores are PSNR-Y with
crop_border = s, as in the robustness table (:func:`cfsrdelta_arch.app.robustness.evaluate_case`).
"""
import os

import numpy as np
import torch
import yaml

from cfsrdelta_arch.archs.backbone_delta_arch import BackboneDelta, build_from_options
from cfsrdelta_arch.utils.fileio import OptionFileError
from .engine import (load_inference_network, load_option_file, network_options, nonblind_inputs, option_scale,
                     resolve_option_path, to_deploy)
from .robustness import evaluate_case, find_cases

BACKBONE_ROW = 'backbone alone'


def parse_value(text):
    """A value given on the command line: a number, or YAML (e.g. ``{gaussian8: 1e-3, classical: 1e-2}``)
    whose number-like strings become floats (YAML 1.1 reads ``1e-3`` as a string)."""
    def numbers(value):
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items()}
        try:
            return float(value) if isinstance(value, str) else value
        except ValueError:
            return value

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


def build_variant(network_opt, weights, param_key, untrained):
    """The network of ``network_opt``: with ``weights`` loaded, or as initialised (seed 0) when ``untrained``."""
    if not untrained:
        return load_inference_network(network_opt, weights, param_key)
    torch.manual_seed(0)
    net = build_from_options(network_opt)
    net.requires_grad_(False)
    return to_deploy(net.eval())


def load_variants(opt_path, key, values, untrained=False):
    """(scale, {label: network}) of the option file's network at each value of ``key``.

    Raises:
        OptionFileError: not a BackboneDelta option file, or the key's section is missing.
    """
    opt = load_option_file(opt_path)
    scale = option_scale(opt, opt_path)
    network_opt = network_options(opt, opt_path)
    if network_opt.get('type') != BackboneDelta.__name__:
        raise OptionFileError(f'{opt_path}: network_g is {network_opt.get("type")}; the sweep needs a BackboneDelta')
    paths = opt.get('path') or {}
    weights = None if untrained else resolve_option_path(paths.get('pretrain_network_g'), opt_path)
    param_key = paths.get('param_key_g') or 'params'
    return scale, {f'{key} = {text}': build_variant(with_option(network_opt, key, parse_value(text)), weights,
                                                     param_key, untrained) for text in values}


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
    name = os.path.basename(os.path.normpath(degraded_root))
    cases = [case._replace(hr_folder=hr_folder) for case in find_cases(
        [name], scale, '', os.path.dirname(os.path.normpath(degraded_root)), settings, kernels, noises)]
    if not cases:
        raise FileNotFoundError(f'no degraded x{scale} folders of {", ".join(settings)} under {degraded_root}')
    psnr = {}
    for n, case in enumerate(cases):
        label = f'{case.setting} {case.kernel} n{case.noise:.2f}'
        result = evaluate_case(case, lambda lr: variant_outputs(variants, scale, case, lr), scale,
                               progress and (lambda i, total: progress(f'[{n + 1}/{len(cases)}] {label}', i, total)))
        for row, (value, _, _) in result.items():
            psnr.setdefault(row, {})[label] = value
    columns = list(next(iter(psnr.values())))
    rows = [[row] + [f'{scores[c]:.2f}' for c in columns] + [f'{np.mean(list(scores.values())):.3f}']
            for row, scores in psnr.items()]
    return ['variant'] + columns + ['mean'], rows
