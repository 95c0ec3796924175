"""Safe file I/O written once: atomic writes and safe YAML reading.

Safe YAML: option files are parsed with YAML's safe loader, which builds only plain data (dicts,
lists, strings, numbers); a ``!!python/...`` tag is an error instead of running code.

Atomic: everything the project saves (checkpoints, training states, best.json, cache files, output
images) is written to a temporary file in the destination folder and renamed over the target, so a
crash or SIGKILL leaves either the old file or the new one, never a truncated one.
"""
import contextlib
import os
import tempfile
from collections import OrderedDict

import yaml


@contextlib.contextmanager
def atomic_path(path, suffix='.part'):
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. Parent folders
    are created. ``suffix`` ends the temporary name (e.g. '.part.png' for writers that pick the
    format from the extension).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the mode open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def write_text_atomic(path, text):
    """Write ``text`` (str, UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode('utf-8'))


def torch_save_atomic(obj, path):
    """``torch.save(obj, path)`` atomically."""
    import torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class OptionFileError(ValueError):
    """An option/YAML file that cannot be used; the message is one line naming the file."""


class OrderedSafeLoader(yaml.SafeLoader):
    """YAML's safe loader with mappings built as ``OrderedDict``, the type BasicSR's option parser builds
    (``cfsrdelta_arch.app.options`` hands it to BasicSR in place of its unsafe loader)."""


def _construct_ordered_mapping(loader, node):
    loader.flatten_mapping(node)  # '<<' merge keys, as the safe loader resolves them for dicts
    return OrderedDict(loader.construct_pairs(node))


OrderedSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_ordered_mapping)


class OrderedSafeDumper(yaml.SafeDumper):
    """YAML's safe dumper writing ``OrderedDict`` as a plain mapping in its key order (the dumper half
    of BasicSR's ``ordered_yaml``, without touching PyYAML's unsafe classes)."""


OrderedSafeDumper.add_representer(
    OrderedDict, lambda dumper, data: dumper.represent_mapping(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                                               data.items()))


def yaml_error_message(err, path):
    """One line for a ``yaml.YAMLError`` raised while parsing ``path``: ``file:line:column: reason``."""
    mark = getattr(err, 'problem_mark', None)
    where = f'{path}:{mark.line + 1}:{mark.column + 1}' if mark is not None else path
    problem = getattr(err, 'problem', None) or str(err).splitlines()[0]
    if isinstance(err, yaml.constructor.ConstructorError):
        return f'{where}: refused YAML tag ({problem}); option files are read with the safe loader, ' \
               'which builds no Python objects'
    return f'{where}: invalid YAML ({problem})'


def load_yaml(path):
    """Parse a YAML file with the safe loader (no Python object tags) into plain dicts/lists.

    Raises:
        OptionFileError: missing or non-text file, syntax error (``file:line:column``) or a tag the
            safe loader refuses (e.g. ``!!python/object/apply``), in one line.
    """
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.safe_load(f)
    except OSError as err:
        raise OptionFileError(f'{path}: cannot read ({err.strerror or err})') from None
    except UnicodeDecodeError:
        raise OptionFileError(f'{path}: not a UTF-8 text file') from None
    except yaml.YAMLError as err:
        raise OptionFileError(yaml_error_message(err, path)) from None
