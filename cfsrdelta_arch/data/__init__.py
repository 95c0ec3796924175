"""Auto-registration: every ``*_dataset.py`` file in this folder is imported for BasicSR's registries."""
from cfsrdelta_arch.utils.discovery import import_modules_with_suffix

_modules = import_modules_with_suffix(__name__, __file__, '_dataset.py')
