"""cfsrdelta-infer and scripts/export_model.py run as a user runs them, in their own processes on
real files: every fault is one error line and exit status 1 before any image is computed, nothing
partial is left behind, Ctrl-C keeps only whole images, gray+alpha stays gray+alpha, and with
--tile the peak memory grows with the uint8 output, not with float copies of it.

Most cases run in processes forked from a server that has imported the package once
(tests/forked_python.py). The memory test starts real ``python -m cfsrdelta_arch.app.cli`` processes
(a forked process shares its parent's pages, which blurs its peak RSS).
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import cv2
import forked_python
import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_CFSR, checkout_env, read_tree, smooth_image, write_tiny_model

from cfsrdelta_arch.utils.image_io import read_image, write_image

CLI = ('-m', 'cfsrdelta_arch.app.cli')
EXPORT = (os.path.join(ROOT, 'scripts', 'export_model.py'),)


def run(command, cwd):
    """(exit status, stderr) of ``command`` run to its end in a forked process."""
    done = forked_python.run(command, cwd, timeout=120)
    return done.returncode, done.stderr


@pytest.fixture
def work(tmp_path):
    """A folder with a tiny CFSR x2 (tiny.yml, tiny.pth), two input images (in/), broken checkpoints
    and option files, and a plain file; the commands run inside it."""
    work = tmp_path / 'work'
    work.mkdir()
    write_tiny_model(str(work))
    (work / 'in').mkdir()
    for i in range(2):
        cv2.imwrite(str(work / 'in' / f'img{i}.png'), smooth_image(12, 16, seed=i))
    (work / 'empty.pth').write_bytes(b'')
    (work / 'truncated.pth').write_bytes((work / 'tiny.pth').read_bytes()[:3000])
    (work / 'image.pth').write_bytes((work / 'in' / 'img0.png').read_bytes())
    tiny_yml = (work / 'tiny.yml').read_text()
    (work / 'syntax.yml').write_text('scale: 2\nnetwork_g:\n  type: CFSR\n upscale: 2\n')
    (work / 'typo.yml').write_text(tiny_yml.replace('type: CFSR', 'type: CFSRR'))
    (work / 'nonet.yml').write_text('scale: 2\nnetwork:\n  type: CFSR\n')
    (work / 'x4.yml').write_text(tiny_yml.replace('upscale: 2', 'upscale: 4').replace('scale: 2', 'scale: 4'))
    (work / 'afile').write_text('not a folder\n')
    return work


def unusable_device():
    """A CUDA device this machine lacks: 'cuda' without a GPU, else the one after the last GPU."""
    return f'cuda:{torch.cuda.device_count()}' if torch.cuda.is_available() else 'cuda'


NETWORK = ('--opt', 'tiny.yml', '--weights', 'tiny.pth')
# case: (arguments after -i in, what the one error line must say)
FAULTS = {
    'opt missing': (('-o', 'out', '--opt', 'missing.yml'), ['missing.yml', 'cannot read']),
    'opt syntax': (('-o', 'out', '--opt', 'syntax.yml'), ['syntax.yml:4:', 'invalid YAML']),
    'opt unknown arch': (('-o', 'out', '--opt', 'typo.yml', '--weights', 'tiny.pth'),
                         ['typo.yml: network_g.type', "'CFSRR'", "did you mean 'CFSR'?"]),
    'opt without network_g': (('-o', 'out', '--opt', 'nonet.yml'), ['nonet.yml', 'no network_g']),
    'arch unknown': (('-o', 'out', '--arch', 'LESRNN', '--weights', 'tiny.pth', '--scale', '2'),
                     ["'LESRNN'", "did you mean 'LESRCNN'?"]),
    'device without GPU': (('-o', 'out', *NETWORK, '--device', unusable_device()),
                           [f"device '{unusable_device()}'", '--device cpu']),
    'output is a file': (('-o', 'afile', *NETWORK), ['-o afile', 'is a file']),
    'output under a file': (('-o', 'afile/sub', *NETWORK), ['-o afile/sub', 'is a file']),
    'weights empty': (('-o', 'out', '--opt', 'tiny.yml', '--weights', 'empty.pth'), ['empty.pth']),
    'weights truncated': (('-o', 'out', '--opt', 'tiny.yml', '--weights', 'truncated.pth'), ['truncated.pth']),
    'weights not a checkpoint': (('-o', 'out', '--opt', 'tiny.yml', '--weights', 'image.pth'), ['image.pth']),
    'scale differs from the checkpoint': (('-o', 'out', '--opt', 'x4.yml', '--weights', 'tiny.pth'),
                                          ['tiny.pth', 'x2', 'x4']),
}


def assert_one_line_error(status, err, needles):
    lines = err.strip().splitlines()
    assert status == 1 and 'Traceback' not in err, err
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    for needle in needles:
        assert needle in lines[0], err


@pytest.mark.parametrize('case', FAULTS)
def test_cli_fault_is_one_line_and_writes_nothing(work, case):
    args, needles = FAULTS[case]
    before = read_tree(work)
    status, err = run(CLI + ('-i', 'in') + args, work)
    assert_one_line_error(status, err, needles)
    assert read_tree(work) == before  # no output folder, no partial file, the plain file untouched


def test_cli_output_folder_not_writable(work):
    """A folder where not even root can create files (sysfs), checked before any image is computed."""
    target = '/sys/cfsrdelta-out'
    try:
        fd, probe = tempfile.mkstemp(dir='/sys')
    except OSError:
        pass
    else:
        os.close(fd)
        os.remove(probe)
        pytest.skip('/sys accepts new files on this machine; no unwritable folder to test with')
    status, err = run(CLI + ('-i', 'in', '-o', target, *NETWORK), work)
    assert_one_line_error(status, err, [f'-o {target}', 'cannot create files in /sys'])
    assert not os.path.exists(target)


def test_export_faults(work):
    (work / 'folder.pth').mkdir()
    before = read_tree(work)
    status, err = run(EXPORT + (*NETWORK, '--pth', 'folder.pth'), work)
    assert_one_line_error(status, err, ['--pth folder.pth', 'is a folder'])
    status, err = run(EXPORT + (*NETWORK, '--onnx', 'afile/tiny.onnx'), work)
    assert_one_line_error(status, err, ['--onnx afile/tiny.onnx', 'is a file'])
    status, err = run(EXPORT + ('--opt', 'typo.yml', '--weights', 'tiny.pth', '--pth', 'out.pth'), work)
    assert_one_line_error(status, err, ["did you mean 'CFSR'?"])
    status, err = run(EXPORT + ('--opt', 'tiny.yml', '--weights', 'truncated.pth', '--pth', 'out.pth'), work)
    assert_one_line_error(status, err, ['truncated.pth'])
    assert read_tree(work) == before


def test_ctrl_c_keeps_only_whole_images(work):
    """SIGINT while a folder is processing: exit 130, 'interrupted: N of M written', and exactly N
    whole images in the output folder (no temporary or truncated file)."""
    count = 12
    (work / 'many').mkdir()
    for i in range(count):
        cv2.imwrite(str(work / 'many' / f'img{i:02d}.png'), smooth_image(96, 96, seed=i))
    out = work / 'out'
    proc = forked_python.ForkedCommand(CLI + ('-i', 'many', '-o', 'out', *NETWORK, '--self-ensemble'), work)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(re.fullmatch(r'img\d\d\.png', name) for name in os.listdir(out))):
        assert proc.poll() is None and time.monotonic() < deadline, 'no image was written'
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGINT)
    done = proc.wait(60)
    err = done.stderr
    assert done.returncode == 130 and 'Traceback' not in err, err
    match = re.fullmatch(r'interrupted: (\d+) of (\d+) written', err.strip().splitlines()[-1])
    assert match, err
    written, total = int(match[1]), int(match[2])
    assert total == count and 1 <= written < count, err
    names = sorted(os.listdir(out))
    assert len(names) == written and all(re.fullmatch(r'img\d\d\.png', n) for n in names), names
    for name in names:
        assert read_image(str(out / name)).shape == (192, 192, 3)


def test_write_image_is_atomic(tmp_path, monkeypatch):
    """A write that dies after the bytes went out (here: fsync fails) leaves the old file as it was
    and no temporary file beside it."""
    path = tmp_path / 'a.png'
    write_image(str(path), np.zeros((4, 4, 3), np.uint8))
    old = path.read_bytes()

    def crash(fd):
        raise OSError('simulated crash')
    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(OSError, match='simulated crash'):
        write_image(str(path), np.full((40, 40, 3), 200, np.uint8))
    assert os.listdir(tmp_path) == ['a.png'] and path.read_bytes() == old


def png_color_type(path):
    """Colour type in a PNG file's header (4: gray + alpha, 6: RGBA)."""
    with open(path, 'rb') as f:
        return f.read(26)[25]


def test_gray_alpha_keeps_its_layout(work):
    from PIL import Image  # writes PNG colour type 4, as other programs do (OpenCV cannot)
    gray = smooth_image(12, 16, channels=1)[..., 0]
    alpha = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (12, 1))
    Image.fromarray(np.dstack([gray, alpha])).save(work / 'ga.png')
    assert png_color_type(work / 'ga.png') == 4
    cv2.imwrite(str(work / 'gray.png'), gray)
    status, err = run(CLI + ('-i', 'ga.png', '-o', 'out', *NETWORK), work)
    assert status == 0, err
    status, err = run(CLI + ('-i', 'gray.png', '-o', 'out', *NETWORK), work)
    assert status == 0, err
    assert png_color_type(work / 'out' / 'ga.png') == 4  # gray + alpha, not RGBA
    out = read_image(str(work / 'out' / 'ga.png'))
    assert out.shape == (24, 32, 2) and out.dtype == np.uint8
    # The gray plane is what the gray image alone gives; the alpha ramp is upscaled, not dropped.
    np.testing.assert_array_equal(out[..., 0], read_image(str(work / 'out' / 'gray.png')))
    assert out[:, 0, 1].max() < 20 and out[:, -1, 1].min() > 235


def peak_extras_mib(runs):
    """Run the CLI's ``main`` on each argument list of ``runs`` in turn, in this process; returns by
    how many MiB the peak resident memory rose above the resident memory before each run (Linux:
    the peak is reset through /proc/self/clear_refs). The first run should be a small warm-up, so
    that what the first inference loads (library pages, thread pools) is not counted later."""
    import gc
    from cfsrdelta_arch.app.cli import main

    def status_mib(key):
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ':')) / 1024
    extras = []
    for args in runs:
        gc.collect()
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # VmHWM := VmRSS
        before = status_mib('VmRSS')
        assert main(args) == 0
        extras.append(status_mib('VmHWM') - before)
    return extras


@pytest.mark.skipif(not os.path.exists('/proc/self/clear_refs'), reason='needs Linux /proc/self/clear_refs')
def test_tiled_memory_grows_with_the_uint8_output(tmp_path):
    """--tile 128 at x4 in a fresh process (after a warm-up image): from a 256^2 to a 640^2 LR image
    the peak memory above the resting process may grow by less than 2x the growth of the uint8
    output (measured: 1.6x, the output plus the larger interior tiles and allocator slack; with an
    RGB output array, which OpenCV's encoder needs swapped and copied, and the encoded file held in
    memory: about 3x; when tiles were assembled as floats: about 12x)."""
    opt, pth = write_tiny_model(str(tmp_path), scale=4,
                                network=dict(TINY_CFSR, upscale=4, embed_dim=4, dw_size=3, mlp_ratio=1))
    sizes = (32, 256, 640)
    for size in sizes:
        cv2.imwrite(str(tmp_path / f'lr{size}.png'), smooth_image(size, size, seed=size))
    runs = [['-i', f'lr{size}.png', '-o', 'out', '--opt', opt, '--weights', pth, '--tile', '128', '--device', 'cpu']
            for size in sizes]
    env = checkout_env()
    env['PYTHONPATH'] = os.pathsep.join([os.path.dirname(__file__), env['PYTHONPATH']])
    script = f'import json, test_faults_cli as t; print(json.dumps(t.peak_extras_mib({runs!r})))'
    proc = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    extras = dict(zip(sizes, json.loads(proc.stdout.strip().splitlines()[-1])))
    for size in sizes:
        assert read_image(str(tmp_path / 'out' / f'lr{size}.png')).shape == (4 * size, 4 * size, 3)
    output_growth = (640 ** 2 - 256 ** 2) * 16 * 3 / 2 ** 20  # MiB of uint8 RGB output
    assert extras[640] - extras[256] < 2 * output_growth, (extras, output_growth)
