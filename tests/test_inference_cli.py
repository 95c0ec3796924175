"""cfsrdelta-infer on generated images: every input kind, failures, output naming, tiling."""
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_CFSR, official_weights, require_shared, smooth_image, write_tiny_model

from cfsrdelta_arch.app.cli import main
from cfsrdelta_arch.archs.cfsr_arch import CFSR
from cfsrdelta_arch.utils.image_io import PNG_GRAY_ALPHA, read_image, write_image
from cfsrdelta_arch.data.lr_generation import bicubic_downsample, read_image_color
from cfsrdelta_arch.app.engine import DEFAULT_TILE_OVERLAP, SREngine

H, W = 12, 16  # LR size of the generated images


@pytest.fixture
def tiny(tmp_path):
    """(option file, weights) of a random tiny CFSR x2."""
    return write_tiny_model(str(tmp_path))


@pytest.fixture
def inputs(tmp_path):
    """A folder with RGB, gray, RGBA, 16-bit PNGs, a JPEG and a corrupt PNG (written with OpenCV)."""
    folder = tmp_path / 'in'
    folder.mkdir()
    rgb = smooth_image(H, W)
    cv2.imwrite(str(folder / 'rgb.png'), rgb)
    cv2.imwrite(str(folder / 'gray.png'), rgb[..., 0])
    alpha = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    cv2.imwrite(str(folder / 'rgba.png'), np.dstack([rgb, alpha]))
    cv2.imwrite(str(folder / 'deep.png'), rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / 'photo.jpg'), rgb, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n this is not an image')
    return folder


def run_cli(capsys, *args):
    """(exit status, stderr) of the CLI."""
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def test_folder_of_every_kind(tiny, inputs, tmp_path, capsys):
    out = tmp_path / 'out'
    status, err = run_cli(capsys, '-i', inputs, '-o', out, '--opt', tiny[0], '--weights', tiny[1])
    assert status == 1
    assert 'broken.png' in err and 'not a readable image' in err
    assert '5 written, 1 failed' in err
    expected = {'rgb.png': ((2 * H, 2 * W, 3), np.uint8), 'gray.png': ((2 * H, 2 * W), np.uint8),
                'rgba.png': ((2 * H, 2 * W, 4), np.uint8), 'deep.png': ((2 * H, 2 * W, 3), np.uint16),
                'photo.png': ((2 * H, 2 * W, 3), np.uint8)}
    assert sorted(os.listdir(out)) == sorted(expected)
    for name, (shape, dtype) in expected.items():
        img = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert img.shape == shape and img.dtype == dtype, name
    # The alpha ramp is upscaled (bicubic), not dropped or replaced by an opaque plane.
    alpha = cv2.imread(str(out / 'rgba.png'), cv2.IMREAD_UNCHANGED)[..., 3]
    assert alpha[:, 0].max() < 20 and alpha[:, -1].min() > 235
    # The colour of RGBA is the colour of the RGB image; 16 bit keeps its precision.
    rgb = cv2.imread(str(out / 'rgb.png'))
    np.testing.assert_array_equal(cv2.imread(str(out / 'rgba.png'), cv2.IMREAD_UNCHANGED)[..., :3], rgb)
    deep = cv2.imread(str(out / 'deep.png'), cv2.IMREAD_UNCHANGED)
    assert np.abs(deep / 257.0 - rgb).max() <= 0.51
    assert len(np.unique(deep)) > len(np.unique(rgb))  # real 16-bit values, not 8-bit ones x 257


def test_exit_status_0_when_all_succeed(tiny, inputs, tmp_path, capsys):
    (inputs / 'broken.png').unlink()
    status, err = run_cli(capsys, '-i', inputs, '-o', tmp_path / 'out', '--opt', tiny[0], '--weights', tiny[1])
    assert status == 0, err
    assert '5 written, 0 failed' in err


def test_single_file_suffix_and_jpeg_output(tiny, inputs, tmp_path, capsys):
    out = tmp_path / 'out'
    for name in ('rgba.png', 'deep.png'):
        status, err = run_cli(capsys, '-i', inputs / name, '-o', out, '--opt', tiny[0], '--weights', tiny[1],
                              '--suffix', 'x2', '--ext', 'jpg')
        assert status == 0, err
    assert sorted(os.listdir(out)) == ['deep_x2.jpg', 'rgba_x2.jpg']
    for name in os.listdir(out):  # JPEG: alpha dropped, 16 bit reduced to 8
        img = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert img.shape == (2 * H, 2 * W, 3) and img.dtype == np.uint8


def network_output(pth, planes):
    """Reference SR of uint8 planes ((h, w) gray or (h, w, 3) RGB), computed without the engine:
    the tiny CFSR loaded from ``pth`` on the planes as floats in [0, 1] (gray replicated to RGB),
    clamped, gray averaged over the three output channels, rounded to uint8."""
    net = CFSR(**{k: v for k, v in TINY_CFSR.items() if k != 'type'}).eval()
    net.load_state_dict(torch.load(pth, weights_only=True)['params'])
    x = torch.from_numpy(planes.astype(np.float32) / 255)
    x = x[None, None].repeat(1, 3, 1, 1) if planes.ndim == 2 else x.permute(2, 0, 1)[None]
    with torch.no_grad():
        sr = net(x).clamp(0, 1)[0]
    sr = sr.mean(0) if planes.ndim == 2 else sr.permute(1, 2, 0)
    return np.round(sr.numpy() * 255).astype(np.uint8)


def test_engine_layouts_against_the_network(tiny):
    engine = SREngine.from_option_file(tiny[0], weights=tiny[1], device='cpu')
    rgb = smooth_image(H, W)[..., ::-1].copy()
    gray = rgb[..., 1].copy()
    ramp = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    np.testing.assert_array_equal(engine.enhance(rgb, channel_order='rgb'), network_output(tiny[1], rgb))
    np.testing.assert_array_equal(engine.enhance(gray), network_output(tiny[1], gray))
    # Alpha (RGBA and gray+alpha): the colour as without alpha, the alpha plane bicubic-upscaled
    # (within one level of float bicubic) or, with alpha_mode 'network', run like a gray image.
    bicubic = cv2.resize(ramp.astype(np.float32), (2 * W, 2 * H), interpolation=cv2.INTER_CUBIC)
    for img, color in ((np.dstack([rgb, ramp]), rgb), (np.dstack([gray, ramp]), gray)):
        out = engine.enhance(img, channel_order='rgb')
        assert out.shape == (2 * H, 2 * W, img.shape[2]) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[..., :-1].squeeze(-1) if color.ndim == 2 else out[..., :3],
                                      network_output(tiny[1], color))
        assert np.abs(out[..., -1] - np.clip(bicubic, 0, 255)).max() <= 1
    engine.alpha_mode = 'network'
    np.testing.assert_array_equal(engine.enhance(np.dstack([gray, ramp]))[..., 1], network_output(tiny[1], ramp))
    # Opaque alpha stays exactly opaque, also in 'network' mode.
    assert (engine.enhance(np.dstack([rgb, np.full((H, W), 255, np.uint8)]), channel_order='rgb')[..., 3] == 255).all()


def test_tiled_engine_matches_the_network(tiny):
    """Tiles of 8 LR pixels (2 x 2 tiles here) with 16 pixels of context give the whole-image network
    output (within one level: float sums in another order); without context the seams show."""
    engine = SREngine.from_option_file(tiny[0], weights=tiny[1], device='cpu', tile_size=8, tile_overlap=16)
    rgb = smooth_image(H, W)
    for img in (rgb, rgb[..., 0].copy()):
        assert np.abs(engine.enhance(img, channel_order='rgb').astype(int) - network_output(tiny[1], img)).max() <= 1
    engine.tile_overlap = 0
    assert np.abs(engine.enhance(rgb, channel_order='rgb').astype(int) - network_output(tiny[1], rgb)).max() > 1


def test_refuses_to_overwrite_inputs(tiny, inputs, capsys):
    before = (inputs / 'rgb.png').read_bytes()
    status, err = run_cli(capsys, '-i', inputs, '-o', inputs, '--opt', tiny[0], '--weights', tiny[1])
    assert status == 1 and 'would overwrite an input' in err
    assert (inputs / 'rgb.png').read_bytes() == before


def test_clear_errors(tiny, inputs, tmp_path, capsys):
    status, err = run_cli(capsys, '-i', inputs, '-o', tmp_path, '--arch', 'CFSR', '--weights',
                          tmp_path / 'missing.pth', '--scale', '4')
    assert status == 1 and 'checkpoint not found' in err and len(err.strip().splitlines()) == 1
    status, err = run_cli(capsys, '-i', tmp_path / 'nowhere', '-o', tmp_path, '--opt', tiny[0])
    assert status == 1 and 'no such file or folder' in err
    with pytest.raises(SystemExit) as exc:
        main(['-i', str(inputs), '--arch', 'CFSR', '--weights', tiny[1]])  # no --scale
    assert exc.value.code == 2


def test_read_write_roundtrip(tmp_path):
    """RGB order, 16 bit and alpha survive write_image/read_image (also from a BGR array); gray+alpha
    too (8- and 16-bit PNG, colour type 4 in the file), or becomes gray (JPEG)."""
    img = np.random.default_rng(1).integers(0, 65536, (5, 7, 4), dtype=np.uint16)
    write_image(str(tmp_path / 'a.png'), img)
    np.testing.assert_array_equal(read_image(str(tmp_path / 'a.png')), img)
    bgr = cv2.imread(str(tmp_path / 'a.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgr[..., 0], img[..., 2])
    write_image(str(tmp_path / 'b.png'), bgr, bgr=True)
    np.testing.assert_array_equal(read_image(str(tmp_path / 'b.png')), img)
    for gray_alpha in (img[..., 1:3], (img[..., 1:3] >> 8).astype(np.uint8)):
        path = tmp_path / f'ga{gray_alpha.itemsize * 8}.png'
        write_image(str(path), gray_alpha)
        assert path.read_bytes()[25] == PNG_GRAY_ALPHA  # not RGBA
        np.testing.assert_array_equal(read_image(str(path)), gray_alpha)
    write_image(str(tmp_path / 'ga8.jpg'), gray_alpha)
    assert read_image(str(tmp_path / 'ga8.jpg')).shape == (5, 7)


def test_tiled_matches_whole_image_official_cfsr():
    """Official CFSR x4 on a real 96x96 LR crop, 32-pixel tiles with the default overlap (so the
    corner tiles see only part of the image): every output pixel within one 8-bit level of
    whole-image inference (scripts/bench_tiling.py measures this on whole Set14 images)."""
    hr = read_image_color(os.path.join(require_shared('datasets', 'benchmark', 'Set14', 'HR'), 'monarch.png'))
    lr = np.ascontiguousarray(bicubic_downsample(hr, 4)[16:112, 48:144, ::-1])
    engine = SREngine.from_weights('CFSR', official_weights('CFSR_x4.pth'), 4, device='cpu')
    whole = engine.enhance(lr, channel_order='rgb')
    engine.tile_size = 32
    assert engine.tile_overlap == DEFAULT_TILE_OVERLAP and 32 + DEFAULT_TILE_OVERLAP < 96  # corner tiles
    tiled = engine.enhance(lr, channel_order='rgb')
    assert tiled.shape == whole.shape == (384, 384, 3)
    assert np.abs(tiled.astype(int) - whole).max() <= 1
    engine.tile_overlap = 0  # the check is sensitive: without context the seams show
    assert np.abs(engine.enhance(lr, channel_order='rgb').astype(int) - whole).max() > 1
