"""The degradation that non-blind models read with every LR (kernel, noise level, degradation model)."""
from cfsrdelta_arch.data.paired_cached_base_dataset import DatasetError


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
