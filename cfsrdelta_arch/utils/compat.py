"""Make an unmodified BasicSR 1.4.2 importable with current torchvision.

Applied by ``import cfsrdelta_arch`` before anything from ``basicsr`` is imported; idempotent, so
importing the plugin twice, or after another package imported basicsr, is safe.
"""
import sys
import types


def install_functional_tensor_alias():
    """Provide ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17).

    ``basicsr.data.degradations`` imports ``rgb_to_grayscale`` from it; the function still lives in
    ``torchvision.transforms.functional``. A real module, if a future torchvision brings one back,
    is left alone.
    """
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
        return
    except ImportError:
        pass
    from torchvision.transforms import functional
    alias = types.ModuleType(name)
    alias.__doc__ = 'Alias installed by cfsrdelta_arch.utils.compat for basicsr 1.4.2.'
    alias.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = alias
