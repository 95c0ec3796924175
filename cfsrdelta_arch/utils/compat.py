"""BasicSR as an optional dependency of the networks, and an unmodified BasicSR 1.4.2 importable
with current torchvision.

The archs register through :func:`register_arch`: into BasicSR's ``ARCH_REGISTRY`` when BasicSR is
installed, and always into :data:`PLUGIN_ARCHS`, so the networks (and spandrel support) work where
BasicSR is absent. :func:`install_functional_tensor_alias` is applied before anything from
``basicsr`` is imported; idempotent, so importing the plugin twice, or after another package
imported basicsr, is safe.
"""
import importlib.util
import sys
import types

# The plugin's own archs by class name (filled by register_arch), for building them without BasicSR.
PLUGIN_ARCHS = {}


def basicsr_installed():
    """Whether ``basicsr`` can be found (not imported: a broken BasicSR still fails loudly on import)."""
    return importlib.util.find_spec('basicsr') is not None


def arch_registry():
    """BasicSR's ``ARCH_REGISTRY`` (the functional_tensor alias installed first), or None without BasicSR."""
    if not basicsr_installed():
        return None
    install_functional_tensor_alias()
    from basicsr.utils.registry import ARCH_REGISTRY
    return ARCH_REGISTRY


def register_arch(cls):
    """Class decorator: record ``cls`` in :data:`PLUGIN_ARCHS` and, with BasicSR, in its ARCH_REGISTRY."""
    PLUGIN_ARCHS[cls.__name__] = cls
    registry = arch_registry()
    if registry is not None:
        registry.register()(cls)
    return cls


def get_arch(name):
    """The arch class registered as ``name``: BasicSR's registry (the plugin's archs and BasicSR's own,
    EDSR, SwinIR, ...) when installed, else the plugin's own archs.

    Raises:
        KeyError: unknown name (without BasicSR the message lists the plugin's archs).
    """
    registry = arch_registry()
    if registry is not None:
        return registry.get(name)
    if name not in PLUGIN_ARCHS:
        raise KeyError(f"arch '{name}' is unknown; without BasicSR installed only the plugin's archs "
                       f"can be built: {', '.join(sorted(PLUGIN_ARCHS))}")
    return PLUGIN_ARCHS[name]


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
