"""What every data-preparation builder shares: outputs built whole and apart from the inputs.

- :func:`check_apart`: an output folder may not be, lie inside, or contain an input folder, so
  that nothing is ever written into (or, on a rebuild, removed from) an input.
- :func:`staged_folder`: a dataset folder (training split, sub-images, LMDB, a rebuilt backbone
  cache) is built in a hidden staging folder beside its target and renamed into place once
  complete. A run that fails or is killed leaves the old output or none, never a mixture, and a
  rebuild keeps no file of an earlier run.
- :func:`run_tasks`: the per-image work, in worker processes when asked.

Long loops take ``progress``, a wrapper around an iterable with tqdm's signature
(``progress(iterable, total=n, desc=label)``); :func:`no_progress` shows nothing.
"""
import contextlib
import glob
import multiprocessing
import os
import shutil
import uuid

STAGING_MARK = '.part-'  # staging folder of target 'x': '.x.part-<random>'; its old output: '...old'


def no_progress(iterable, total=None, desc=None):
    """The default ``progress``: the iterable itself, nothing shown."""
    return iterable


def overlap(output, folder):
    """How ``output`` relates to ``folder`` (symlinks resolved): 'is', 'is inside', 'contains' or ''."""
    out, other = os.path.realpath(output), os.path.realpath(folder)
    common = os.path.commonpath([out, other])
    if out == other:
        return 'is'
    return 'is inside' if common == other else 'contains' if common == out else ''


def check_apart(output, output_name, inputs):
    """Raise ValueError (one line) if ``output`` is, lies inside or contains one of the input folders.

    Args:
        output (str): folder about to be written or replaced.
        output_name (str): what the user calls it in messages, e.g. '--out'.
        inputs (list[tuple[str, str]]): (name, folder) of every input, e.g. [('--hr', 'DIV2K/HR')].
    """
    for name, folder in inputs:
        relation = overlap(output, folder)
        if relation:
            raise ValueError(f'{output_name} {output} {relation} the input folder {name} {folder}; nothing is '
                             f'written into an input: choose another {output_name}')


def name_list(paths, limit=10):
    """'a.png, b.png, ...': the file names of the first ``limit`` paths, for one-line reports."""
    return ', '.join(os.path.basename(p) for p in paths[:limit]) + (' ...' if len(paths) > limit else '')


def remove_path(path):
    """Remove a file, link or folder tree."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def is_empty_folder(path):
    return os.path.isdir(path) and not os.listdir(path)


@contextlib.contextmanager
def staged_folder(target, overwrite):
    """Build a folder whole, then put it in place of ``target``.

    Yields the path of a new, empty staging folder beside ``target`` (same file system, so the
    final rename is a cheap, atomic move). When the block completes, the old ``target`` (if any)
    is moved aside, the staging folder renamed to ``target`` and the old one removed; when the
    block raises, the staging folder is removed and ``target`` stays as it was. Staging folders
    left by killed runs of the same target are removed first (so two runs must not build the same
    target at once). A symlinked ``target`` is rebuilt where the link points.

    Raises:
        FileExistsError: ``target`` exists, is not an empty folder and ``overwrite`` is false.
    """
    if os.path.lexists(target) and not overwrite and not is_empty_folder(target):
        raise FileExistsError(f'{target} exists; pass --overwrite to rebuild it from scratch (everything in it '
                              'is replaced) or choose another --out')
    real = os.path.realpath(target)
    parent, name = os.path.split(real)
    os.makedirs(parent, exist_ok=True)
    for leftover in glob.glob(os.path.join(glob.escape(parent), glob.escape(f'.{name}{STAGING_MARK}') + '*')):
        remove_path(leftover)
    staging = os.path.join(parent, f'.{name}{STAGING_MARK}{uuid.uuid4().hex[:12]}')
    os.mkdir(staging)  # (not tempfile.mkdtemp: its mode 0700 would become the output's)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if os.path.lexists(real):
        old = staging + '.old'
        os.rename(real, old)
        os.rename(staging, real)
        remove_path(old)
    else:
        os.rename(staging, real)


def run_tasks(func, tasks, workers, chunksize=1):
    """Yield ``func(task)`` for every task, in order, using ``workers`` processes (<= 1: in this one).

    ``func`` must be picklable (a module-level function or a ``functools.partial`` of one).
    """
    if workers <= 1:
        yield from map(func, tasks)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap(func, tasks, chunksize)
