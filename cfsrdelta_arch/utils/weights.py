"""Checkpoint loading written once: the upstream files (where they come from, their sha256, their
download on first use), unwrapping, and one-line errors for a checkpoint of the wrong network or scale.

Used by the models (through BasicSR's option files), the inference CLI, the export script, the main
job (scripts/run_benchmark.py) and scripts/fetch_weights.py.
"""
import contextlib
import difflib
import hashlib
import http.client
import os
import shutil
import socket
import sys
from typing import NamedTuple

import torch
from torch.hub import download_url_to_file

from .fileio import atomic_path


class OfficialFile(NamedTuple):
    """An upstream release file: commit-pinned URL and sha256 (of the file the reference numbers were
    measured with, README "Weights")."""
    url: str
    sha256: str


_CFSR = 'https://github.com/Aitical/CFSR/raw/a13d41c14ba661651de3eaa212ec013bf426c6ab/model_zoo'
_LESRCNN = 'https://github.com/hellloxiaotian/LESRCNN/raw'
# A file with one of these names is sha256-verified before it is loaded, and downloaded when missing.
OFFICIAL_WEIGHTS = {
    'CFSR_x2.pth': OfficialFile(f'{_CFSR}/CFSR_x2.pth',
                                'e6440c1a70af2cfa16c51287593f681438c8f307a81f90367a24e42086522f2c'),
    'CFSR_x3.pth': OfficialFile(f'{_CFSR}/CFSR_x3.pth',
                                'd501ce105b52550be501b327785d6fde27ca3534531f33aa0d530750ec41eb40'),
    'CFSR_x4.pth': OfficialFile(f'{_CFSR}/CFSR_x4.pth',
                                '59c779a61c72238aed87683a908248d6e9e3cdb78a29a71da196d20092b6f2f6'),
    'LESRCNN_x2.pth': OfficialFile(f'{_LESRCNN}/1702378cccdd808bbc8f00ae2c01e5bd6afcb6d9/x2/lesrcnn_x2.pth',
                                   '66b4b2ddb268486f78a3d49758a016417e64f602ef963667b5ce34039200bcde'),
    'LESRCNN_x3.pth': OfficialFile(f'{_LESRCNN}/fab02d6f5fb7357d955cec224dbea67f1a19ef61/x3/lesrcnn_x3.pth',
                                   '95cbabcbd243e5582118d3bba44fd751a80dd19a291d5f3b1ebd7c9b3b61346a'),
    'LESRCNN_x4.pth': OfficialFile(f'{_LESRCNN}/4cc75f9b099a9197e326767cff039933226117b6/x4/lesrcnn_x4.pth',
                                   '1de9d0e1b1817de43fba3ce9c4b966fd8cde81e160d7432a844d6a2296f90cbc'),
}
# <base>/<file name> instead of the pinned URLs (a mirror holding the files under their local names).
WEIGHTS_URL_ENV = 'CFSRDELTA_WEIGHTS_URL'
# Set (to anything but '' or '0') to turn off the download of missing official files on first use.
NO_DOWNLOAD_ENV = 'CFSRDELTA_NO_DOWNLOAD'
OFFLINE_HINT = 'offline: python scripts/fetch_weights.py --from DIR (a folder holding the official files)'


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
    official = OFFICIAL_WEIGHTS.get(os.path.basename(path))
    if official is None:
        return
    actual = sha256_of(path)
    if actual != official.sha256:
        raise CheckpointError(f'{path}: sha256 {actual[:12]}... does not match the upstream release '
                              f'({official.sha256[:12]}...); re-download it (see README, "Weights")')


def official_url(name, url_base=None):
    """Where official file ``name`` is downloaded from: ``<url_base>/<name>`` when a base is given
    (argument, else the CFSRDELTA_WEIGHTS_URL variable), else its commit-pinned upstream URL."""
    url_base = url_base or os.environ.get(WEIGHTS_URL_ENV)
    return f"{url_base.rstrip('/')}/{name}" if url_base else OFFICIAL_WEIGHTS[name].url


# Seconds without a byte from the server after which a download fails (torch.hub's downloader has no
# timeout of its own: a stalled connection would hang the command for ever).
DOWNLOAD_STALL_SECONDS = 60


@contextlib.contextmanager
def default_socket_timeout(seconds):
    """Sockets created inside the block time out after ``seconds`` of silence (process-wide while it lasts)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_official(path, url_base=None, progress=True, stall_seconds=DOWNLOAD_STALL_SECONDS):
    """Download the official file named like ``path`` (e.g. .../CFSR_x4.pth) to ``path``.

    The bytes go to a temporary file beside ``path`` (torch.hub's downloader, with a progress bar on
    stderr), are checked against the full sha256 and only then renamed to ``path``: an HTTP error, a
    dropped connection, a server silent for ``stall_seconds``, a wrong file or Ctrl-C leaves no file
    behind.

    Raises:
        CheckpointError: the download failed or gave other bytes (one line naming the URL and the
            offline command).
    """
    name = os.path.basename(path)
    url = official_url(name, url_base)
    if progress:
        print(f'Downloading {url} to {path}', file=sys.stderr)
    try:
        with atomic_path(path) as tmp, default_socket_timeout(stall_seconds):
            download_url_to_file(url, tmp, progress=progress)
            actual = sha256_of(tmp)
            if actual != OFFICIAL_WEIGHTS[name].sha256:
                raise CheckpointError(f'{url}: sha256 {actual[:12]}... ({os.path.getsize(tmp)} bytes) does not match '
                                      f'the upstream release ({OFFICIAL_WEIGHTS[name].sha256[:12]}...), not kept '
                                      f'(an incomplete download or another file); {OFFLINE_HINT}')
    except (OSError, http.client.HTTPException) as err:  # HTTP errors, no network, a dropped connection
        stalled = isinstance(err, socket.timeout) or isinstance(getattr(err, 'reason', None), socket.timeout)
        reason = f'no data for {stall_seconds:g} s' if stalled else ' '.join(str(err).split()) or type(err).__name__
        raise CheckpointError(f'could not download {url} ({reason}); {OFFLINE_HINT}') from None


def install_official(name, dest_dir, src_dir=None, copy=False, url_base=None, progress=True):
    """Put official file ``name`` into ``dest_dir``, verified: from local folder ``src_dir`` (symlinked,
    or copied with ``copy``) or else downloaded (:func:`download_official`).

    Returns:
        str: 'ok', 'already there' (an intact copy is kept, not fetched again), or why not installed.
    """
    dest = os.path.join(dest_dir, name)
    expected = OFFICIAL_WEIGHTS[name].sha256
    if src_dir is None:
        if os.path.isfile(dest) and sha256_of(dest) == expected:
            return 'already there'
        try:
            download_official(dest, url_base, progress)
        except CheckpointError as err:
            return str(err)
        return 'ok'
    src = os.path.abspath(os.path.join(src_dir, name))
    if not os.path.isfile(src):
        return 'missing in source'
    if sha256_of(src) != expected:
        return 'SHA256 MISMATCH, not installed'
    if copy:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    else:  # a link made beside dest and renamed over it (atomic_path would chmod the link's target)
        os.makedirs(dest_dir, exist_ok=True)
        link = f'{dest}.link'
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(src, link)
        os.replace(link, dest)
    return 'ok'


def downloads_enabled():
    """False when CFSRDELTA_NO_DOWNLOAD is set (to anything but '' or '0')."""
    return os.environ.get(NO_DOWNLOAD_ENV, '') in ('', '0')


def ensure_checkpoint(path):
    """Make sure checkpoint file ``path`` exists: a missing official file (by base name) is downloaded
    to ``path`` unless downloads are turned off.

    Raises:
        CheckpointError: missing and not downloadable, or the download failed (one line).
    """
    if os.path.isfile(path):
        return
    if os.path.basename(path) not in OFFICIAL_WEIGHTS:
        raise CheckpointError(f'checkpoint not found: {path} (see README, "Weights")')
    if not downloads_enabled():
        raise CheckpointError(f'checkpoint not found: {path} (downloads are off: {NO_DOWNLOAD_ENV} is set; '
                              f'{OFFLINE_HINT})')
    download_official(path)


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
    then to the whole dict when absent. A missing official file is downloaded (:func:`ensure_checkpoint`);
    official files are sha256-verified first.
    """
    ensure_checkpoint(path)
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


def embed_state_dict(target, state_dict, growable):
    """``state_dict`` embedded in the tensors of ``target``, a larger network's state dict of the same
    structure (the same tensor names; conv layers with more input channels or a greater width), so that
    the larger network computes what the smaller one did.

    Each tensor named in ``growable`` (e.g. the trainable parameters) may be larger than the checkpoint's
    along its first two axes only: the checkpoint fills the leading block, the rest of the input axis
    (dim 1 of a conv weight: new input channels, or the channels of new hidden units) is set to 0, and new
    output rows keep ``target``'s values, e.g. a fresh initialisation, so new hidden units receive
    gradients (zero incoming *and* outgoing weights would never train). Every other tensor (a frozen part,
    a buffer) must match exactly. Tensors of equal shape are taken as they are.

    Raises:
        CheckpointError: different tensor names, or a tensor that does not fit (one line).
    """
    missing, unknown = sorted(set(target) - set(state_dict)), sorted(set(state_dict) - set(target))
    if missing or unknown:
        def listed(names):
            return ', '.join(names[:3]) + (f' and {len(names) - 3} more' if len(names) > 3 else '')
        raise CheckpointError('grows only a refiner of the same structure: ' + '; '.join(
            text for text in (missing and f'it lacks {listed(missing)}', unknown and f'the network has no {listed(unknown)}')
            if text))
    embedded = {}
    for name, value in target.items():
        old = state_dict[name]
        if old.shape == value.shape:
            embedded[name] = old
            continue
        if (name not in growable or old.dim() != value.dim() or old.shape[2:] != value.shape[2:]
                or any(o > n for o, n in zip(old.shape, value.shape))):
            raise CheckpointError(f"'{name}' of shape {tuple(old.shape)} does not grow into the network's "
                                  f"{tuple(value.shape)} (only trainable tensors grow, along their first two axes)")
        grown = value.clone()
        if grown.dim() > 1:
            grown[:, old.shape[1]:] = 0
        grown[tuple(slice(0, size) for size in old.shape)] = old
        embedded[name] = grown
    return embedded


def freeze_parameters(net, names):
    """Set ``requires_grad=False`` on the parameters of ``net`` named by ``names`` (a parameter's full
    name, or a module prefix such as ``bodies.0``); raise ValueError if one of ``names`` matches no
    trainable parameter, with the closest trainable name or prefix (else the top-level ones), or if
    ``names`` would leave nothing to train."""
    def named(param_name, name):  # the parameter itself or one inside the module ``name``
        return param_name == name or param_name.startswith(name + '.')

    trainable = [name for name, p in net.named_parameters() if p.requires_grad]
    for name in names:
        if not any(named(t, name) for t in trainable):
            prefixes = {'.'.join(t.split('.')[:i]) for t in trainable for i in range(1, t.count('.') + 2)}
            close = difflib.get_close_matches(name, sorted(prefixes), n=1)
            hint = (f"did you mean '{close[0]}'?" if close
                    else f'it has {", ".join(sorted({t.split(".")[0] for t in trainable}))}')
            raise ValueError(f"'{name}' names no trainable parameter of {type(net).__name__}; {hint}")
    frozen = [t for t in trainable if any(named(t, n) for n in names)]
    if trainable and len(frozen) == len(trainable):
        raise ValueError(f'{names} leaves no parameter of {type(net).__name__} to train')
    for name, param in net.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
