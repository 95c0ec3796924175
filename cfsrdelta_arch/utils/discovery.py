"""Import every ``*<suffix>.py`` module of a sub-package so its registry decorators run."""
import importlib
import os


def import_modules_with_suffix(package_name, package_file, suffix):
    """Import ``<package_name>.<stem>`` for each file in the package folder ending in ``suffix``.

    Args:
        package_name (str): dotted name of the package, e.g. ``'cfsrdelta_arch.archs'``.
        package_file (str): the package's ``__file__``; its folder is scanned.
        suffix (str): file ending that marks a registrable module, e.g. ``'_arch.py'``.

    Returns:
        list[module]: the imported modules, sorted by file name for a stable registration order.
    """
    folder = os.path.dirname(os.path.abspath(package_file))
    stems = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(suffix))
    return [importlib.import_module(f'{package_name}.{stem}') for stem in stems]
