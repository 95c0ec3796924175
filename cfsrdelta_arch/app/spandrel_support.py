"""spandrel support: CFSR, LESRCNN and whole CFSR-Delta checkpoints for ``spandrel.ModelLoader``.

``cfsrdelta_arch.register_spandrel()`` (or :func:`register`) adds three architectures to
``spandrel.MAIN_REGISTRY``; they are detected from the key sets of a state dict and their sizes
read from its tensors, so the upstream files and this project's exports load with
``spandrel.ModelLoader().load_from_file(path)``:

- ``CFSR``: the official CFSR_x{2,3,4}.pth (deploy form) and train-form checkpoints (edge branches,
  merged on load). embed_dim, depths, dw_size, mlp_ratio, in_chans and upscale come from the
  shapes; img_range is not stored and is the release's 1.0.
- ``LESRCNN``: the official LESRCNN_x{2,3,4}.pth; num_feat from conv1, the scale from the
  upsampler convs (one F->9F conv: x3, else x2 per F->4F conv).
- ``CFSRDelta``: a whole BackboneDelta (``backbone.*`` + ``refiner.*`` keys, what
  scripts/export_model.py --pth writes) with a CFSR or LESRCNN backbone and a BPRefineNet,
  LRRefineNet or RefineNet refiner, told apart by the refiner's input channels (3 + 6, 3 + 3 per
  LR pixel of the packed SR, or 3 at SR resolution). BPRefineNet's back-projection has no weights,
  so its ``bp_steps`` is not in the file: the shipped 3 is used. A refiner-only checkpoint
  (weights/cfsrdelta/*.pth) is not a network by itself: export the whole network first.

The networks run exactly as in the plugin (same modules, eval, deploy form); spandrel's call adds
the clamp to [0, 1] that SREngine applies too. Needs torch and spandrel only, not BasicSR.
"""
import spandrel
from spandrel.util import KeyCondition, get_scale_and_output_channels, get_seq_len

from cfsrdelta_arch.archs.backbone_delta_arch import BackboneDelta, build_from_options
from cfsrdelta_arch.archs.bprefinenet_arch import BPRefineNet
from cfsrdelta_arch.archs.cfsr_arch import CFSR
from cfsrdelta_arch.archs.lesrcnn_arch import checkpoint_scale

CFSR_KEYS = ('conv_first.weight', 'layers.0.blocks.0.attn.a.2.lkb_reparam.weight', 'layers.0.blocks.0.mlp.pos.weight',
             'layers.0.conv.weight', 'norm.weight', 'conv_after_body.weight', 'upsample.0.weight')
LESRCNN_KEYS = ('sub_mean.shifter.weight', 'add_mean.shifter.weight', 'conv1.0.weight', 'conv3.0.weight',
                'conv17_4.0.weight', 'conv18.0.weight', 'upsample.up.body.0.weight')
# Smallest LR side BPRefineNet's fixed bicubic convs accept (their symmetric padding); spandrel pads smaller inputs.
BPREFINENET_MIN_SIZE = 7
BACKBONE, REFINER = 'backbone.', 'refiner.'

detect_cfsr = KeyCondition.has_all(*CFSR_KEYS)
detect_lesrcnn = KeyCondition.has_all(*LESRCNN_KEYS)


def sub_state(state_dict, prefix):
    """The entries of ``state_dict`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def cfsr_options(state_dict):
    """CFSR constructor arguments read from a CFSR state dict's shapes (train form: ``deploy=False``)."""
    embed_dim, in_chans = state_dict['conv_first.weight'].shape[:2]
    depths = [get_seq_len(state_dict, f'layers.{i}.blocks') for i in range(get_seq_len(state_dict, 'layers'))]
    hidden = state_dict['layers.0.blocks.0.mlp.fc1.weight'].shape[0]
    upscale, _ = get_scale_and_output_channels(state_dict['upsample.0.weight'].shape[0], in_chans)
    return {'type': 'CFSR', 'in_chans': in_chans, 'embed_dim': embed_dim, 'depths': depths,
            'dw_size': state_dict['layers.0.blocks.0.attn.a.2.lkb_reparam.weight'].shape[-1],
            'mlp_ratio': hidden / embed_dim, 'upscale': upscale,
            'deploy': 'layers.0.blocks.0.mlp.sobel_x_scale' not in state_dict}


def lesrcnn_options(state_dict):
    """LESRCNN constructor arguments read from a LESRCNN state dict."""
    return {'type': 'LESRCNN', 'upscale': checkpoint_scale(state_dict),
            'num_feat': state_dict['conv1.0.weight'].shape[0]}


def backbone_options(state_dict):
    """Constructor options of a CFSR or LESRCNN state dict; None for anything else."""
    if detect_cfsr(state_dict):
        return cfsr_options(state_dict)
    if detect_lesrcnn(state_dict):
        return lesrcnn_options(state_dict)
    return None


def refiner_options(state_dict, scale):
    """Options of a BPRefineNet, LRRefineNet or RefineNet state dict (a ``body`` of 3x3 convs) for
    ``scale``; None when the body's channels fit none of them."""
    convs = get_seq_len(state_dict, 'body') // 2 + 1  # body.0, body.2, ...: convs with ReLUs between
    first, last = state_dict.get('body.0.weight'), state_dict.get(f'body.{2 * (convs - 1)}.weight')
    if first is None or last is None:
        return None
    width, cin = first.shape[:2]
    cout = last.shape[0]
    channels = cout // (scale * scale)
    if cout == channels * scale * scale and cin == cout + 2 * channels:  # [unshuffle(SR), LR, r(SR)]
        return {'type': 'BPRefineNet', 'upscale': scale, 'num_in_ch': channels, 'width': width, 'num_convs': convs}
    if cout == channels * scale * scale and cin == cout + channels:  # [unshuffle(SR), LR]
        return {'type': 'LRRefineNet', 'upscale': scale, 'num_in_ch': channels, 'width': width, 'num_convs': convs}
    if cin == cout and convs == 3:  # at SR resolution
        return {'type': 'RefineNet', 'num_in_ch': cin, 'width': width}
    return None


def cfsrdelta_options(state_dict):
    """BackboneDelta options of a whole-network state dict; None if it is not one this module builds."""
    if not state_dict or not all(k.startswith((BACKBONE, REFINER)) for k in state_dict):
        return None
    backbone = backbone_options(sub_state(state_dict, BACKBONE))
    if backbone is None:
        return None
    refiner = refiner_options(sub_state(state_dict, REFINER), backbone['upscale'])
    return None if refiner is None else {'backbone': backbone, 'refiner': refiner}


def descriptor(architecture, net, state_dict, scale, tags, size_requirements=None):
    """ImageModelDescriptor of ``net`` after loading ``state_dict`` and merging train-form CFSR modules.

    fp16/bf16 are declared unsupported: not verified for these networks (CFSR's LayerNorm is
    computed by hand, BPRefineNet's projection subtracts nearly equal values).
    """
    net.load_state_dict(state_dict)
    for module in net.modules():
        if isinstance(module, CFSR):
            module.merge()
    return spandrel.ImageModelDescriptor(
        net.eval(), net.state_dict(), architecture=architecture, purpose='SR', tags=tags,
        supports_half=False, supports_bfloat16=False, scale=scale, input_channels=3, output_channels=3,
        size_requirements=size_requirements, tiling=spandrel.ModelTiling.SUPPORTED)


class CFSRArch(spandrel.Architecture):
    """CFSR (ConvFormer SR, IEEE TIP 2024), deploy or train form."""

    def __init__(self):
        super().__init__(id='CFSR', detect=detect_cfsr)

    def load(self, state_dict):
        opt = cfsr_options(state_dict)
        tags = [f'{opt["embed_dim"]}nf', 'x'.join(map(str, opt['depths'])) + ' blocks']
        return descriptor(self, build_from_options(opt), state_dict, opt['upscale'], tags)


class LESRCNNArch(spandrel.Architecture):
    """LESRCNN (Knowledge-Based Systems 2020)."""

    def __init__(self):
        super().__init__(id='LESRCNN', detect=detect_lesrcnn)

    def load(self, state_dict):
        opt = lesrcnn_options(state_dict)
        return descriptor(self, build_from_options(opt), state_dict, opt['upscale'], [f'{opt["num_feat"]}nf'])


class CFSRDeltaArch(spandrel.Architecture):
    """A whole BackboneDelta: CFSR/LESRCNN backbone + BPRefineNet/LRRefineNet/RefineNet refiner."""

    def __init__(self):
        super().__init__(id='CFSRDelta', name='CFSR-Delta', detect=lambda sd: cfsrdelta_options(sd) is not None)

    def load(self, state_dict):
        opt = cfsrdelta_options(state_dict)
        net = BackboneDelta(opt['backbone'], opt['refiner'])
        minimum = BPREFINENET_MIN_SIZE if isinstance(net.refiner, BPRefineNet) else 0
        tags = [opt['backbone']['type'], opt['refiner']['type']]
        return descriptor(self, net, state_dict, opt['backbone']['upscale'], tags,
                          spandrel.SizeRequirements(minimum=minimum))


def register(registry=None):
    """Add CFSR, LESRCNN and CFSR-Delta to ``registry`` (default ``spandrel.MAIN_REGISTRY``); calling
    it again changes nothing. Returns the architectures that were added."""
    registry = spandrel.MAIN_REGISTRY if registry is None else registry
    arches = (CFSRDeltaArch(), CFSRArch(), LESRCNNArch())
    return registry.add(*(spandrel.ArchSupport.from_architecture(a) for a in arches), ignore_duplicates=True)
