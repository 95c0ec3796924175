"""CFSR-Delta: a BasicSR plugin for lightweight single-image super-resolution.

``import cfsrdelta_arch`` registers the plugin's archs (CFSR, LESRCNN, RefineNet, LRRefineNet, BPRefineNet,
BackboneDelta), models (TTASRModel, BackboneDeltaModel), loss (L1FFTLoss) and dataset
(PairedCachedBaseDataset) in BasicSR's registries, so option files anywhere can name them.

Layers, each importing only from those before it: ``utils`` (no package imports) -> ``archs``
(networks and their fixed layers) -> ``data``, ``losses`` -> ``models`` -> ``app`` (engine, CLI,
export, benchmark tables, runners).
"""
from .utils.compat import install_functional_tensor_alias

install_functional_tensor_alias()  # must run before the first ``import basicsr``

from . import archs, data, losses, models  # noqa: E402,F401  (imported for registration)
from .app.options import patch_basicsr_options  # noqa: E402
from .app.resume import patch_basicsr_train  # noqa: E402

patch_basicsr_train()
patch_basicsr_options()  # BasicSR parses option files with YAML's unsafe loader

__version__ = '0.1.0'
