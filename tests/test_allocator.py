"""The glibc malloc tuning of the CLI, cfsrdelta-test and the table scripts (utils/allocator.py), checked in
child processes (it is process-wide): a 64 MiB block must come from the heap instead of a fresh mmap, and
a user's MALLOC_* setting wins."""
import json
import os
import subprocess
import sys

import pytest

from cfsrdelta_arch.utils.allocator import MALLOC_ENV_VARS, glibc

# Allocates and frees a 64 MiB block before and after the tuning; prints, for each, the bytes glibc mapped
# for it (growth of mallinfo2.hblkhd while it is alive) and the free bytes its heap keeps afterwards
# (fordblks), and whether the tuning applied.
MALLINFO = r'''
import ctypes, json
from cfsrdelta_arch.utils.allocator import glibc, keep_freed_memory_for_reuse

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks', 'fordblks',
                 'keepcost')]

libc = glibc()
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
'''
PROBE = MALLINFO + r'''
def allocate():
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 << 20)
    mapped = libc.mallinfo2().hblkhd - before
    libc.free(block)
    return {'mapped': mapped, 'kept_free': libc.mallinfo2().fordblks}

default = allocate()
applied = keep_freed_memory_for_reuse()
print(json.dumps({'default': default, 'applied': applied, 'after': allocate()}))
'''

pytestmark = pytest.mark.skipif(glibc() is None or not hasattr(glibc(), 'mallinfo2'),
                                reason='glibc >= 2.33 (mallinfo2) only')


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV_VARS}
    out = subprocess.run([sys.executable, '-c', PROBE], env={**clean, **env}, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_large_blocks_come_from_the_heap_and_stay_for_reuse():
    result = probe()
    assert result['default']['mapped'] >= 64 << 20  # glibc's own behaviour: a fresh mmap, unmapped on free
    assert result['applied'] and result['after']['mapped'] == 0
    assert result['after']['kept_free'] >= 64 << 20  # freed, yet kept in the heap for the next feature map


def test_a_users_malloc_setting_wins():
    result = probe(MALLOC_MMAP_MAX_='65536')
    assert not result['applied'] and result['after']['mapped'] >= 64 << 20


# Runs one evaluation entry point in a child process with its work replaced by ``stop``, which
# allocates a 64 MiB block and prints how much of it glibc mapped: the tuning must be in place by the
# time the work would start (no line printed: the stub was not reached).
ENTRY_PROBE = MALLINFO + r'''
import importlib.util, os, sys
entry = sys.argv[1]

def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join('scripts', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def stop(*args, **kwargs):
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 << 20)
    print(json.dumps({'mapped': libc.mallinfo2().hblkhd - before}), flush=True)
    libc.free(block)
    raise OSError('stopped by the test')

if entry == 'test_pipeline':
    from cfsrdelta_arch.app import runner
    runner.check_command_line = stop
    call = lambda: runner.test_pipeline('.')
elif entry in ('run_benchmark', 'bench_results_table'):
    module = load_script(entry)
    setattr(module, 'load_test_set' if entry == 'run_benchmark' else 'load_networks', stop)
    call = lambda: module.main([])
else:
    module = load_script(entry)
    module.run_main = lambda body, args: stop()
    call = lambda: module.main(['--opt', 'x.yml', '--key', 'k', '--values', '1'] if entry == 'sweep_option' else [])
try:
    call()
except (OSError, SystemExit):
    pass
'''


@pytest.mark.parametrize('entry', ['test_pipeline', 'run_benchmark', 'bench_results_table', 'robustness_table',
                                   'sweep_option'])
def test_evaluation_entry_points_apply_the_tuning(entry):
    """cfsrdelta-test (app/runner.test_pipeline) and the table scripts run whole images through the
    networks (utils/allocator.py has the gain): they apply the tuning as the CLI does."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    clean = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV_VARS}
    out = subprocess.run([sys.executable, '-c', ENTRY_PROBE, entry], env=clean, cwd=root, check=True,
                         capture_output=True, text=True).stdout
    probes = [json.loads(line) for line in out.splitlines() if line.startswith('{')]
    assert probes == [{'mapped': 0}]
