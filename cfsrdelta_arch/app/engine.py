"""SREngine: a ready-to-use super-resolution network for real images (CLI, export, benchmarks).

Loading is written once here: a network is built either from an option file's ``network_g``
(train or test YAML; for BackboneDelta the backbone comes from ``network_g.backbone_weights``) or
from an arch name, a checkpoint and a scale. Train-form networks (CFSR ``deploy: false``) are merged
into deploy form on load. Tiling and self-ensemble come from :mod:`cfsrdelta_arch.utils.inference`;
the network runs in the chosen backend (:mod:`cfsrdelta_arch.app.backends`: torch, onnxruntime,
openvino).

Example::

    engine = SREngine.from_weights('CFSR', 'weights/official/CFSR_x4.pth', scale=4, tile_size=256)
    sr = engine.enhance(cv2.imread('photo.png'), channel_order='bgr')   # same layout and dtype, 4x larger
    sr = engine.enhance(PIL.Image.open('photo.png'))                    # a PIL image, 4x larger
    engine = SREngine.from_weights('CFSR', 'weights/official/CFSR_x4.pth', scale=4, backend='openvino')
"""
import copy
import difflib
import functools
import inspect
import os
from collections import namedtuple

import cv2
import numpy as np
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from PIL import Image

from cfsrdelta_arch.archs.backbone_delta_arch import WEIGHT_OPTIONS, BackboneDelta, build_from_options
from cfsrdelta_arch.archs.degradation_psf import (DEGRADATIONS, check_flip_equivariant, degradation_psf,
                                                   pad_like_degradation)
from cfsrdelta_arch.archs.nonblind_refinenet_arch import NonBlindRefineNet
from cfsrdelta_arch.archs.usrnet_arch import USRNet
from cfsrdelta_arch.data.degradations import check_noise_sigma, checked_kernel
from cfsrdelta_arch.utils.fileio import OptionFileError, load_yaml
from cfsrdelta_arch.utils.image_io import image_tensor_view, tensor_to_image, tile_to_float
from cfsrdelta_arch.utils.inference import DEFAULT_TILE_OVERLAP, self_ensemble, super_resolve
from cfsrdelta_arch.utils.weights import OFFICIAL_WEIGHTS, CheckpointError, load_state_dict_file, naming_checkpoint
from cfsrdelta_arch.app.backends import BACKENDS, make_backend

ALPHA_MODES = ('bicubic', 'network')
CHANNEL_ORDERS = ('rgb', 'bgr')
PIL_MODES = ('L', 'LA', 'RGB', 'RGBA', 'I;16')  # np.asarray/Image.fromarray map them to the array layouts
# Float inputs belong in [0, 1] (a little beyond is tolerated, outputs are clipped); beyond this range they
# are 0-255 / 0-65535 data passed as float.
FLOAT_SAMPLE_RANGE = (-1.0, 2.0)

SCALE_KWARGS = ('upscale', 'scale', 'upscale_factor')

# What a non-blind network is told about its LR: the blur kernel (non-negative (k, k) array of odd size,
# normalised to sum 1 by the engine; None: no blur), the noise level σ_n in [0, 255], and the degradation model
# ('gaussian8': blur then MATLAB bicubic; 'classical': blur then [0::s, 0::s]; docs/degradation_protocol.md).
Degradation = namedtuple('Degradation', 'kernel noise_sigma model', defaults=(None, 0.0, 'gaussian8'))


def check_float_samples(x):
    """One-line ValueError when a float image (numpy array or tensor) has NaN/infinite samples or lies far
    outside [0, 1] (:data:`FLOAT_SAMPLE_RANGE`: a forgotten division by 255 would give a white output)."""
    low, high = float(x.min()), float(x.max())  # NaN propagates through both
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError('the image has NaN or infinite samples')
    if low < FLOAT_SAMPLE_RANGE[0] or high > FLOAT_SAMPLE_RANGE[1]:
        raise ValueError(f'float samples must be in [0, 1], got {low:g} ... {high:g} (divide 8-bit data by 255, '
                         '16-bit by 65535)')


def nonblind_kind(net):
    """'delta' (a BackboneDelta with a NonBlindRefineNet), 'usrnet', or None for a blind network."""
    if isinstance(net, USRNet):
        return 'usrnet'
    if isinstance(net, BackboneDelta) and isinstance(net.refiner, NonBlindRefineNet):
        return 'delta'
    return None


def check_ensemble(degradation, ensemble):
    """One-line ValueError for the x8 self-ensemble on LR of a degradation model it cannot follow
    (:func:`check_flip_equivariant`: 'classical'); on 'gaussian8' LR the kernel is flipped with the image."""
    if ensemble and degradation is not None:
        check_flip_equivariant([degradation.model])


def checked_degradation(net, degradation, backend, ensemble):
    """``degradation`` with its kernel normalised (:func:`checked_kernel`) and its noise level a float, or a
    one-line ValueError when it is malformed or does not go with the network."""
    kind, name = nonblind_kind(net), type(net).__name__
    if degradation is not None:
        if not isinstance(degradation, Degradation):
            raise ValueError(f'degradation must be a cfsrdelta_arch.Degradation(kernel, noise_sigma, model), '
                             f'got {type(degradation).__name__}')
        if kind is None:
            raise ValueError(f'{name} is a blind network: a blur kernel / noise level needs a non-blind one '
                             '(options/test/test_CFSRDelta_NonBlind_x4.yml or USRNet)')
        if degradation.model not in DEGRADATIONS:
            raise ValueError(f"degradation model must be one of {', '.join(DEGRADATIONS)}, got {degradation.model!r}")
        check_ensemble(degradation, ensemble)
        kernel = None if degradation.kernel is None else checked_kernel(degradation.kernel, 'Degradation.kernel')
        degradation = Degradation(kernel, check_noise_sigma(degradation.noise_sigma), degradation.model)
    elif kind == 'usrnet':
        raise ValueError('USRNet needs the degradation of its input: give the blur kernel (--kernel FILE or '
                         '--blur-sigma S) and the noise level (--noise)')
    if kind and backend != 'torch':
        raise ValueError(f"non-blind networks ({name}) run on the torch backend only, not '{backend}'")
    return degradation


def nonblind_inputs(kind, degradation, batch, scale, device):
    """(args, kwargs) that a non-blind network of :func:`nonblind_kind` ``kind`` takes after its LR
    batch: NonBlindRefineNet's ``kernel`` (None: no blur), ``sigma`` and ``degradation``; USRNet's PSF
    (an identity blur when there is no kernel), scale and σ (N,). ``degradation``: a
    :class:`Degradation`, or None for clean bicubic LR."""
    kernel, noise_sigma, model = degradation or Degradation()
    kernel = None if kernel is None else torch.as_tensor(kernel, dtype=torch.float32, device=device)
    kernel = None if kernel is None else kernel[None].expand(batch, -1, -1)
    if kind == 'delta':
        return (), {'kernel': kernel, 'sigma': noise_sigma / 255.0, 'degradation': model}
    kernel = torch.ones(batch, 1, 1, device=device) if kernel is None else kernel
    return (degradation_psf(kernel, scale, model), scale,
            torch.full((batch,), noise_sigma / 255.0, device=device)), {}


def resolve_device(device='auto', backend='torch'):
    """'auto' -> 'cuda' when available (and ``backend`` is 'torch'), else 'cpu'; anything else is
    checked and returned as a ``torch.device``.

    Raises:
        ValueError: unknown backend, not a device name, a CUDA device this machine lacks, or a GPU
            for a CPU-only backend (one line; called before any weights are loaded).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend '{backend}' is not one of {', '.join(BACKENDS)}")
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() and backend == 'torch' else 'cpu'
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device '{device}' is not a device name; use auto, cpu, cuda or cuda:N") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == 'cuda' and (device.index or 0) >= count:
        found = f'this machine has {count} CUDA GPU(s)' if count else 'no CUDA GPU is available to torch'
        raise ValueError(f"device '{device}': {found}; use --device cpu (or auto)")
    if device.type != 'cpu' and backend != 'torch':
        raise ValueError(f"device '{device}': the {backend} backend runs on the CPU only; use --device cpu "
                         "(or auto), or --backend torch")
    return device


def check_arch(name, where):
    """Raise ValueError unless ``name`` is a registered arch; the one-line message starts with
    ``where`` (e.g. 'x.yml: network_g.type') and suggests the closest registered name."""
    if name in ARCH_REGISTRY or f'{name}_basicsr' in ARCH_REGISTRY:  # ARCH_REGISTRY.get's fallback suffix
        return
    names = sorted(ARCH_REGISTRY.keys())
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1)
    hint = f"did you mean '{by_lower[close[0]]}'?" if close else f'registered: {", ".join(names)}'
    raise ValueError(f"{where} '{name}' is not a registered arch; {hint}")


def scale_kwarg(arch):
    """Name of the constructor argument that sets the upscale factor of a registered arch."""
    params = inspect.signature(ARCH_REGISTRY.get(arch).__init__).parameters
    for name in SCALE_KWARGS:
        if name in params:
            return name
    raise ValueError(f'{arch} has no scale argument ({", ".join(SCALE_KWARGS)}); use an option file (--opt)')


def train_form_modules(net):
    """Submodules in train form: those with a ``merge()`` method and ``deploy == False``."""
    return [m for m in net.modules() if getattr(m, 'deploy', True) is False and callable(getattr(m, 'merge', None))]


def to_deploy(net):
    """Merge every train-form submodule in place and return ``net``.

    For CFSR this folds the EFN edge branches into ``pos`` (exact up to float rounding); networks
    without train-form modules are returned unchanged.
    """
    for module in train_form_modules(net):
        module.merge()
    return net


def one_line_error(err, net):
    """A :class:`CheckpointError` for a failed load: itself, or torch's multi-line key report cut
    to one line of at most about 300 characters."""
    if isinstance(err, CheckpointError):
        return err
    detail = ' '.join(line.strip() for line in str(err).splitlines() if line.strip())
    detail = detail if len(detail) <= 300 else detail[:300] + '...'
    return CheckpointError(f'checkpoint does not fit the {type(net).__name__} network: {detail}')


def load_state(net, state_dict):
    """Strictly load a state dict into a built network (BackboneDelta: a refiner's or a whole one).

    A deploy-form checkpoint (e.g. from scripts/export_model.py) also loads into a network built in
    train form (CFSR ``deploy: false``): the network is merged first, then loaded.

    Raises:
        CheckpointError: the checkpoint does not fit (one line).
    """
    load = net.load_refiner_or_whole if isinstance(net, BackboneDelta) else net.load_state_dict
    try:
        load(state_dict)
    except (CheckpointError, RuntimeError) as err:
        if not train_form_modules(net):
            raise one_line_error(err, net) from None
        first = err
        try:
            to_deploy(net)
            load(state_dict)
        except (CheckpointError, RuntimeError):
            raise one_line_error(first, net) from None


def load_option_file(path):
    """Option dict of a BasicSR train/test YAML file, checked as far as building its network needs:
    a ``network_g`` section whose arch names (its ``type`` and those of sections inside it, e.g. a
    BackboneDelta's backbone and refiner) are registered.

    Raises:
        ValueError: unreadable file, YAML syntax error (file:line:column), no ``network_g`` or an
            unknown arch name, in one line naming the file.
    """
    opt = load_yaml(path)
    if not isinstance(opt, dict) or not isinstance(opt.get('network_g'), dict):
        raise OptionFileError(f'{path}: no network_g section; is it a BasicSR option file?')
    network = opt['network_g']
    check_arch(network.get('type'), f'{path}: network_g.type')
    for key, section in network.items():
        if isinstance(section, dict) and 'type' in section:
            check_arch(section['type'], f'{path}: network_g.{key}.type')
    return opt


def option_scale(opt, path):
    """The upscale factor declared by an option file (``load_option_file``): ``scale`` and the scale
    arguments in ``network_g`` and its sections, which must agree.

    Raises:
        OptionFileError: they disagree, or none is given (one line naming the file).
    """
    network = opt['network_g']
    sections = [('network_g', network)] + [(f'network_g.{k}', v) for k, v in network.items() if isinstance(v, dict)]
    found = [('scale', opt['scale'])] if opt.get('scale') is not None else []
    found += [(f'{name}.{key}', section[key]) for name, section in sections for key in SCALE_KWARGS if key in section]
    if len({value for _, value in found}) > 1:
        listed = ', '.join(f'{key}: {value}' for key, value in found)
        raise OptionFileError(f'{path}: the scales disagree ({listed}); make them equal')
    if not found:
        raise OptionFileError(f'{path}: no scale given; add scale: 2, 3 or 4')
    return int(found[0][1])


def nearest_folder_above(opt_path, relative):
    """The nearest folder above the file ``opt_path`` that holds ``relative``, or None."""
    folder = os.path.dirname(os.path.abspath(opt_path))
    while not os.path.exists(os.path.join(folder, relative)):
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
    return folder


def resolve_option_path(path, opt_path):
    """A path from an option file: as given if it exists (relative to the working directory, as
    BasicSR reads it), else relative to the nearest folder above the option file where it exists
    (so options/test/x.yml finds weights/... from any working directory). A missing official file
    (downloaded on loading) goes below the nearest folder holding its top folder, e.g. the project's
    weights/. Other unresolved paths are returned as given, so the error names them as written."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    folder = nearest_folder_above(opt_path, path)
    if folder is None and os.path.basename(path) in OFFICIAL_WEIGHTS:
        folder = nearest_folder_above(opt_path, os.path.normpath(path).split(os.sep)[0])
    return path if folder is None else os.path.join(folder, path)


def load_inference_network(network_opt, weights, param_key='params'):
    """Build ``network_opt`` (``{'type': arch, ...}``) and load its weights, in eval/deploy form.

    Args:
        network_opt (dict): option dict of a registered arch; a BackboneDelta's backbone weights
            come from its ``backbone_weights`` entry unless ``weights`` is a whole network.
        weights (str | None): checkpoint of the whole network; for BackboneDelta, a refiner-only
            checkpoint (what training saves) or a whole exported one.
        param_key (str): key inside ``weights`` ('params' or 'params_ema').

    Returns:
        nn.Module: the network, eval mode, deploy form, on the CPU, no parameter requiring grad.

    Raises:
        CheckpointError: missing or mismatching weights (one-line message).
    """
    if not weights:
        raise CheckpointError(f'no weights for {network_opt.get("type")}: pass --weights or set '
                              'path.pretrain_network_g in the option file')
    state = load_state_dict_file(weights, param_key)
    network_opt = dict(network_opt)
    if network_opt.get('type') == BackboneDelta.__name__:
        if BackboneDelta.is_whole_state(state):
            network_opt.pop('backbone_weights', None)  # the whole file holds the backbone too
        elif not network_opt.get('backbone_weights'):
            raise CheckpointError(f'{weights} holds a refiner only: the backbone weights are needed too '
                                  '(network_g.backbone_weights in the option file)')
    net = build_network(network_opt)
    with naming_checkpoint(weights):
        load_state(net, state)
    return inference_form(net)


def build_network(network_opt):
    """The network of ``network_opt`` as its arch initialises it (a BackboneDelta loads its backbone
    here; errors name the file). Raises ValueError (one line) for an argument the arch does not take."""
    try:
        return build_from_options(network_opt)
    except TypeError as err:  # e.g. a misspelt option
        raise ValueError(f'network options {network_opt}: {err}') from None


def inference_form(net):
    """``net`` in eval mode and deploy form, no parameter requiring grad."""
    net.requires_grad_(False)
    return to_deploy(net.eval())


def option_weights(opt, path):
    """(checkpoint, param key) of ``path.pretrain_network_g`` / ``path.param_key_g`` in the option dict
    ``opt`` read from ``path`` (the checkpoint found as :func:`resolve_option_path` does; None if unset)."""
    paths = opt.get('path') or {}
    return resolve_option_path(paths.get('pretrain_network_g'), path), paths.get('param_key_g') or 'params'


def resolved_network_options(opt, path):
    """A copy of ``network_g`` of the option dict ``opt`` (read from ``path``) with the weight files
    it names (a BackboneDelta's backbone, a refiner's frozen clean path) found as
    :func:`resolve_option_path` does."""
    network_opt = copy.deepcopy(opt['network_g'])

    def resolve(section):
        for key, value in section.items():
            if isinstance(value, dict):
                resolve(value)
            elif key in WEIGHT_OPTIONS and value:
                section[key] = resolve_option_path(value, path)
    resolve(network_opt)
    return network_opt


def network_from_option_file(path, weights=None, param_key=None):
    """(network, scale) of ``network_g`` of a BasicSR option file, loaded as :meth:`SREngine.from_option_file`
    describes (the file is checked before any weights are read). A training option that grows a smaller
    refiner (``train.grow_pretrained_refiner``) needs ``weights``: its own checkpoint is the run's start."""
    opt = load_option_file(path)
    scale = option_scale(opt, path)
    default_weights, default_key = option_weights(opt, path)
    if weights is None and (opt.get('train') or {}).get('grow_pretrained_refiner') is True:
        raise OptionFileError(f'{path}: train.grow_pretrained_refiner: path.pretrain_network_g ({default_weights}) is '
                              'the smaller refiner this training starts from, not a trained network; give the trained '
                              'weights (--weights) or use a test option file')
    net = load_inference_network(resolved_network_options(opt, path), weights or default_weights,
                                 param_key or default_key)
    return net, scale


class SREngine:
    """A loaded SR network plus how to run it: device, tiling, self-ensemble, alpha handling.

    Args:
        net (nn.Module): LR (N, 3, H, W) RGB in [0, 1] -> SR (N, 3, s*H, s*W).
        scale (int): upscale factor s.
        device (str | torch.device): 'auto', 'cpu', 'cuda', 'cuda:1', ...
        tile_size (int | None): LR tile size; None or 0 runs whole images (fastest, most memory).
        tile_overlap (int): LR context around each tile (see DEFAULT_TILE_OVERLAP).
        self_ensemble (bool): average the 8 flip/transpose variants (8x time, ~+0.08 dB); with a
            'gaussian8' degradation the blur kernel is flipped with the image ('classical' is refused).
        alpha_mode (str): how an alpha plane is upscaled: 'bicubic' (cheap, smooth edges) or
            'network' (alpha run through the network like a gray image, sharper edges, twice the
            time).
        backend (str): 'torch', 'onnxruntime' or 'openvino' (the last two: CPU only; compiled
            models cached on disk, see app/backends.py).
        threads (int): onnxruntime/OpenVINO threads (0: the runtime's choice); torch uses
            ``torch.set_num_threads``.
        degradation (Degradation | None): the blur kernel, noise level and degradation model of the
            input, for a non-blind network (NonBlindRefineNet delta: None means clean bicubic LR, i.e.
            the shipped delta; USRNet: required). Refused for blind networks.

    The tiling/overlap attributes may be changed between calls.
    """

    def __init__(self, net, scale, device='auto', tile_size=None, tile_overlap=DEFAULT_TILE_OVERLAP,
                 self_ensemble=False, alpha_mode='bicubic', backend='torch', threads=0, degradation=None):
        if alpha_mode not in ALPHA_MODES:
            raise ValueError(f"alpha_mode must be one of {ALPHA_MODES}, got '{alpha_mode}'")
        degradation = checked_degradation(net, degradation, backend, self_ensemble)
        self.device = resolve_device(device, backend)
        self.net = net.to(self.device).eval()
        self.backend = make_backend(backend, self.net, self.device, threads)
        self.scale = int(scale)
        self.tile_size = tile_size or None
        self.tile_overlap = tile_overlap
        self.self_ensemble = self_ensemble
        self.alpha_mode = alpha_mode
        self.degradation = degradation
        self.nonblind_kind = nonblind_kind(net)

    @classmethod
    def from_option_file(cls, path, weights=None, param_key=None, **kwargs):
        """Build ``network_g`` of a BasicSR train/test option file.

        Weights: ``weights`` if given, else ``path.pretrain_network_g`` (key ``param_key`` or
        ``path.param_key_g``; refused for a training option that grows a smaller refiner, whose
        ``pretrain_network_g`` is its start). For BackboneDelta, a refiner-only checkpoint is combined with the
        backbone of ``network_g.backbone_weights``. Relative paths inside the file are resolved
        with :func:`resolve_option_path`. ``kwargs`` go to :class:`SREngine`. The file and the
        device are checked before any weights are read.
        """
        kwargs['device'] = resolve_device(kwargs.get('device', 'auto'), kwargs.get('backend', 'torch'))
        net, scale = network_from_option_file(path, weights, param_key)
        return cls(net, scale, **kwargs)

    @classmethod
    def from_weights(cls, arch, weights, scale, param_key='params', **kwargs):
        """Build a single registered arch (CFSR, LESRCNN, ...) with default options at ``scale``;
        the arch name and the device are checked before the weights are read."""
        check_arch(arch, 'arch')
        kwargs['device'] = resolve_device(kwargs.get('device', 'auto'), kwargs.get('backend', 'torch'))
        net = load_inference_network({'type': arch, scale_kwarg(arch): int(scale)}, weights, param_key)
        return cls(net, scale, **kwargs)

    def __repr__(self):
        tiles = f'tile {self.tile_size}+{self.tile_overlap}' if self.tile_size else 'whole image'
        return (f'SREngine({type(self.net).__name__} x{self.scale}, {self.backend.name} on {self.device}, {tiles}, '
                f'self-ensemble {"on" if self.self_ensemble else "off"}, alpha {self.alpha_mode})')

    def _forward(self, lr, kernel=None, bgr=False):
        """The network on one LR tile: (N, 1 or 3, h, w), float in [0, 1] or uint8/uint16, any device ->
        (N, 3, s*h, s*w) float on ``self.device`` (the CPU for onnxruntime/OpenVINO), RGB; a gray tile
        runs replicated to RGB. ``kernel``: the degradation's blur kernel (k, k) flipped like this tile by
        the self-ensemble (None: the kernel as given). ``bgr``: the tile is in OpenCV's order (the network
        sees RGB; the output stays RGB)."""
        lr = tile_to_float(lr.to(self.device), bgr).expand(-1, 3, -1, -1)
        if self.nonblind_kind is None:
            return self.backend(lr)
        degradation = self.degradation if kernel is None else self.degradation._replace(kernel=kernel)
        args, kwargs = nonblind_inputs(self.nonblind_kind, degradation, lr.shape[0], self.scale, self.device)
        return self.backend(lr, *args, **kwargs)

    def _check_tile_window(self, x):
        """One-line ValueError naming the tile options when tiling ``x`` would hand the non-blind delta
        windows no larger than the LR padding of its FFT steps (an image that small is the refiner's own
        error; clean LR goes to the shipped delta, which does not pad)."""
        if self.nonblind_kind != 'delta' or self.degradation is None or not self.tile_size:
            return
        kwargs = nonblind_inputs('delta', self.degradation, 1, self.scale, x.device)[1]
        if self.net.refiner.clean_samples(x[:1], **kwargs).all():
            return
        window, pad = self.tile_size + 2 * self.tile_overlap, self.net.refiner.pad
        if window <= pad and window < min(x.shape[-2:]):
            raise ValueError(f'tile_size (--tile) {self.tile_size} with tile_overlap (--tile-overlap) '
                             f'{self.tile_overlap} gives {window}-pixel LR windows; the non-blind delta pads '
                             f'each by {pad} pixels and needs tile_size + 2 * tile_overlap > {pad}')

    def _run(self, x, store=None, bgr=False):
        """:func:`super_resolve` with this engine's network, tiling and self-ensemble.

        Tiles of a 'classical' LR get the image continued circularly past its border
        (:func:`pad_like_degradation`, as context that is not output), the boundary the whole image's
        FFT steps assume: a tile cut from the image wrapped its own far edge instead, and differed from
        the whole image by up to the full pixel range near the border. (NonBlindRefineNet pads each
        'gaussian8' window symmetrically, which is that model's continuation where a tile touches the
        border; USRNet does not pad, and its 'gaussian8' tiles are left as they were.)"""
        check_ensemble(self.degradation, self.self_ensemble)  # the attribute may have changed since __init__
        self._check_tile_window(x)
        forward, ensemble = functools.partial(self._forward, bgr=bgr), self.self_ensemble
        if ensemble and self.degradation is not None and self.degradation.kernel is not None:
            # the blur kernel follows every flip/transpose of the tile ('gaussian8': check_ensemble refused the rest)
            kernel, unflipped = torch.as_tensor(self.degradation.kernel, dtype=torch.float32), forward
            forward, ensemble = (lambda tile: self_ensemble(unflipped, tile, kernel)), False
        margin = 0
        if (self.degradation is not None and self.degradation.model == 'classical' and self.tile_size
                and max(x.shape[-2:]) > self.tile_size):
            margin = self.tile_overlap
            x = pad_like_degradation(x, margin, 'classical')
        return super_resolve(forward, x, self.scale, ensemble, self.tile_size, self.tile_overlap,
                             store=store, margin=margin)

    @torch.inference_mode()
    def sr_tensor(self, x):
        """SR of an LR batch: (N, 3, H, W) float in [0, 1] (any device) -> (N, 3, s*H, s*W) float32
        in [0, 1] on the CPU, clamped."""
        return self._run(x).clamp_(0, 1).cpu()

    def _sr_into(self, planes, out, bgr=False):
        """Super-resolve gray (H, W) or color (H, W, 3) planes (uint8/uint16/float) into ``out`` ((s*H, s*W)
        or (s*H, s*W, 3), same dtype, e.g. a view of the output image), tile by tile: the LR input stays in
        its dtype (converted per tile) and only one tile is held as floats. A gray plane's output is the mean of the three output
        channels; ``bgr``: the color planes are in OpenCV's order (the network sees RGB)."""
        def store(rows, cols, sr):
            if out.ndim == 2:
                sr = sr.clamp(0, 1).mean(1, keepdim=True)
            out[rows, cols] = tensor_to_image(sr, out.dtype, bgr=bgr)

        self._run(image_tensor_view(planes), store, bgr)

    def _upscale_alpha_into(self, alpha, out):
        """Upscale an alpha plane (H, W) into ``out`` (s*H, s*W), same dtype (uint8/uint16/float)."""
        if alpha.min() == alpha.max():  # e.g. fully opaque: nothing to interpolate
            out[...] = alpha.flat[0]
        elif self.alpha_mode == 'network':
            self._sr_into(alpha, out)
        elif np.issubdtype(alpha.dtype, np.floating):  # OpenCV resizes float32 planes, without saturation
            out[...] = np.clip(cv2.resize(alpha.astype(np.float32), out.shape[::-1], interpolation=cv2.INTER_CUBIC), 0, 1)
        else:  # OpenCV resizes integer planes directly, rounded and saturated: no float copy
            out[...] = cv2.resize(alpha, out.shape[::-1], interpolation=cv2.INTER_CUBIC)

    @torch.inference_mode()
    def enhance(self, img, channel_order=None):
        """Super-resolve an image, returned as the same kind of object with the same layout and dtype.

        Args:
            img: one of
                - ``np.ndarray`` (H, W) gray, (H, W, 2) gray+alpha, (H, W, 3) color or (H, W, 4)
                  color+alpha; uint8, uint16 or float (in [0, 1]). Color arrays need ``channel_order``.
                - ``PIL.Image.Image`` of mode L, LA, RGB, RGBA or I;16 (16-bit gray): the mode says
                  the channel order.
                - ``torch.Tensor`` (N, 3, H, W) or (3, H, W), float in [0, 1], RGB (or BGR with
                  ``channel_order='bgr'``), any device.
            channel_order (str | None): 'bgr' for OpenCV arrays (``cv2.imread``, BasicSR/Real-ESRGAN
                code), 'rgb' for PIL/imageio/skimage arrays and :func:`read_image`. Required for a
                3- or 4-channel numpy array: there is no default, because a wrong guess silently
                swaps red and blue. Gray arrays ignore it; tensors default to 'rgb'; a PIL image
                refuses 'bgr'.

        Returns:
            The same kind as ``img``: an array (s*H, s*W[, C]) of the same dtype and channel order
            (integers rounded, floats clipped to [0, 1]), a PIL image of the same mode, or a tensor
            (N, 3, s*H, s*W) / (3, s*H, s*W) of the same dtype and device, clipped to [0, 1]. Gray
            runs through the network replicated to RGB and comes back as the mean of the three
            output channels; alpha is upscaled by ``alpha_mode``. With tiling, float data is held
            for one tile only: memory grows with the output array (and a channel-order swap costs
            no copy).

        Raises:
            TypeError / ValueError: unsupported object, shape, dtype, PIL mode or channel order
                (one line).
        """
        if channel_order not in CHANNEL_ORDERS + (None,):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        if isinstance(img, torch.Tensor):
            return self._enhance_tensor(img, channel_order == 'bgr')
        if isinstance(img, Image.Image):
            if img.mode not in PIL_MODES:
                raise ValueError(f"PIL mode '{img.mode}' is not supported ({', '.join(PIL_MODES)}); convert it "
                                 "first, e.g. img.convert('RGB')")
            if channel_order == 'bgr':
                raise ValueError("a PIL image is RGB; channel_order='bgr' contradicts it (leave it out)")
            return Image.fromarray(self._enhance_array(np.asarray(img), bgr=False))
        if isinstance(img, np.ndarray):
            if img.ndim == 3 and img.shape[2] in (3, 4) and channel_order is None:
                raise ValueError("a color numpy array needs channel_order='bgr' (cv2.imread) or 'rgb' "
                                 '(PIL, imageio, read_image)')
            return self._enhance_array(img, bgr=channel_order == 'bgr')
        raise TypeError(f'expected a numpy array, a PIL image or a torch tensor, got {type(img).__name__}')

    def _enhance_tensor(self, x, bgr):
        """(N, 3, H, W) or (3, H, W) float in [0, 1] -> the same layout, dtype and device, s times larger."""
        if x.ndim not in (3, 4) or x.shape[-3] != 3:
            raise ValueError(f'expected a tensor (N, 3, H, W) or (3, H, W), got {tuple(x.shape)}')
        if not x.is_floating_point():
            raise TypeError(f'expected a float tensor in [0, 1], got {x.dtype} (divide by 255 or 65535 first)')
        if x.numel() == 0:
            raise ValueError(f'the image is empty: {tuple(x.shape)}')
        check_float_samples(x)
        lr = x.reshape((-1,) + tuple(x.shape[-3:]))
        lr = lr.flip(1) if bgr else lr
        sr = self.sr_tensor(lr)
        sr = sr.flip(1) if bgr else sr
        return sr.reshape(x.shape[:-2] + sr.shape[-2:]).to(x.device, x.dtype)

    def _enhance_array(self, img, bgr):
        """Layout- and dtype-preserving SR of a numpy image (see :meth:`enhance`); ``bgr`` for OpenCV order."""
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (2, 3, 4)):
            raise ValueError(f'expected an array (H, W), (H, W, 2), (H, W, 3) or (H, W, 4), got {img.shape}')
        if img.dtype not in (np.uint8, np.uint16) and not np.issubdtype(img.dtype, np.floating):
            raise TypeError(f'expected uint8, uint16 or float (in [0, 1]) samples, got {img.dtype}')
        if min(img.shape[:2]) == 0:
            raise ValueError(f'the image is empty: {img.shape}')
        if np.issubdtype(img.dtype, np.floating):
            check_float_samples(img)
        out = np.empty((img.shape[0] * self.scale, img.shape[1] * self.scale) + img.shape[2:], img.dtype)
        if img.ndim == 2:
            self._sr_into(img, out)
            return out
        color = slice(0, 3) if img.shape[2] >= 3 else 0  # the color planes, or the gray plane of gray+alpha
        self._sr_into(img[..., color], out[..., color], bgr=bgr and img.shape[2] >= 3)
        if img.shape[2] in (2, 4):
            self._upscale_alpha_into(img[..., -1], out[..., -1])
        return out
