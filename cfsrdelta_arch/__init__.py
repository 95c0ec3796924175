"""CFSR-Delta: a BasicSR plugin for lightweight single-image super-resolution.

``import cfsrdelta_arch`` registers the plugin's archs (CFSR, LESRCNN, RefineNet, LRRefineNet, BPRefineNet,
CFSRDelta), models (TTASRModel, CFSRDeltaModel), loss (L1FFTLoss) and dataset
(PairedCachedBaseDataset) in BasicSR's registries, so option files anywhere can name them.
"""
from .compat import install_functional_tensor_alias, patch_basicsr_train

install_functional_tensor_alias()  # must run before the first ``import basicsr``

from . import archs, data, losses, models  # noqa: E402,F401  (imported for registration)

patch_basicsr_train()

__version__ = '0.1.0'
