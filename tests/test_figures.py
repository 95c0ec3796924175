"""scripts/make_figures.py: helpers on synthetic arrays, and the whole script on a tiny HR folder;
also the shared benchmark evaluation behind it and the README tables (app/benchmark.py).

The end-to-end tests use the official CFSR x4 backbone (skipped locally without ../shared, failing
under CI) with a random BPRefineNet refiner, written as test option files in a temp folder, so they
do not depend on a trained CFSR-Delta checkpoint.
"""
import argparse
import os

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, official_weights, write_tiny_dataset
from PIL import Image
from test_data_scripts import load_script, run_failing

from cfsrdelta_arch.archs.backbone_delta_arch import build_from_options
from cfsrdelta_arch.app.benchmark import evaluate_image, format_cost_table, load_networks, measure_cost
from cfsrdelta_arch.data.lr_generation import mod_crop

make_figures = load_script('make_figures')
SCALE = 4


# ------------------------------------------------------------------------------ pure helpers

def test_box_sums_match_brute_force():
    values = np.random.default_rng(0).normal(size=(13, 17))
    sums = make_figures.box_sums(values, 5)
    assert sums.shape == (9, 13)
    for y, x in [(0, 0), (3, 7), (8, 12)]:
        assert sums[y, x] == pytest.approx(values[y:y + 5, x:x + 5].sum())


@pytest.mark.parametrize('sign', [1, -1])
def test_choose_box_finds_the_largest_difference_either_way(sign):
    gain = np.random.default_rng(1).normal(scale=0.1, size=(60, 80))
    gain[30:40, 50:60] += sign * 5  # one region where the methods differ a lot
    gain[:4, :10] += 50  # inside the border: must be ignored
    assert make_figures.choose_box(gain, 4, 10) == (50, 30, 10, 10)


def test_default_box_size_fits_inside_the_border():
    assert make_figures.default_box_size((480, 500, 3), 4) == 80
    assert make_figures.default_box_size((48, 48, 3), 4) == 8
    assert make_figures.default_box_size((12, 12, 3), 4) == 4


def test_select_images():
    gains = {'a': 0.01, 'b': 0.05, 'c': -0.02}
    assert make_figures.select_images(gains, None, 2) == ['b', 'a']
    assert make_figures.select_images(gains, ['c.png', 'a', 'c'], 2) == ['c', 'a']
    with pytest.raises(ValueError, match='nope'):
        make_figures.select_images(gains, ['nope'], 2)


def test_parse_box_and_dataset_name():
    assert make_figures.parse_box('1,2,30,40') == (1, 2, 30, 40)
    for bad in ('1,2,3', '1,2,0,4', 'a,b,c,d', '-1,0,4,4'):
        with pytest.raises(argparse.ArgumentTypeError):
            make_figures.parse_box(bad)
    assert make_figures.dataset_name('../shared/datasets/benchmark/Set14/HR/') == 'Set14'
    assert make_figures.dataset_name('/tmp/my_photos') == 'my_photos'


def test_save_png_keeps_under_the_size_limit(tmp_path):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(np.random.default_rng(2).random((400, 400, 3)))  # noise: the worst case for PNG
    path = str(tmp_path / 'noise.png')
    dpi, palette = make_figures.save_png(fig, path, 100, 100)
    assert os.path.getsize(path) <= 100 * 1024
    assert palette and dpi < 100


# ------------------------------------------------------------------------------- end to end

@pytest.fixture(scope='module')
def options_dir(tmp_path_factory):
    """Test option files: official CFSR x4, and CFSR-Delta x4 with a random BPRefineNet refiner."""
    backbone_pth = os.path.abspath(official_weights('CFSR_x4.pth'))
    folder = tmp_path_factory.mktemp('options')
    with open(os.path.join(ROOT, 'options', 'test', 'test_CFSR_x4.yml')) as f:
        base_opt = yaml.safe_load(f)
    with open(os.path.join(ROOT, 'options', 'test', 'test_CFSRDelta_BPRefineNet_x4.yml')) as f:
        delta_opt = yaml.safe_load(f)
    base_opt['path'] = {'pretrain_network_g': backbone_pth, 'param_key_g': 'params'}
    refiner_opt = dict(delta_opt['network_g']['refiner'], init_std=0.05)  # large enough to change the output
    torch.manual_seed(0)
    refiner_pth = str(folder / 'refiner.pth')
    torch.save({'params': build_from_options(refiner_opt).state_dict()}, refiner_pth)
    delta_opt['network_g'].update(refiner=refiner_opt, backbone_weights=backbone_pth)
    delta_opt['path'] = {'pretrain_network_g': refiner_pth,
                         'param_key_g': 'params'}
    for name, opt in (('test_CFSR_x4.yml', base_opt), ('test_CFSRDelta_BPRefineNet_x4.yml', delta_opt)):
        with open(folder / name, 'w') as f:
            yaml.safe_dump(opt, f)
    return str(folder)


@pytest.fixture
def hr_dir(tmp_path):
    """Two 48x48 HR images, img0.png and img1.png."""
    return write_tiny_dataset(str(tmp_path / 'Tiny'), SCALE, n=2, size=48)[0]


def test_main_writes_the_three_kinds_of_figures(tmp_path, options_dir, hr_dir, capsys):
    out = str(tmp_path / 'figures')
    paths = make_figures.main(['--hr', hr_dir, '--out', out, '--options-dir', options_dir])
    prefix = os.path.join(out, 'Tiny_x4_BPRefineNet')
    panels = sorted(p for p in paths if p.endswith('_panels.png'))
    assert panels == [f'{prefix}_img0_panels.png', f'{prefix}_img1_panels.png']  # default: the 2 images
    assert f'{prefix}_error_maps.png' in paths and f'{prefix}_gain.png' in paths
    assert len(paths) == 4
    for path in paths:
        with Image.open(path) as img:
            assert img.format == 'PNG' and min(img.size) > 100
        assert os.path.getsize(path) < 300 * 1024
    captured = capsys.readouterr()
    assert captured.out.split() == paths  # stdout: the paths only
    assert '[1/2] img0' in captured.err and '[2/2] img1' in captured.err and 'gain' in captured.err


def test_main_with_chosen_image_and_box(tmp_path, options_dir, hr_dir):
    out = str(tmp_path / 'figures')
    paths = make_figures.main(['--hr', hr_dir, '--out', out, '--options-dir', options_dir,
                               '--images', 'img1.png', '--box', '10,12,16,16', '--dpi', '60'])
    assert [os.path.basename(p) for p in paths] == ['Tiny_x4_BPRefineNet_img1_panels.png',
                                                     'Tiny_x4_BPRefineNet_error_maps.png',
                                                     'Tiny_x4_BPRefineNet_gain.png']


@pytest.mark.parametrize('argv, message', [
    (['--images', 'missing'], 'missing not in the folder'),
    (['--box', '40,40,16,16'], 'does not fit img0'),
])
def test_main_rejects_bad_choices(tmp_path, options_dir, hr_dir, argv, message):
    base = ['--hr', hr_dir, '--out', str(tmp_path / 'figures'), '--options-dir', options_dir]
    assert message in run_failing(make_figures.main, base + argv)
    assert not os.path.exists(tmp_path / 'figures')


def test_figure_psnr_matches_the_benchmark(options_dir, hr_dir):
    """The PSNRs in the panel titles are the results-table ones (benchmark.evaluate_image)."""
    backbone, deltas = load_networks(SCALE, ['BPRefineNet'], options_dir)
    hr = make_figures.load_hr_folder(hr_dir)[0][1]
    data = make_figures.prepare_figure_data('img0', hr, SCALE, backbone, deltas['BPRefineNet'])
    expected = evaluate_image(hr, SCALE, backbone, deltas, ensemble=False)
    assert data['psnr']['CFSR'] == pytest.approx(expected[('CFSR', 'single')][0], abs=1e-9)
    assert data['psnr']['CFSR-Delta'] == pytest.approx(expected[('BPRefineNet', 'single')][0], abs=1e-9)
    assert data['psnr']['CFSR-Delta'] != data['psnr']['CFSR']  # the random refiner does change the output
    assert np.array_equal(data['images']['HR'], mod_crop(hr, SCALE))
    x, y, w, h = data['box']
    assert x >= SCALE and y >= SCALE and x + w <= 48 - SCALE and y + h <= 48 - SCALE
    assert np.allclose(data['gain'], data['err_base'] - data['err_delta'])


def test_cost_table_rows_with_and_without_self_ensemble(options_dir):
    """benchmark.measure_cost (the README's cost table): x8 rows cost 8x the MACs, ratios vs CFSR alone."""
    backbone, deltas = load_networks(SCALE, ['BPRefineNet'], options_dir)
    with torch.no_grad():
        cost = measure_cost(SCALE, backbone, deltas, repeats=1, out_hw=(32, 48), x8_repeats=1)
    assert list(cost) == [('CFSR', 'single'), ('BPRefineNet', 'single'), ('CFSR', 'x8'), ('BPRefineNet', 'x8')]
    assert cost[('CFSR', 'single')][2] == 1.0
    for name in ('CFSR', 'BPRefineNet'):
        assert cost[(name, 'x8')][0] == cost[(name, 'single')][0]  # same parameters
        assert cost[(name, 'x8')][1] == pytest.approx(8 * cost[(name, 'single')][1])
    table = format_cost_table(cost)
    assert '| CFSR + BPRefineNet (x8 self-ensemble) |' in table and table.count('\n') == 5


def test_main_job_test_set_falls_back_from_prepared_set5_to_shared_to_embedded(tmp_path, monkeypatch):
    run_benchmark = load_script('run_benchmark')
    shared_set5 = write_tiny_dataset(str(tmp_path / 'Set5'), SCALE, n=2, size=48)[0]
    missing = str(tmp_path / 'missing' / 'HR')
    monkeypatch.setattr(run_benchmark, 'DEFAULT_HR', (missing, shared_set5))
    label, images = run_benchmark.load_test_set(None)
    assert label == 'Set5' and [name for name, _ in images] == ['img0.png', 'img1.png']
    monkeypatch.setattr(run_benchmark, 'DEFAULT_HR', (missing,))
    monkeypatch.setattr(run_benchmark, 'embedded_images', lambda: [('astronaut', None)])
    assert run_benchmark.load_test_set(None) == ('embedded (scikit-image photos)', [('astronaut', None)])


def test_benchmark_rows_equal_each_network_run_alone(options_dir, hr_dir):
    """The table's rows, single and x8, are what each whole network gives through the shared
    inference path (super_resolve, as TTASRModel runs ``val.self_ensemble``), not a re-coded copy."""
    from basicsr.metrics import calculate_psnr

    from cfsrdelta_arch.data.lr_generation import bicubic_downsample
    from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
    from cfsrdelta_arch.utils.inference import super_resolve
    backbone, deltas = load_networks(SCALE, ['BPRefineNet'], options_dir)
    hr = mod_crop(make_figures.load_hr_folder(hr_dir)[1][1], SCALE)
    result = evaluate_image(hr, SCALE, backbone, deltas)
    lr = image_to_tensor(bicubic_downsample(hr, SCALE), bgr=True)
    for name, net in (('CFSR', backbone), ('BPRefineNet', deltas['BPRefineNet'])):
        for mode, ensemble in (('single', False), ('x8', True)):
            with torch.no_grad():
                sr = tensor_to_image(super_resolve(net, lr, SCALE, self_ensemble_on=ensemble), bgr=True)
            assert result[(name, mode)][0] == pytest.approx(calculate_psnr(sr, hr, SCALE, test_y_channel=True),
                                                            abs=1e-9), (name, mode)
    assert result[('BPRefineNet', 'x8')][0] != result[('BPRefineNet', 'single')][0]
