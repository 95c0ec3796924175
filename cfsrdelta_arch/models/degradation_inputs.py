"""The degradation that non-blind models read with every LR (kernel, noise level, degradation model), and
how their test-time options may use it."""
from cfsrdelta_arch.archs.degradation_psf import check_flip_equivariant
from cfsrdelta_arch.data.paired_cached_base_dataset import DatasetError
from cfsrdelta_arch.utils.fileio import OptionFileError
from cfsrdelta_arch.utils.inference import self_ensemble


def refuse_tiles(opt, model_name):
    """Non-blind models run whole images: their FFT data step assumes the whole image (circular boundary)."""
    if ((opt.get('val') or {}).get('tile')):
        raise OptionFileError(f'val.tile: {model_name} runs whole images only (the data step assumes the whole '
                              'image); for tiles use cfsrdelta-infer or SREngine')


def ensembled(forward, lq, aligned, names, opt):
    """``forward(lq, aligned)``, or with ``val.self_ensemble`` its x8 self-ensemble, ``aligned`` (the batch's
    kernels or PSFs, (N, ..., k, k)) flipped with each variant of the LR; on 'gaussian8' LR only."""
    if not (opt.get('val') or {}).get('self_ensemble'):
        return forward(lq, aligned)
    try:
        check_flip_equivariant(names)
    except ValueError as err:
        raise OptionFileError(f'val.self_ensemble: {err}') from None
    return self_ensemble(forward, lq, aligned)


def degradation_inputs(data, device):
    """``{'kernel': (N, kh, kw), 'sigma': (N, 1, 1, 1) on the [0, 1] scale, 'degradation': [name] * N}``.

    DegradedOnTheFlyDataset (training) and DegradedPairedDataset (the folders of
    scripts/make_degraded_lr.py) return 'kernel', 'noise_sigma' (0-255 scale) and 'degradation'.

    Raises:
        DatasetError: a dataset without them (a non-blind network cannot run without its degradation).
    """
    missing = [key for key in ('kernel', 'noise_sigma', 'degradation') if key not in data]
    if missing:
        raise DatasetError(f"a non-blind model needs the {', '.join(missing)} with every LR: use "
                           'DegradedOnTheFlyDataset or DegradedPairedDataset (README, "Degraded inputs")')
    degradation = data['degradation']
    return {'kernel': data['kernel'].to(device),
            'sigma': (data['noise_sigma'].to(device).float() / 255.0).view(-1, 1, 1, 1),
            'degradation': [degradation] if isinstance(degradation, str) else list(degradation)}
