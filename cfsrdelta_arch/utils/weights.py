"""Checkpoint loading written once: sha256 verification of upstream files, unwrapping, and one-line
errors for a checkpoint of the wrong network or scale.

Used by the models (through BasicSR's option files), the inference CLI and the export script.
"""
import contextlib
import hashlib
import os

import torch

# Upstream release files: sha256 of the files the reference numbers were measured with (README, "Weights")
# and where users download them. A file with one of these names is verified before it is loaded.
OFFICIAL_WEIGHTS = {
    'CFSR_x2.pth': 'e6440c1a70af2cfa16c51287593f681438c8f307a81f90367a24e42086522f2c',
    'CFSR_x3.pth': 'd501ce105b52550be501b327785d6fde27ca3534531f33aa0d530750ec41eb40',
    'CFSR_x4.pth': '59c779a61c72238aed87683a908248d6e9e3cdb78a29a71da196d20092b6f2f6',
    'LESRCNN_x2.pth': '66b4b2ddb268486f78a3d49758a016417e64f602ef963667b5ce34039200bcde',
    'LESRCNN_x3.pth': '95cbabcbd243e5582118d3bba44fd751a80dd19a291d5f3b1ebd7c9b3b61346a',
    'LESRCNN_x4.pth': '1de9d0e1b1817de43fba3ce9c4b966fd8cde81e160d7432a844d6a2296f90cbc',
}
OFFICIAL_SOURCES = {
    'CFSR': 'https://huggingface.co/GWu/CFSR (release of https://github.com/Aitical/CFSR)',
    'LESRCNN': 'https://github.com/hellloxiaotian/LESRCNN (model_x2/x3/x4 checkpoints)',
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the requested network; the message is one line."""


def sha256_of(path, chunk=1 << 20):
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def verify_official(path):
    """Raise :class:`CheckpointError` if ``path`` carries an official file name but not its sha256.

    Files under other names (the project's own or users' checkpoints) are not checked.
    """
    expected = OFFICIAL_WEIGHTS.get(os.path.basename(path))
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected:
        raise CheckpointError(f'{path}: sha256 {actual[:12]}... does not match the upstream release '
                              f'({expected[:12]}...); re-download it (see README, "Weights")')


def unreadable_reason(path, err):
    """Short reason why ``torch.load`` failed on ``path``: torch's messages run to several lines."""
    if os.path.getsize(path) == 0:
        return 'empty file'
    text = str(err).strip()
    first = text.splitlines()[0].split('. ')[0][:160] if text else ''
    return f'{type(err).__name__}: {first}' if first else type(err).__name__


def load_state_dict_file(path, param_key='params'):
    """Read a checkpoint file and return its state dict.

    Accepts BasicSR files (``{'params': ..., 'params_ema': ...}``), plain state dicts (LESRCNN's
    release) and strips a DataParallel ``module.`` prefix. ``param_key`` falls back to 'params' and
    then to the whole dict when absent. Official files are sha256-verified first.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path} (see README, "Weights")')
    verify_official(path)
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # EOFError, RuntimeError, UnpicklingError, KeyError...: whatever the bytes cause
        raise CheckpointError(f'{path}: not a readable PyTorch checkpoint ({unreadable_reason(path, err)}); '
                              're-save or re-download it') from err
    if not isinstance(obj, dict):
        raise CheckpointError(f'{path}: expected a state dict, found {type(obj).__name__}')
    for key in (param_key, 'params'):
        if key is not None and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return {k[7:] if k.startswith('module.') else k: v for k, v in obj.items()}


def check_state_dict(net, state_dict, arch_name, scale_key=None, scale_of=None, scale=None, state_scale=None):
    """Compare a state dict with ``net`` and raise :class:`CheckpointError` with a one-line reason.

    Args:
        net (nn.Module): the network about to receive the weights.
        state_dict (dict): the weights.
        arch_name (str): name used in messages, e.g. 'CFSR'.
        scale_key (str | None): a tensor whose shape encodes the upscale factor.
        scale_of (callable | None): maps that tensor's shape to the checkpoint's scale.
        scale (int | None): the scale ``net`` was built for.
        state_scale (callable | None): maps the whole state dict to the checkpoint's scale (None if
            unknown), for networks whose scale is not encoded in one tensor's shape (LESRCNN x2 and
            x4 differ in the number of upsampler convs, not in their shapes).
    """
    own = net.state_dict()
    common = set(own) & set(state_dict)
    if len(common) < max(1, len(own) // 2):
        sample = ', '.join(sorted(state_dict)[:3])
        raise CheckpointError(f'not a {arch_name} checkpoint: only {len(common)} of its {len(state_dict)} tensors '
                              f'match {arch_name} names (it has e.g. {sample})')
    found = None
    if scale_key is not None and scale_key in state_dict and scale_key in own \
            and state_dict[scale_key].shape != own[scale_key].shape:
        found = scale_of(tuple(state_dict[scale_key].shape))
    elif state_scale is not None:
        found = state_scale(state_dict)
    if found is not None and found != scale:
        raise CheckpointError(f'checkpoint is a x{found} {arch_name} but the network is built for x{scale}; '
                              f'use the x{scale} weights or set upscale: {found}')
    for key in sorted(common):
        if state_dict[key].shape != own[key].shape:
            raise CheckpointError(f'{arch_name} checkpoint tensor {key} has shape {tuple(state_dict[key].shape)}, '
                                  f'the network expects {tuple(own[key].shape)}; check the network options')
    missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
    if missing and any('_scale' in k for k in missing) and not unexpected:
        raise CheckpointError(f'checkpoint is a merged (deploy-form) {arch_name}; build the network with '
                              'deploy: true, or load it into a deploy-form network')
    if unexpected and any('_scale' in k for k in unexpected) and not missing:
        raise CheckpointError(f'checkpoint is a train-form {arch_name} (edge branches not merged); build the '
                              'network with deploy: false, or merge it first')


@contextlib.contextmanager
def naming_checkpoint(path):
    """Prefix a :class:`CheckpointError` raised inside with ``path``: the networks' checks
    (:func:`check_state_dict`) see tensors, not the file they came from."""
    try:
        yield
    except CheckpointError as err:
        if str(path) in str(err):
            raise
        raise CheckpointError(f'{path}: {err}') from None


def load_weights(net, path, param_key='params', strict=True):
    """Load a checkpoint file into ``net`` (verified, unwrapped, checked) and return ``net``; errors
    name the file."""
    state_dict = load_state_dict_file(path, param_key)
    with naming_checkpoint(path):
        net.load_state_dict(state_dict, strict=strict)
    return net
