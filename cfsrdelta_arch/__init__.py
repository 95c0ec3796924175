"""CFSR-Delta: a BasicSR plugin for lightweight single-image super-resolution.

``import cfsrdelta_arch`` registers the plugin's archs (CFSR, LESRCNN, RefineNet, LRRefineNet, BPRefineNet,
NonBlindRefineNet, USRNet, BackboneDelta), models (TTASRModel, BackboneDeltaModel, NonBlindDeltaModel,
USRNetModel), loss (L1FFTLoss) and datasets (PairedCachedBaseDataset, DegradedPairedDataset,
DegradedOnTheFlyDataset) in BasicSR's registries, so option files anywhere can name them.
``cfsrdelta_arch.SREngine`` is the Python API for images (numpy, PIL, torch); ``cfsrdelta_arch.Degradation``
what a non-blind network is told about its input (blur kernel, noise level, degradation model).

Without BasicSR installed only the networks are imported (``cfsrdelta_arch.archs``), e.g. for
spandrel: :func:`register_spandrel` adds CFSR, LESRCNN and whole CFSR-Delta checkpoints to
``spandrel.MAIN_REGISTRY``.

Layers, each importing only from those before it: ``utils`` (no package imports) -> ``archs``
(networks and their fixed layers) -> ``data``, ``losses`` -> ``models`` -> ``app`` (engine, CLI,
export, benchmark tables, runners, spandrel support).
"""
from .utils.compat import basicsr_installed, install_functional_tensor_alias

__version__ = '0.1.0'

if basicsr_installed():
    install_functional_tensor_alias()  # must run before the first ``import basicsr``

    from . import archs, data, losses, models  # noqa: E402,F401  (imported for registration)
    from .app.engine import Degradation, SREngine  # noqa: E402,F401
    from .app.options import patch_basicsr_options  # noqa: E402
    from .app.resume import patch_basicsr_train  # noqa: E402

    patch_basicsr_train()
    patch_basicsr_options()  # BasicSR parses option files with YAML's unsafe loader
else:
    from . import archs  # noqa: F401  (the networks need torch only)


def register_spandrel():
    """Add CFSR, LESRCNN and CFSR-Delta to ``spandrel.MAIN_REGISTRY`` (idempotent); works without BasicSR.

    Afterwards ``spandrel.ModelLoader().load_from_file(path)`` loads the official CFSR/LESRCNN
    checkpoints and the whole-network exports of scripts/export_model.py.
    """
    from .app.spandrel_support import register
    register()
