"""Official weights downloaded on first use, from a real HTTP server on 127.0.0.1 serving ../shared's files.

The server answers ``/ok/<name>`` with the file, ``/wrong/<name>`` with another official file under that
name, ``/drop/<name>`` with the full Content-Length but only half the bytes (then closes the connection),
``/stall/<name>`` likewise but silent for STALL_SECONDS before closing, and anything else with 404. CFSRDELTA_WEIGHTS_URL points the downloads at one of those folders.
"""
import http.server
import os
import runpy
import threading
import time

import numpy as np
import pytest
import torch
import yaml

from cfsrdelta_arch.app.cli import main as infer_main
from cfsrdelta_arch.app.engine import SREngine
from cfsrdelta_arch.app.options import check_command_line
from cfsrdelta_arch.archs.cfsr_arch import CFSR
from cfsrdelta_arch.utils.fileio import OptionFileError
from cfsrdelta_arch.utils.image_io import read_image
from cfsrdelta_arch.utils.weights import (NO_DOWNLOAD_ENV, OFFICIAL_WEIGHTS, WEIGHTS_URL_ENV, CheckpointError,
                                          download_official, load_weights, sha256_of)
from conftest import ROOT, checkpoint_error_line, official_weights, smooth_image, write_png, write_tiny_dataset

NAME = 'CFSR_x4.pth'
STALL_SECONDS = 3


class WeightsHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        mode, _, name = self.path.strip('/').partition('/')
        body = self.server.files.get(self.server.wrong.get(name, name) if mode == 'wrong' else name)
        if mode not in ('ok', 'wrong', 'drop', 'stall') or body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2] if mode in ('drop', 'stall') else body)
        if mode == 'stall':
            self.wfile.flush()
            time.sleep(STALL_SECONDS)
        self.close_connection = True  # 'drop': the client sees the connection end mid-file

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(scope='module')
def server():
    """Base URL of the local weights server (CFSR_x4 and CFSR_x3 from ../shared); ``.requests`` lists paths."""
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), WeightsHandler)
    srv.files = {n: open(official_weights(n), 'rb').read() for n in (NAME, 'CFSR_x3.pth')}
    srv.wrong = {NAME: 'CFSR_x3.pth'}
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def base_url(srv, mode):
    return f'http://127.0.0.1:{srv.server_address[1]}/{mode}'


@pytest.fixture
def downloads(monkeypatch, server):
    """Turn downloads on (conftest turns them off) and point them at ``mode`` of the server."""
    monkeypatch.delenv(NO_DOWNLOAD_ENV, raising=False)
    return lambda mode: monkeypatch.setenv(WEIGHTS_URL_ENV, base_url(server, mode))


def all_files(folder):
    """Every file below ``folder`` (hidden temporary files included), relative names."""
    return sorted(os.path.relpath(os.path.join(r, f), folder) for r, _, files in os.walk(folder) for f in files)


def test_missing_official_file_is_downloaded_verified_and_loads(tmp_path, downloads, server):
    downloads('ok')
    path = tmp_path / 'weights' / 'official' / NAME  # folders created on the way
    net = load_weights(CFSR(upscale=4), str(path))
    assert all_files(tmp_path / 'weights' / 'official') == [NAME]
    assert sha256_of(path) == OFFICIAL_WEIGHTS[NAME].sha256
    reference = load_weights(CFSR(upscale=4), official_weights(NAME)).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in net.state_dict().items())
    before = len(server.requests)
    load_weights(CFSR(upscale=4), str(path))  # present now: not fetched again
    assert len(server.requests) == before


def test_wrong_file_is_refused_and_not_kept(tmp_path, downloads):
    downloads('wrong')
    msg = checkpoint_error_line(lambda: load_weights(CFSR(upscale=4), str(tmp_path / NAME)))
    assert 'sha256' in msg and OFFICIAL_WEIGHTS[NAME].sha256[:12] in msg and '/wrong/CFSR_x4.pth' in msg
    assert all_files(tmp_path) == []


def test_http_error_names_the_url_and_the_offline_command(tmp_path, downloads, server):
    downloads('missing')
    msg = checkpoint_error_line(lambda: load_weights(CFSR(upscale=4), str(tmp_path / NAME)))
    assert f'{base_url(server, "missing")}/{NAME}' in msg and '404' in msg
    assert 'python scripts/fetch_weights.py --from DIR' in msg
    assert all_files(tmp_path) == []


def test_connection_dropped_mid_file_leaves_nothing(tmp_path, downloads, server):
    downloads('drop')
    checkpoint_error_line(lambda: load_weights(CFSR(upscale=4), str(tmp_path / NAME)))
    assert server.requests[-1] == f'/drop/{NAME}'
    assert all_files(tmp_path) == []


def test_stalled_server_fails_in_one_line_and_leaves_nothing(tmp_path, server):
    """A server that stops sending mid-file: the download gives up after ``stall_seconds`` of silence
    (not STALL_SECONDS, when the server closes), names the URL and leaves no file."""
    start = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        download_official(str(tmp_path / NAME), base_url(server, 'stall'), progress=False, stall_seconds=0.5)
    assert time.monotonic() - start < STALL_SECONDS - 1
    assert f'{base_url(server, "stall")}/{NAME} (no data for 0.5 s)' in str(err.value)
    assert all_files(tmp_path) == []


def test_no_download_when_turned_off_or_not_official(tmp_path, server, monkeypatch):
    monkeypatch.setenv(WEIGHTS_URL_ENV, base_url(server, 'ok'))  # conftest has turned downloads off
    before = len(server.requests)
    assert 'downloads are off' in checkpoint_error_line(lambda: load_weights(CFSR(upscale=4), str(tmp_path / NAME)))
    monkeypatch.delenv(NO_DOWNLOAD_ENV)
    assert 'checkpoint not found' in checkpoint_error_line(lambda: load_weights(CFSR(upscale=4), str(tmp_path / 'x4.pth')))
    assert len(server.requests) == before and all_files(tmp_path) == []


def test_cli_downloads_on_first_use(tmp_path, downloads, capsys):
    downloads('ok')
    lr = write_png(str(tmp_path / 'in' / 'lr.png'), smooth_image(12, 10))
    weights = tmp_path / 'weights' / NAME
    status = infer_main(['-i', lr, '-o', str(tmp_path / 'out'), '--arch', 'CFSR', '--weights', str(weights),
                         '--scale', '4'])
    assert status == 0 and 'Downloading' in capsys.readouterr().err
    assert sha256_of(weights) == OFFICIAL_WEIGHTS[NAME].sha256
    expected = SREngine.from_weights('CFSR', official_weights(NAME), 4).enhance(read_image(lr), channel_order='rgb')
    np.testing.assert_array_equal(read_image(str(tmp_path / 'out' / 'lr.png')), expected)


def test_option_file_backbone_lands_in_its_project_from_any_cwd(tmp_path, downloads, monkeypatch):
    """A shipped CFSR-Delta option file copied into a project without official weights: run from
    another folder, the backbone goes to <project>/weights/official/, beside the refiner."""
    downloads('ok')
    project = tmp_path / 'project'
    (project / 'options' / 'test').mkdir(parents=True)
    (project / 'weights' / 'cfsrdelta').mkdir(parents=True)
    src = os.path.join(ROOT, 'options', 'test', 'test_CFSRDelta_BPRefineNet_x4.yml')
    (project / 'options' / 'test' / 'x4.yml').write_text(open(src).read())
    refiner = os.path.join(ROOT, 'weights', 'cfsrdelta', 'CFSRDelta_BPRefineNet_x4.pth')
    (project / 'weights' / 'cfsrdelta' / 'CFSRDelta_BPRefineNet_x4.pth').write_bytes(open(refiner, 'rb').read())
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    engine = SREngine.from_option_file(str(project / 'options' / 'test' / 'x4.yml'))
    assert sha256_of(project / 'weights' / 'official' / NAME) == OFFICIAL_WEIGHTS[NAME].sha256
    assert all_files(elsewhere) == []
    reference = load_weights(CFSR(upscale=4), official_weights(NAME)).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in engine.net.backbone.state_dict().items())


def test_test_runner_checks_download_before_any_work(tmp_path, downloads, monkeypatch):
    """The option check of train.py/test.py fetches a missing official pretrain_network_g, relative to
    the working directory as BasicSR reads it; a failed download is one line naming the key."""
    hr, lr = write_tiny_dataset(str(tmp_path / 'set'), 4, n=1, size=32)
    opt = {'name': 'dl', 'model_type': 'TTASRModel', 'scale': 4, 'num_gpu': 0,
           'datasets': {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': hr,
                                   'dataroot_lq': lr, 'filename_tmpl': '{}x4', 'io_backend': {'type': 'disk'}}},
           'network_g': {'type': 'CFSR', 'upscale': 4},
           'path': {'pretrain_network_g': f'weights/official/{NAME}'},
           'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}}
    opt_path = tmp_path / 'opt.yml'
    opt_path.write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    downloads('missing')
    with pytest.raises(OptionFileError) as info:
        check_command_line(is_train=False, argv=['-opt', str(opt_path)])
    assert str(info.value).startswith(f'{opt_path}: path.pretrain_network_g: could not download ')
    assert not (tmp_path / 'weights').exists() or all_files(tmp_path / 'weights') == []
    downloads('ok')
    assert check_command_line(is_train=False, argv=['-opt', str(opt_path)]) == {}
    assert sha256_of(tmp_path / 'weights' / 'official' / NAME) == OFFICIAL_WEIGHTS[NAME].sha256


def fetch_weights(capsys, *args):
    """(exit status, stdout) of scripts/fetch_weights.py run in this process."""
    script = runpy.run_path(os.path.join(ROOT, 'scripts', 'fetch_weights.py'))
    with pytest.raises(SystemExit) as info:
        script['main']([str(a) for a in args])
    return info.value.code, capsys.readouterr().out


def test_fetch_weights_downloads_by_default(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv(WEIGHTS_URL_ENV, base_url(server, 'ok'))  # the script downloads even with NO_DOWNLOAD set
    status, out = fetch_weights(capsys, '--dest', tmp_path, '--only', 'CFSR_x4')
    assert status == 0 and out.split() == [NAME, 'ok']
    assert all_files(tmp_path) == [NAME] and sha256_of(tmp_path / NAME) == OFFICIAL_WEIGHTS[NAME].sha256
    before = len(server.requests)
    assert fetch_weights(capsys, '--dest', tmp_path, '--only', 'CFSR_x4') == (0, f'{NAME:16s} already there\n')
    assert len(server.requests) == before
    status, out = fetch_weights(capsys, '--dest', tmp_path / 'bad', '--only', 'CFSR_x4', '--quiet',
                                '--url-base', base_url(server, 'wrong'))
    assert status == 1 and 'does not match' in out and all_files(tmp_path / 'bad') == []
