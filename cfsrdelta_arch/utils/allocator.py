"""glibc malloc settings for image-sized tensors: the default of the entry points that run whole images
(cfsrdelta-infer, the plugin's test runner ``cfsrdelta_arch/test.py`` / ``cfsrdelta-test``, and the
table scripts run_benchmark, bench_results_table, robustness_table, sweep_option). BasicSR's own
``test_pipeline``, as a foreign project calls it, is left alone.

By default glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and returns it to the kernel on ``free``, so each of the hundreds of feature maps of one forward pass
is page-faulted and zeroed anew. Serving them from the heap (``M_MMAP_MAX`` 0) and keeping freed heap
memory (a huge ``M_TRIM_THRESHOLD``) lets later blocks reuse the pages. Measured (CFSR x4, torch
backend, SREngine, 2 threads, best of 2 in alternated child processes, idle machine): 2560x1440
output as a whole image 13.03 s -> 3.74 s (3.5x), peak RSS 1452 -> 1887 MiB; 1280x720 1.20 -> 0.92 s;
OpenVINO plans its own memory and was unchanged (720p 0.68 vs 0.75 s, tiled 4K 15.6 vs 15.5 s,
within noise). The plugin's test runner on B100 x4 (CFSR): 38-42 s -> 26-31 s. The cost is that freed
memory stays with the process until it exits, hence an entry point's default and not something the
library does to its users' processes.
"""
import ctypes
import ctypes.util
import os

# mallopt parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# The tuning a user's own MALLOC_* environment setting overrides: then nothing is changed.
MALLOC_ENV_VARS = ('MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TOP_PAD_')
KEEP_FREED_BYTES = 2 ** 31 - 1  # mallopt takes an int: the largest trim threshold it accepts


def glibc():
    """The C library as a ctypes handle when it is glibc (it has ``mallopt``), else None (musl,
    macOS, Windows)."""
    name = ctypes.util.find_library('c')
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, 'mallopt') and hasattr(libc, 'gnu_get_libc_version') else None


def keep_freed_memory_for_reuse():
    """Serve large blocks from the heap and keep freed memory for reuse (see the module docstring).

    Affects this whole process, from now on. Skipped where the C library is not glibc or the user
    set any of :data:`MALLOC_ENV_VARS` (their choice wins).

    Returns:
        bool: whether the settings were applied.
    """
    if any(var in os.environ for var in MALLOC_ENV_VARS):
        return False
    libc = glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
