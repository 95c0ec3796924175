"""The non-blind delta: degradation PSFs, the data step on the protocol's models, the reduction to the
shipped CFSR-Delta on clean LR, the per-sample degradation model of the on-the-fly data, and
training/testing NonBlindDeltaModel through BasicSR's runners."""
import os

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import TINY_CFSR, official_weights, require_shared, smooth_image, write_png
from test_pipelines import backbone_path, exp_name, run_entries  # noqa: F401  (fixtures)
from test_data_scripts import load_script
from test_usrnet import degraded_training_options, degraded_val_folder, psnr_logged_by_test_run
from cfsrdelta_arch.app.engine import SREngine
from cfsrdelta_arch.app.robustness import Case, current_commit, format_summary, merge_rows, read_rows, run
from cfsrdelta_arch.archs.bprefinenet_arch import BPRefineNet
from cfsrdelta_arch.archs.backbone_delta_arch import BackboneDelta
from cfsrdelta_arch.archs.bicubic_layers import symmetric_pad
from cfsrdelta_arch.archs.degradation_psf import degradation_psf, lr_wiener_to_bicubic, pad_like_degradation
from cfsrdelta_arch.archs.nonblind_refinenet_arch import NonBlindRefineNet, degradation_code
from cfsrdelta_arch.archs.usrnet_arch import p2o
from cfsrdelta_arch.data.degradations import blur_downsample, setting_kernels
from cfsrdelta_arch.data.degraded_onthefly_dataset import DegradedOnTheFlyDataset
from cfsrdelta_arch.data.paired_cached_base_dataset import DatasetError
from cfsrdelta_arch.models.degradation_inputs import degradation_inputs
from cfsrdelta_arch.utils.inference import self_ensemble
from cfsrdelta_arch.utils.weights import CheckpointError, embed_state_dict

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
SHIPPED_DELTA = os.path.join(ROOT, 'weights', 'cfsrdelta', 'CFSRDelta_BPRefineNet_x{}.pth')
SHIPPED_NONBLIND = os.path.join(ROOT, 'weights', 'cfsrdelta', 'CFSRDelta_NonBlind_x{}.pth')
NONBLIND_SCALES = (2, 3, 4)  # the scales with shipped non-blind weights
TINY_CLEAN = {'type': 'BPRefineNet', 'upscale': 2, 'width': 4, 'num_convs': 2, 'bp_steps': 1}


def circular_degrade(x, psf, scale):
    """(x ⊗ psf)[0::s, 0::s] with a circular boundary, via the FFT (what the data step assumes)."""
    return torch.fft.ifft2(torch.fft.fft2(x) * p2o(psf, x.shape[-2:])).real[..., ::scale, ::scale]


@pytest.mark.parametrize('setting,scale', [('gaussian8', 2), ('gaussian8', 3), ('gaussian8', 4), ('classical', 4)])
def test_psf_reproduces_the_protocol_away_from_borders(setting, scale):
    """The protocol's blur + bicubic (or decimation) equals (x ⊗ psf)[0::s, 0::s] in the interior."""
    hr = np.random.default_rng(0).random((24 * scale, 20 * scale, 3))
    kernel = setting_kernels(setting, scale)[2].kernel
    psf = degradation_psf(torch.from_numpy(kernel)[None], scale, setting)
    assert psf.shape[-1] % 2 == 1 and float(psf.sum()) == pytest.approx(1.0, abs=1e-6)
    lr = blur_downsample(hr, kernel, scale, setting)
    ours = circular_degrade(torch.from_numpy(hr).permute(2, 0, 1)[None], psf, scale)[0].permute(1, 2, 0).numpy()
    inner = np.s_[7:-7, 7:-7]
    assert np.abs(ours - lr)[inner].max() < 1e-6
    if setting == 'classical':  # circular blur: exact everywhere
        assert np.abs(ours - lr).max() < 1e-12


def test_psf_per_sample_models():
    kernels = torch.from_numpy(np.stack([setting_kernels('classical', 4)[i].kernel for i in (0, 4)]))
    mixed = degradation_psf(kernels, 4, ['classical', 'gaussian8'])
    alone = degradation_psf(kernels[1:], 4, 'gaussian8')
    torch.testing.assert_close(mixed[1:], alone, rtol=0, atol=0)
    pad = (mixed.shape[-1] - 25) // 2
    torch.testing.assert_close(mixed[0, 0, pad:-pad, pad:-pad], kernels[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match='degradation must be one of'):
        degradation_psf(kernels, 4, 'bicubic')


def psnr(x, y, border):
    return float(-10 * torch.log10(((x - y)[..., border:-border, border:-border] ** 2).mean()))


def test_lr_wiener_filter_of_the_bicubic_psf_is_the_identity():
    """Degraded by the bicubic PSF itself, the filter's gain is |B|² / (|B|² + λ): 1 as λ -> 0."""
    lr = torch.rand(2, 3, 20, 18, dtype=torch.float64)
    psf = degradation_psf(torch.ones(2, 1, 1, 1, dtype=torch.float64), 4, 'gaussian8')
    torch.testing.assert_close(lr_wiener_to_bicubic(lr, psf, 4, torch.full((2,), 1e-12)), lr, rtol=0, atol=1e-9)
    assert (lr_wiener_to_bicubic(lr, psf, 4, torch.full((2,), 1e-2)) - lr).abs().max() > 1e-3


@pytest.mark.parametrize('setting,floor', [('gaussian8', 35), ('classical', 25)])
def test_lr_wiener_filter_recovers_the_bicubic_lr(setting, floor):
    """From the protocol's degraded LR of a smooth image to its clean bicubic LR: far closer than the
    degraded LR is (blur undone; for 'classical' also the (s-1)/2-pixel sampling shift; its plain
    decimation aliases, which no linear filter undoes, hence the lower floor)."""
    hr = smooth_image(192, 160, seed=5).astype(np.float64) / 255
    kernel = setting_kernels(setting, 4)[3].kernel
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
    degraded = as_tensor(blur_downsample(hr, kernel, 4, setting))
    bicubic = as_tensor(blur_downsample(hr, np.ones((1, 1)), 4, 'gaussian8'))
    psf = degradation_psf(torch.from_numpy(kernel)[None], 4, setting)
    restored = lr_wiener_to_bicubic(degraded, psf, 4, torch.tensor([1e-4]))
    before, after = psnr(degraded, bicubic, 8), psnr(restored, bicubic, 8)
    assert after > before + 8 and after > floor, (before, after)


def test_backbone_runs_on_the_prefiltered_lr_except_for_clean_samples():
    """BackboneDelta feeds the backbone NonBlindRefineNet.backbone_input: the degraded samples' LR is
    Wiener-filtered, a clean sample's LR reaches the backbone untouched (so clean output is today's delta)."""
    torch.manual_seed(0)
    refiner = {'type': 'NonBlindRefineNet', 'upscale': 2, 'width': 4, 'num_convs': 2, 'pad': 4,
               'clean_refiner': TINY_CLEAN, 'prefilter_lambda': 1e-3}
    net = BackboneDelta(dict(TINY_CFSR, upscale=2), refiner).eval()
    lr = torch.rand(2, 3, 12, 10)
    kernel = torch.zeros(2, 25, 25)
    kernel[0, 12, 12] = 1
    kernel[1] = torch.from_numpy(setting_kernels('classical', 2)[1].kernel)
    with torch.no_grad():
        prepared = net.refiner.backbone_input(lr, kernel, 0.0)
        torch.testing.assert_close(prepared[:1], lr[:1], rtol=0, atol=0)
        assert (prepared[1:] - lr[1:]).abs().max() > 1e-2 and 0 <= prepared.min() and prepared.max() <= 1
        expected = net.refiner(net.forward_backbone(prepared), lr, kernel, 0.0)
        torch.testing.assert_close(net(lr, kernel=kernel, sigma=0.0), expected, rtol=0, atol=0)
        # one floor per model, per sample
        blurred = kernel[1:].expand(2, 25, 25)
        net.refiner.prefilter_lambda = {'gaussian8': 1.0, 'classical': 1e-3}
        mixed = net.refiner.backbone_input(lr, blurred, 0.0, ['gaussian8', 'classical'])
        for i, (name, lam) in enumerate((('gaussian8', 1.0), ('classical', 1e-3))):
            net.refiner.prefilter_lambda = lam
            alone = net.refiner.backbone_input(lr[i:i + 1], blurred[i:i + 1], 0.0, name)
            torch.testing.assert_close(mixed[i:i + 1], alone, rtol=0, atol=1e-6)
        assert (mixed[1:] - prepared[1:]).abs().max() > 1e-3  # not the gaussian8 filter of the same kernel
        # one noise growth per model, per sample: a growth g at σ adds g·σ²/q² to the floor
        sigma = torch.tensor([2.0, 4.0]) / 255
        net.refiner.prefilter_lambda, net.refiner.prefilter_noise_lambda = 1e-3, {'gaussian8': 0.25, 'classical': 0.0}
        noisy = net.refiner.backbone_input(lr, blurred, sigma, ['gaussian8', 'classical'])
        net.refiner.prefilter_noise_lambda = 0.0
        for i, (name, lam) in enumerate((('gaussian8', 1e-3 + 0.25 * 2.0 ** 2), ('classical', 1e-3))):
            net.refiner.prefilter_lambda = lam
            alone = net.refiner.backbone_input(lr[i:i + 1], blurred[i:i + 1], sigma[i:i + 1], name)
            torch.testing.assert_close(noisy[i:i + 1], alone, rtol=0, atol=1e-6)
        net.refiner.prefilter_lambda = None
        assert net.refiner.backbone_input(lr, kernel, 0.0) is lr
    with pytest.raises(ValueError, match='prefilter_lambda must give one value per degradation model'):
        NonBlindRefineNet(upscale=2, clean_refiner=TINY_CLEAN, prefilter_lambda={'gaussian8': 1e-3})
    with pytest.raises(ValueError, match='prefilter_noise_lambda must give one value per degradation model'):
        NonBlindRefineNet(upscale=2, clean_refiner=TINY_CLEAN, prefilter_noise_lambda={'gausian8': 1e-3,
                                                                                     'classical': 1e-3})
    with pytest.raises(ValueError, match='must be > 0 and prefilter_noise_lambda >= 0'):
        NonBlindRefineNet(upscale=2, clean_refiner=TINY_CLEAN, prefilter_noise_lambda={'gaussian8': -1,
                                                                                     'classical': 1e-3})
    with pytest.raises(ValueError, match='must be > 0'):
        NonBlindRefineNet(upscale=2, clean_refiner=TINY_CLEAN, prefilter_lambda={'gaussian8': 1e-3, 'classical': 0})
    with pytest.raises(ValueError, match='must be > 0'):
        NonBlindRefineNet(upscale=2, clean_refiner=TINY_CLEAN, prefilter_lambda=0)


def tiny_refiner(**kwargs):
    torch.manual_seed(0)
    net = NonBlindRefineNet(upscale=2, stages=2, width=4, num_convs=2, pad=4, clean_refiner=TINY_CLEAN, **kwargs)
    for body in net.bodies:  # a non-trivial learned part
        torch.nn.init.normal_(body[-1].weight, 0, 0.05)
    return net.eval()


@pytest.mark.parametrize('setting,alpha,tolerance', [('gaussian8', 1e-4, 1e-3), ('classical', 1e-9, 1e-5)])
def test_data_step_fits_the_lr_of_either_model(setting, alpha, tolerance):
    """With the bodies at zero and a small α the output, degraded by the protocol's own steps, is the
    LR away from the borders (the padding makes the boundary approximate; the bicubic PSF's spectral
    zeros need α >= 1e-4 in float64)."""
    net = tiny_refiner(alpha_init=alpha).double()
    for body in net.bodies:
        torch.nn.init.zeros_(body[-1].weight)
    kernel = setting_kernels(setting, 2)[5 if setting == 'classical' else 3].kernel
    hr = smooth_image(48, 40, seed=3).astype(np.float64) / 255
    lr = blur_downsample(hr, kernel, 2, setting)
    sr = torch.rand(1, 3, 48, 40, dtype=torch.float64)  # a poor first estimate
    with torch.no_grad():
        out = net(sr, torch.from_numpy(lr).permute(2, 0, 1)[None], torch.from_numpy(kernel)[None], 0.0, setting)
    again = blur_downsample(out[0].permute(1, 2, 0).numpy(), kernel, 2, setting)
    assert np.abs(again - lr)[6:-6, 6:-6].max() < tolerance
    assert np.abs(blur_downsample(sr[0].permute(1, 2, 0).numpy(), kernel, 2, setting) - lr).max() > 0.1


def test_clean_lr_runs_the_clean_refiner_per_sample():
    net = tiny_refiner()
    sr, lr = torch.rand(3, 3, 24, 22), torch.rand(3, 3, 12, 11)
    blur = torch.from_numpy(setting_kernels('classical', 2)[1].kernel).float()
    delta = torch.zeros(25, 25)
    delta[12, 12] = 1
    with torch.no_grad():
        clean = net.clean(sr, lr)
        torch.testing.assert_close(net(sr, lr), clean, rtol=0, atol=0)  # no kernel: clean bicubic
        torch.testing.assert_close(net(sr, lr, delta.expand(3, 25, 25), 0.0), clean, rtol=0, atol=0)
        # per sample: clean, noisy, blurred
        out = net(sr, lr, torch.stack([delta, delta, blur]), torch.tensor([0.0, 5 / 255, 0.0]))
        torch.testing.assert_close(out[:1], clean[:1], rtol=0, atol=0)
        assert (out[1:] - clean[1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3
        # a delta kernel under the classical model is a shifted sampling, not the clean case
        assert (net(sr, lr, delta[None].expand(3, 25, 25), 0.0, 'classical') - clean).abs().max() > 1e-3
    with pytest.raises(ValueError, match='larger than its padding'):
        net(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4, 4), blur[None], 0.0)
    with torch.no_grad():  # clean LR of that size is the shipped delta's, which takes it
        small_sr, small_lr = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 4, 4)
        torch.testing.assert_close(net(small_sr, small_lr), net.clean(small_sr, small_lr), rtol=0, atol=0)


def test_noise_free_samples_of_other_models_skip_the_bodies():
    """``noise_free_bodies=['classical']``: a noise-free gaussian8 sample gets the data steps alone (its
    output equals that of a network with zeroed bodies), a noisy one and a classical one do not."""
    net = tiny_refiner(noise_free_bodies=['classical'])
    bodiless = tiny_refiner(noise_free_bodies=['classical'])
    for body in bodiless.bodies:
        torch.nn.init.zeros_(body[-1].weight)
        torch.nn.init.zeros_(body[-1].bias)
    sr, lr = torch.rand(3, 3, 24, 22), torch.rand(3, 3, 12, 11)
    blur = torch.from_numpy(setting_kernels('classical', 2)[1].kernel).float().expand(3, 25, 25)
    args = (blur, torch.tensor([0.0, 5 / 255, 0.0]), ['gaussian8', 'gaussian8', 'classical'])
    with torch.no_grad():
        out, reference = net(sr, lr, *args), bodiless(sr, lr, *args)
    torch.testing.assert_close(out[:1], reference[:1], rtol=0, atol=0)
    assert (out[1:] - reference[1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    with pytest.raises(ValueError, match='degradation must be one of'):
        tiny_refiner(noise_free_bodies=['bicubic'])


def shipped_refiner_options(scale):
    """NonBlindRefineNet's arguments in test_CFSRDelta_NonBlind_x<s>.yml, without its weight files."""
    from cfsrdelta_arch.app.engine import load_option_file
    opt = load_option_file(os.path.join(ROOT, 'options', 'test', f'test_CFSRDelta_NonBlind_x{scale}.yml'))
    return {k: v for k, v in opt['network_g']['refiner'].items() if k not in ('type', 'clean_weights', 'clean_param_key')}


@pytest.mark.parametrize('scale', NONBLIND_SCALES)
def test_shipped_weights_hold_the_shipped_delta_exactly(scale):
    """The non-blind checkpoint's clean path is the shipped BPRefineNet at its scale, to the bit: on
    clean bicubic LR the non-blind delta is today's CFSR-Delta."""
    ours = torch.load(SHIPPED_NONBLIND.format(scale), weights_only=True)
    shipped = torch.load(SHIPPED_DELTA.format(scale), weights_only=True)['params_ema']
    for key in ('params', 'params_ema'):
        for name, tensor in shipped.items():
            torch.testing.assert_close(ours[key]['clean.' + name], tensor, rtol=0, atol=0)
    net = NonBlindRefineNet(**shipped_refiner_options(scale))
    net.load_state_dict(ours['params_ema'])
    reference = BPRefineNet(upscale=scale, width=20, num_convs=3, bp_steps=3)
    reference.load_state_dict(shipped)
    sr, lr = torch.rand(1, 3, 16 * scale, 12 * scale), torch.rand(1, 3, 16, 12)
    with torch.no_grad():
        torch.testing.assert_close(net(sr, lr), reference(sr, lr), rtol=0, atol=0)


@pytest.mark.parametrize('scale', NONBLIND_SCALES)
def test_option_files_give_the_same_sr_on_clean_lr(scale):
    """test_CFSRDelta_NonBlind_x<s>.yml and test_CFSRDelta_BPRefineNet_x<s>.yml on a Set5 image (clean LR)."""
    official_weights(f'CFSR_x{scale}.pth')
    lr_path = require_shared('datasets', 'benchmark', 'Set5', 'LR_bicubic', f'X{scale}', f'babyx{scale}.png')
    lr = cv2.imread(lr_path)[:40, :48]
    names = (f'test_CFSRDelta_NonBlind_x{scale}.yml', f'test_CFSRDelta_BPRefineNet_x{scale}.yml')
    outputs = [SREngine.from_option_file(os.path.join(ROOT, 'options', 'test', name), device='cpu').enhance(
        lr, channel_order='bgr') for name in names]
    assert np.array_equal(outputs[0], outputs[1])


def test_a_growing_training_option_needs_its_trained_weights_for_inference():
    """A training option that grows a smaller refiner (``train.grow_pretrained_refiner``) names that
    refiner's checkpoint as its start: inference from it alone is one actionable line (it used to be a
    shape-mismatch dump), and with the trained weights it builds the shipped network."""
    from cfsrdelta_arch.app.engine import network_from_option_file
    from cfsrdelta_arch.utils.fileio import OptionFileError
    official_weights('CFSR_x4.pth')
    training = os.path.join(ROOT, 'options', 'train', 'train_CFSRDelta_NonBlind_x4_cond.yml')
    with pytest.raises(OptionFileError, match=r'grow_pretrained_refiner.*the smaller refiner this training starts '
                                              r'from, not a trained network.*--weights'):
        network_from_option_file(training)
    trained, _ = network_from_option_file(training, os.path.join(ROOT, 'weights', 'cfsrdelta', 'CFSRDelta_NonBlind_x4.pth'))
    shipped, _ = network_from_option_file(os.path.join(ROOT, 'options', 'test', 'test_CFSRDelta_NonBlind_x4.yml'))
    ours, theirs = trained.state_dict(), shipped.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize('scale,training', [(2, 'train_CFSRDelta_NonBlind_x2_mse.yml'),
                                            (3, 'train_CFSRDelta_NonBlind_x3_mse.yml'),
                                            (4, 'train_CFSRDelta_NonBlind_x4_cond2.yml')])
def test_test_option_builds_the_refiner_its_weights_were_trained_as(scale, training):
    """The shipped test option's refiner equals the training option's that made its weights, up to the
    keys that only matter when training starts (a different pre-filter λ would load without error)."""
    from cfsrdelta_arch.app.engine import load_option_file

    def refiner(kind, name):
        opt = load_option_file(os.path.join(ROOT, 'options', kind, name))['network_g']['refiner']
        return {k: v for k, v in opt.items() if k not in ('alpha_init', 'clean_weights', 'clean_param_key')}

    assert refiner('test', f'test_CFSRDelta_NonBlind_x{scale}.yml') == refiner('train', training)


# (setting, kernel number in the setting's list, σ_n) -> least PSNR-Y gain (dB) over CFSR on the same LR
# (measured means, x2 / x3 / x4: 4.06 / 3.15 / 2.57, 1.08 / 0.91 / 0.75, 1.79 / 2.00 / 2.34)
SHIPPED_NONBLIND_GAINS = {('gaussian8', 4, 0.0): 1.5, ('gaussian8', 4, 7.65): 0.4, ('classical', 3, 7.65): 0.9}


@pytest.mark.parametrize('scale', NONBLIND_SCALES)
@pytest.mark.parametrize('setting,kernel_index,noise', list(SHIPPED_NONBLIND_GAINS))
def test_shipped_nonblind_delta_recovers_what_the_degradation_costs(scale, setting, kernel_index, noise):
    """The shipped non-blind delta, told the degradation, against CFSR alone on the same degraded LR of
    three training images (T91: never a benchmark): a delta that ignored the kernel, the noise level
    or the degradation model, or loaded the wrong weights, would not gain this much."""
    from basicsr.metrics import calculate_psnr

    from cfsrdelta_arch.app.engine import Degradation
    from cfsrdelta_arch.data.degradations import degrade
    official_weights(f'CFSR_x{scale}.pth')
    folder = require_shared('datasets', 'train', 'T91')
    kernel = setting_kernels(setting, scale)[kernel_index].kernel
    options = os.path.join(ROOT, 'options', 'test')
    cfsr = SREngine.from_option_file(os.path.join(options, f'test_CFSR_x{scale}.yml'), device='cpu')
    delta = SREngine.from_option_file(os.path.join(options, f'test_CFSRDelta_NonBlind_x{scale}.yml'), device='cpu',
                                      degradation=Degradation(kernel, noise, setting))
    gains = []
    for name in sorted(os.listdir(folder))[:3]:
        hr = cv2.imread(os.path.join(folder, name))[:96, :96]
        lr = degrade(hr, kernel, scale, setting, noise)
        gains.append(calculate_psnr(delta.enhance(lr, channel_order='bgr'), hr, scale, test_y_channel=True)
                     - calculate_psnr(cfsr.enhance(lr, channel_order='bgr'), hr, scale, test_y_channel=True))
    assert np.mean(gains) > SHIPPED_NONBLIND_GAINS[setting, kernel_index, noise], gains


@pytest.mark.parametrize('model', ['classical', 'gaussian8'])
def test_padding_continues_the_lr_as_its_model_does(model):
    """pad_like_degradation: circular for 'classical', MATLAB-symmetric for 'gaussian8', in any dtype
    and beyond the image size (the pattern repeats)."""
    x = torch.randint(0, 256, (1, 3, 5, 7), dtype=torch.uint8)
    expected = (F.pad(x.float(), (3,) * 4, mode='circular') if model == 'classical'
                else symmetric_pad(x.float(), 3, 3, 3, 3))
    assert torch.equal(pad_like_degradation(x, 3, model), expected.to(torch.uint8))
    mode = 'wrap' if model == 'classical' else 'symmetric'
    far = np.pad(x.numpy(), ((0, 0), (0, 0), (9, 9), (9, 9)), mode=mode)
    assert np.array_equal(pad_like_degradation(x, 9, model).numpy(), far)


def test_tiles_of_a_classical_lr_see_its_circular_border():
    """The non-blind delta on a classical-degraded training image (T91), in 16-pixel tiles: each tile
    gets the LR continued circularly past the image border, as the whole image's FFT steps assume.
    Tiled PSNR then stays near the whole image's (measured 28.994 vs 29.031 dB with the stage-4 weights,
    whose bodies also see the pre-filtered LR, filtered per tile; 28.530 vs 28.529 with stage 3's); tiles
    cut from the image with their own edge wrapped instead gave 27.80 dB (stage 3)."""
    from basicsr.metrics import calculate_psnr

    from cfsrdelta_arch.app.engine import Degradation
    from cfsrdelta_arch.data.degradations import degrade
    official_weights('CFSR_x4.pth')
    folder = require_shared('datasets', 'train', 'T91')
    hr = cv2.imread(os.path.join(folder, sorted(os.listdir(folder))[0]))[:160, :192]
    kernel = setting_kernels('classical', 4)[3].kernel
    lr = degrade(hr, kernel, 4, 'classical', 0.0)
    opt = os.path.join(ROOT, 'options', 'test', 'test_CFSRDelta_NonBlind_x4.yml')
    psnr = {}
    for tile in (None, 16):
        engine = SREngine.from_option_file(opt, device='cpu', degradation=Degradation(kernel, 0.0, 'classical'),
                                           tile_size=tile, tile_overlap=8)
        psnr[tile] = calculate_psnr(engine.enhance(lr, channel_order='bgr'), hr, 4, test_y_channel=True)
    assert psnr[16] > psnr[None] - 0.05, psnr


def test_self_ensemble_transforms_aligned_tensors():
    """A kernel-equivariant function (convolution with the kernel) is unchanged by the x8 ensemble
    only when the kernel follows each flip/transpose."""
    torch.manual_seed(0)
    x, k = torch.rand(1, 1, 9, 11), torch.rand(1, 1, 3, 3)

    def conv(img, kernel):
        return torch.nn.functional.conv2d(img, kernel, padding=1)

    torch.testing.assert_close(self_ensemble(conv, x, k), conv(x, k))
    assert (self_ensemble(lambda img: conv(img, k), x) - conv(x, k)).abs().max() > 1e-3


def test_onthefly_dataset_draws_the_degradation_model_per_sample(tmp_path):
    folder = tmp_path / 'HR'
    for i in range(2):
        write_png(str(folder / f'{i}.png'), smooth_image(40, 44, seed=i))
    opt = {'name': 'otf', 'scale': 2, 'gt_size': 32, 'io_backend': {'type': 'disk'}, 'dataroot_gt': str(folder),
           'degradation': ['gaussian8', 'classical'], 'noise_range': [0, 0], 'kernel_size': 15, 'repeat': 8,
           'motion_length_range': [3, 10]}
    first, second = DegradedOnTheFlyDataset(opt), DegradedOnTheFlyDataset(opt)
    models = []
    for index in range(len(first)):
        a, b = first[index], second[index]
        assert a['degradation'] == b['degradation'] and torch.equal(a['lq'], b['lq'])
        models.append(a['degradation'])
        hr = a['gt'].numpy().transpose(1, 2, 0)[..., ::-1].astype(np.float64)  # BGR, as degraded
        lr = blur_downsample(hr, a['kernel'].numpy().astype(np.float64), 2, a['degradation'])
        expected = np.clip(np.floor(lr * 255 + 0.5), 0, 255)[..., ::-1].transpose(2, 0, 1) / 255
        assert np.abs(a['lq'].numpy() - expected).max() < 1.5 / 255  # float32 HR/kernel: rare 1-level flips
    assert set(models) == {'gaussian8', 'classical'}
    with pytest.raises(DatasetError, match='degradation'):
        DegradedOnTheFlyDataset(dict(opt, degradation=['gaussian8', 'bicubic']))


def test_degradation_inputs_name_what_is_missing():
    data = {'kernel': torch.ones(2, 3, 3), 'noise_sigma': torch.tensor([0.0, 25.5]), 'degradation': ['a', 'b']}
    inputs = degradation_inputs(data, 'cpu')
    torch.testing.assert_close(inputs['sigma'].view(-1), torch.tensor([0.0, 0.1]))
    with pytest.raises(DatasetError, match='needs the degradation with every LR'):
        degradation_inputs({k: v for k, v in data.items() if k != 'degradation'}, 'cpu')


def test_commit_of_a_table_part_ignores_the_tables_own_outputs(tmp_path):
    """A part written into docs/*.csv while later parts run does not mark them '+dirty'; code changes do."""
    import subprocess
    git = ['git', '-C', str(tmp_path), '-c', 'user.name=t', '-c', 'user.email=t@t']
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'rows.csv').write_text('a\n')
    (tmp_path / 'code.py').write_text('x = 1\n')
    subprocess.run(git + ['init', '-q'], check=True)
    subprocess.run(git + ['add', '.'], check=True)
    subprocess.run(git + ['commit', '-qm', 'c'], check=True)
    clean = current_commit(str(tmp_path))
    (tmp_path / 'docs' / 'rows.csv').write_text('a\nb\n')
    assert current_commit(str(tmp_path)) == clean and not clean.endswith('+dirty')
    (tmp_path / 'code.py').write_text('x = 2\n')
    assert current_commit(str(tmp_path)) == clean + '+dirty'


def test_robustness_refuses_x8_on_classical_lr(tmp_path):
    case = Case('Set5', 'classical', 'k1', 0.0, str(tmp_path), str(tmp_path), '{}', None)
    with pytest.raises(ValueError, match='clean and gaussian8 LR only'):
        run([case], ['cfsr_nonblind_x8'], {}, 4, str(tmp_path / 'rows.csv'), 'cmd', 'abc')


def test_robustness_csv_parts_merge_and_summarise(tmp_path):
    path = str(tmp_path / 'table.csv')

    def row(kernel, method, psnr, noise='0.00'):
        return dict(set='Set5', setting='gaussian8', kernel=kernel, noise=noise, method=method, psnr=psnr,
                    ssim='0.5', images=5, commit='abc', command='x')

    merge_rows(path, [row('g1.80', 'cfsr', '20.0'), row('g2.00', 'cfsr', '22.0')])
    merge_rows(path, [row('g1.80', 'cfsr', '21.0'), row('g1.80', 'cfsr_nonblind', '30.0')])  # replaces one row
    rows = read_rows(path)
    assert len(rows) == 3
    table = format_summary(rows, ['Set5'])
    assert table.splitlines()[0] == '| set | LR | CFSR | CFSR + NonBlindRefineNet |'
    assert table.splitlines()[2] == '| Set5 | gaussian8 σ_n 0 | 21.50 | 30.00 (1/2) |'  # one of the two kernels


def test_nonblind_delta_trains_and_tests_through_basicsr(tmp_path, exp_name, backbone_path):  # noqa: F811
    """Two iterations of NonBlindDeltaModel on DegradedOnTheFlyDataset: only the learned stages move
    (backbone and clean path stay bit-exact in the EMA too); test.py's PSNR equals the network here."""
    hr, lq, val = degraded_val_folder(tmp_path, 'gaussian8', 'g1.14_n2.55')
    clean_path = tmp_path / 'clean.pth'
    torch.manual_seed(1)
    torch.save({'params': BPRefineNet(**{k: v for k, v in TINY_CLEAN.items() if k != 'type'}).state_dict()},
               clean_path)
    refiner = {'type': 'NonBlindRefineNet', 'upscale': 2, 'width': 4, 'num_convs': 2, 'pad': 4,
               'clean_refiner': TINY_CLEAN, 'clean_weights': str(clean_path), 'clean_param_key': 'params'}
    network = {'type': 'BackboneDelta', 'backbone_weights': backbone_path, 'backbone': TINY_CFSR, 'refiner': refiner}
    train = degraded_training_options(exp_name, 'NonBlindDeltaModel', hr, val, network,
                                      {'kernel_size': 15, 'degradation': ['gaussian8', 'classical'],
                                       'motion_length_range': [3, 10]}, ema_decay=0.9, lr=1e-2)
    run_entries(('train.py', train, tmp_path / 'train.yml'))
    weights = os.path.join(ROOT, 'experiments', exp_name, 'models', 'net_g_2.pth')
    saved = torch.load(weights, weights_only=True)
    clean = torch.load(clean_path, weights_only=True)['params']
    init = NonBlindRefineNet(**{k: v for k, v in refiner.items() if k != 'type'}).state_dict()
    for key in ('params', 'params_ema'):
        assert not any(k.startswith('backbone.') for k in saved[key])  # the refiner only
        for name, tensor in clean.items():
            torch.testing.assert_close(saved[key]['clean.' + name], tensor, rtol=0, atol=0)
        assert not torch.equal(saved[key]['log_alpha'], init['log_alpha'])
    logged = psnr_logged_by_test_run(tmp_path, exp_name, 'NonBlindDeltaModel', val,
                         dict(network, refiner=dict(refiner, clean_weights=None)),
                         {'pretrain_network_g': weights, 'param_key_g': 'params_ema'})

    from basicsr.metrics import calculate_psnr
    from basicsr.utils import img2tensor, tensor2img
    from cfsrdelta_arch.archs.backbone_delta_arch import BackboneDelta
    net = BackboneDelta(TINY_CFSR, dict(refiner, clean_weights=None), backbone_weights=backbone_path).eval()
    net.refiner.load_state_dict(saved['params_ema'])
    kernel = torch.from_numpy(np.load(os.path.join(lq, 'kernel.npy'))).float()[None]
    values = []
    for name in sorted(os.listdir(hr)):
        x = img2tensor(cv2.imread(os.path.join(lq, name)).astype(np.float32) / 255, bgr2rgb=True)[None]
        with torch.no_grad():
            sr = net(x, kernel=kernel, sigma=2.55 / 255, degradation='gaussian8')
        values.append(calculate_psnr(tensor2img(sr), cv2.imread(str(hr / name)), crop_border=2, test_y_channel=True))
    assert logged == pytest.approx(np.mean(values), abs=1e-4)


def test_fixed_refiner_params_stay_as_loaded(tmp_path, exp_name, backbone_path):  # noqa: F811
    """``train.fixed_refiner_params: [log_alpha, noise_gain]``: two iterations move the bodies (in the
    weights and, lagging, in the EMA) while the data weights stay bit-exact in both."""
    hr, _, val = degraded_val_folder(tmp_path, 'gaussian8', 'g1.14_n2.55')
    refiner = {'type': 'NonBlindRefineNet', 'upscale': 2, 'width': 4, 'num_convs': 2, 'pad': 4,
               'clean_refiner': TINY_CLEAN}
    network = {'type': 'BackboneDelta', 'backbone_weights': backbone_path, 'backbone': TINY_CFSR, 'refiner': refiner}
    train = degraded_training_options(exp_name, 'NonBlindDeltaModel', hr, val, network,
                                      {'kernel_size': 15, 'motion_length_range': [3, 10], 'noise_range': [1, 10]},
                                      ema_decay=0.9, lr=1e-2)
    train['train']['fixed_refiner_params'] = ['log_alpha', 'noise_gain']
    run_entries(('train.py', train, tmp_path / 'train.yml'))
    saved = torch.load(os.path.join(ROOT, 'experiments', exp_name, 'models', 'net_g_2.pth'), weights_only=True)
    init = NonBlindRefineNet(**{k: v for k, v in refiner.items() if k != 'type'}).state_dict()
    for key in ('params', 'params_ema'):
        for name in ('log_alpha', 'noise_gain'):
            torch.testing.assert_close(saved[key][name], init[name], rtol=0, atol=0)
    assert not torch.equal(saved['params']['bodies.0.0.weight'], saved['params_ema']['bodies.0.0.weight'])


def test_grown_refiner_starts_as_the_checkpoint(tmp_path, exp_name, backbone_path):  # noqa: F811
    """``train.grow_pretrained_refiner``: a width-4 refiner's weights grown into a width-6 one that also sees
    the pre-filtered LR and the degradation code. Two iterations at learning rate 0 through train.py leave
    the grown weights: the checkpoint's block, zero new input columns, fresh (non-zero) new rows, which the
    EMA copy shares while its block comes from the checkpoint's EMA; they give the small network's output on noisy and
    noise-free LR of both models (what is new starts with no effect), and the bodies are fed what the
    option says. A checkpoint of another structure, or one that would grow a frozen tensor, is refused."""
    hr, _, val = degraded_val_folder(tmp_path, 'gaussian8', 'g1.14_n2.55')
    small_opt = {'upscale': 2, 'width': 4, 'num_convs': 2, 'pad': 4, 'clean_refiner': TINY_CLEAN,
                 'prefilter_lambda': {'gaussian8': 3e-4, 'classical': 1e-2}}
    torch.manual_seed(1)
    small = NonBlindRefineNet(**small_opt)
    with torch.no_grad():  # bodies whose output matters
        for param in small.bodies.parameters():
            param.normal_(0, 0.2)
    checkpoint = tmp_path / 'small.pth'
    averaged = {name: value + 0.05 if name.startswith('bodies.') else value for name, value in small.state_dict().items()}
    torch.save({'params': small.state_dict(), 'params_ema': averaged}, checkpoint)  # the EMA loads its own key
    refiner = dict(small_opt, type='NonBlindRefineNet', width=6, conditioned_bodies=True)
    network = {'type': 'BackboneDelta', 'backbone_weights': backbone_path, 'backbone': TINY_CFSR, 'refiner': refiner}
    train = degraded_training_options(exp_name, 'NonBlindDeltaModel', hr, val, network,
                                      {'kernel_size': 15, 'motion_length_range': [3, 10]}, ema_decay=0.9, lr=0.0)
    train['path'].update(pretrain_network_g=str(checkpoint), param_key_g='params')
    train['train']['grow_pretrained_refiner'] = True
    run_entries(('train.py', train, tmp_path / 'train.yml'))
    saved = torch.load(os.path.join(ROOT, 'experiments', exp_name, 'models', 'net_g_2.pth'), weights_only=True)
    first, first_ema = saved['params']['bodies.0.0.weight'], saved['params_ema']['bodies.0.0.weight']  # (6, 23, 3, 3)
    torch.testing.assert_close(first[:4, :16], small.state_dict()['bodies.0.0.weight'], rtol=0, atol=0)
    assert first[:, 16:].abs().max() == 0 and first[4:, :16].abs().min() > 0
    # the EMA: its own checkpoint values (moved towards net_g by 2 updates), net_g's draw for the new rows
    assert (first_ema[:4, :16] - first[:4, :16]).abs().min() > 0.03
    torch.testing.assert_close(first_ema[4:], first[4:], rtol=0, atol=1e-6)
    grown = NonBlindRefineNet(**{k: v for k, v in refiner.items() if k != 'type'})
    grown.load_state_dict(saved['params'])
    generator = torch.Generator().manual_seed(2)
    sr, lr = torch.rand(4, 3, 24, 24, generator=generator), torch.rand(4, 3, 12, 12, generator=generator)
    kernel = torch.rand(4, 7, 7, generator=generator)
    given = dict(kernel=kernel / kernel.sum((-2, -1), keepdim=True), sigma=torch.tensor([0.03, 0.0, 0.02, 0.0]),
                 degradation=['gaussian8', 'gaussian8', 'classical', 'classical'])
    body_inputs = []
    grown.bodies[0][0].register_forward_hook(lambda module, args, out: body_inputs.append(args[0]))
    with torch.no_grad():
        expected, result = small(sr, lr, **given), grown(sr, lr, **given)
        prefiltered = grown.backbone_input(lr, **given)
    assert (expected - sr).abs().mean() > 1e-2  # the bodies and data steps do change the SR
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)
    pad = small_opt['pad']
    torch.testing.assert_close(body_inputs[0][:, -7:-4, pad:-pad, pad:-pad], prefiltered, rtol=0, atol=1e-6)
    code = degradation_code(given['kernel'].unsqueeze(1), 2, given['degradation'])
    torch.testing.assert_close(body_inputs[0][:, -4:], code.expand(-1, -1, 12 + 2 * pad, 12 + 2 * pad))
    trainable = {name for name, p in grown.named_parameters() if p.requires_grad}
    one_stage = NonBlindRefineNet(**dict(small_opt, stages=1)).state_dict()
    for target, state, growable, message in (
            (small.state_dict(), grown.state_dict(), trainable, r"'bodies.0.0.weight' of shape \(6, 23, 3, 3\) does not grow"),
            (grown.state_dict(), small.state_dict(), trainable - {'bodies.0.0.weight'}, r'\(4, 16, 3, 3\) does not grow'),
            (grown.state_dict(), dict(small.state_dict(), extra=torch.zeros(1)), trainable, 'the network has no extra'),
            (grown.state_dict(), one_stage, trainable, 'it lacks bodies.1.0.bias')):
        with pytest.raises(CheckpointError, match=message):
            embed_state_dict(target, state, growable)


def test_degradation_code_gives_the_model_and_the_kernel_covariance():
    """An isotropic Gaussian of width σ: c_xx = c_yy = σ² / s², c_xy = 0; an axis-aligned anisotropic one
    (σx 3, σy 1) gives c_xx = 9/s², c_yy = 1/s², swapped by a transpose; a sheared kernel's c_xy changes sign
    when it is flipped left-right (as the self-ensemble flips it with the LR); an off-centre kernel has the
    same moments (they are about its own centre); the first channel is the model."""
    from basicsr.data.degradations import bivariate_Gaussian
    iso = torch.from_numpy(bivariate_Gaussian(21, 2.0, 2.0, 0, isotropic=True)).view(1, 1, 21, 21)
    wide = torch.from_numpy(bivariate_Gaussian(21, 3.0, 1.0, 0, isotropic=False)).view(1, 1, 21, 21)
    sheared = torch.from_numpy(bivariate_Gaussian(21, 3.0, 1.0, np.pi / 4, isotropic=False)).view(1, 1, 21, 21)
    shifted = F.pad(iso[..., 2:, :], (0, 0, 0, 2))  # centre 2 rows up (the cut rows hold ~1e-4 of the mass)
    kernels = torch.cat((iso, wide, wide.transpose(-2, -1), sheared, sheared.flip(-1), shifted))
    code = degradation_code(kernels, 4, ['classical'] + ['gaussian8'] * 5).flatten(1)
    expected = torch.tensor([[1, 4, 4, 0], [0, 9, 1, 0], [0, 1, 9, 0]], dtype=code.dtype) / torch.tensor([1, 16, 16, 16])
    torch.testing.assert_close(code[:3], expected.to(code.dtype), atol=1e-2, rtol=0)  # σ 3 is cut at 3.3σ
    assert code[3, 3] > 0.2
    torch.testing.assert_close(code[4], code[3] * torch.tensor([1, 1, 1, -1], dtype=code.dtype), atol=1e-12, rtol=0)
    torch.testing.assert_close(code[5, 1:], code[0, 1:], atol=1e-4, rtol=0)  # about its centre: c_yy would be +4/16


def test_kernel_files_in_every_format(tmp_path):
    from scipy.io import savemat
    from cfsrdelta_arch.data.degradations import KERNELS_FILE, gaussian_kernel, load_kernel
    kernel = gaussian_kernel(1.5)
    np.save(tmp_path / 'k.npy', kernel * 3)
    savemat(tmp_path / 'k.mat', {'kernel': kernel})
    png = np.round(kernel / kernel.max() * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / 'k.png'), png)
    np.testing.assert_allclose(load_kernel(str(tmp_path / 'k.npy')), kernel, atol=1e-15)
    np.testing.assert_allclose(load_kernel(str(tmp_path / 'k.mat')), kernel, atol=1e-15)
    np.testing.assert_allclose(load_kernel(str(tmp_path / 'k.png')), png / png.sum(), atol=1e-15)
    np.testing.assert_allclose(load_kernel(KERNELS_FILE), setting_kernels('classical', 4)[0].kernel, atol=1e-7)
    savemat(tmp_path / 'scalar_first.mat', {'a_scale': 4, 'kernel': kernel})  # a 1 x 1 beside the kernel
    np.testing.assert_allclose(load_kernel(str(tmp_path / 'scalar_first.mat')), kernel, atol=1e-15)
    np.save(tmp_path / 'even.npy', np.ones((4, 4)))
    np.save(tmp_path / 'overflow.npy', np.full((3, 3), 1e308))  # finite weights, infinite sum
    np.save(tmp_path / 'complex.npy', kernel.astype(complex))
    (tmp_path / 'empty.npy').write_bytes(b'')
    savemat(tmp_path / 'empty_cell.mat', {'kernels': np.empty((1, 0), dtype=object)})
    (tmp_path / 'truncated.mat').write_bytes(b'MATLAB 5.0')
    for name, message in (('even.npy', 'odd size'), ('none.npy', 'does not exist'), ('overflow.npy', 'finite sum'),
                          ('complex.npy', 'real numbers'), ('empty.npy', 'kernel file'),
                          ('empty_cell.mat', 'no 2-D numeric'), ('truncated.mat', 'kernel file')):
        with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
            load_kernel(str(tmp_path / name))
        assert '\n' not in str(info.value) and str(tmp_path / name) in str(info.value)


def test_user_kernels_and_noise_levels_are_checked():
    """What a user hands the non-blind networks (API, CLI) is checked once: a kernel of any positive total is
    scaled to sum 1, a malformed one is a one-line ValueError instead of a black or white image."""
    from basicsr.data.degradations import bivariate_Gaussian
    from cfsrdelta_arch.data.degradations import check_noise_sigma, checked_kernel, gaussian_kernel
    kernel = gaussian_kernel(1.5)
    assert np.array_equal(kernel, bivariate_Gaussian(11, 1.5, 1.5, 0, isotropic=True))  # kept as BasicSR made it
    shipped = setting_kernels('classical', 4)[0].kernel  # float32-stored: kept, not renormalised
    assert np.array_equal(checked_kernel(shipped, 'k'), shipped)
    np.testing.assert_allclose(checked_kernel(kernel * 10, 'k'), kernel, atol=1e-15)
    np.testing.assert_allclose(checked_kernel(np.round(kernel * 2000).astype(np.uint8), 'k').sum(), 1.0)
    np.testing.assert_allclose(checked_kernel(np.ones((3, 3), bool), 'k'), np.full((3, 3), 1 / 9))
    for tensor in (torch.tensor(kernel, requires_grad=True), torch.tensor(kernel).bfloat16()):
        np.testing.assert_allclose(checked_kernel(tensor, 'k'), kernel, atol=1e-2)
    bad = {'NaN': np.full((3, 3), np.nan), 'inf': np.full((3, 3), np.inf), 'negative': -kernel,
           'zero': np.zeros((3, 3)), '3-D': np.ones((3, 3, 3)), 'even': np.ones((2, 2)), 'text': np.array([['a']])}
    for case, value in bad.items():
        with pytest.raises(ValueError, match='^k: '):
            checked_kernel(value, 'k')
    for sigma in (0, -1, float('nan'), float('inf'), 1e6, 1e-160):  # 1e-160: σ² underflows, 0/0 at the centre
        with pytest.raises(ValueError, match='Gaussian blur width'):
            gaussian_kernel(sigma)
    assert check_noise_sigma(7.65) == 7.65 and check_noise_sigma(np.float32(0)) == 0.0
    assert check_noise_sigma(torch.tensor(7.65, dtype=torch.float64)) == 7.65 and check_noise_sigma(np.array(5)) == 5.0
    for sigma in (-1, float('nan'), float('inf'), 1e4, np.ones(2), torch.ones(2), True, '7.65'):
        with pytest.raises(ValueError, match='noise level'):
            check_noise_sigma(sigma)
    with pytest.raises(ValueError, match='larger than the 8x8 HR image'):
        p2o(torch.ones(1, 1, 9, 9), (8, 8))


def test_cli_takes_the_degradation(tmp_path, capsys):
    """cfsrdelta-infer with --blur-sigma/--noise equals the engine told the same; a blind network
    refuses a kernel and USRNet refuses to run without one, each in one line."""
    from cfsrdelta_arch.app.cli import main
    from cfsrdelta_arch.app.engine import Degradation
    from cfsrdelta_arch.data.degradations import gaussian_kernel
    official_weights('CFSR_x4.pth')
    opt = os.path.join(ROOT, 'options', 'test', 'test_CFSRDelta_NonBlind_x4.yml')
    lr = smooth_image(20, 24, seed=5)
    write_png(str(tmp_path / 'in' / 'a.png'), lr)
    assert main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--opt', opt, '--device', 'cpu',
                 '--blur-sigma', '2.2', '--noise', '2.55']) == 0
    written = cv2.imread(str(tmp_path / 'out' / 'a.png'))
    engine = SREngine.from_option_file(opt, device='cpu', degradation=Degradation(gaussian_kernel(2.2), 2.55))
    assert np.array_equal(written, engine.enhance(cv2.imread(str(tmp_path / 'in' / 'a.png')), channel_order='bgr'))
    clean = SREngine.from_option_file(opt, device='cpu').enhance(lr, channel_order='bgr')
    assert np.abs(clean.astype(int) - written).max() > 10  # the kernel changed the output
    capsys.readouterr()
    assert main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'o2'), '--arch', 'CFSR', '--scale', '4',
                 '--weights', official_weights('CFSR_x4.pth'), '--blur-sigma', '2']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'blind network' in err[0]
    usrnet = os.path.join(ROOT, 'options', 'test', 'test_USRNet_tiny_x4.yml')
    with pytest.raises(ValueError, match='USRNet needs the degradation'):
        SREngine.from_option_file(usrnet, device='cpu')
    out = SREngine.from_option_file(usrnet, device='cpu', degradation=Degradation(gaussian_kernel(2.2), 0.0)).enhance(
        lr, channel_order='bgr')
    assert out.shape == (80, 96, 3)
    # the engine scales a kernel to sum 1 and refuses what it cannot use, in one line
    scaled = SREngine.from_option_file(opt, device='cpu', degradation=Degradation(gaussian_kernel(2.2) * 10, 2.55))
    assert np.array_equal(scaled.enhance(lr, channel_order='bgr'), engine.enhance(lr, channel_order='bgr'))
    for degradation, message in ((Degradation(np.full((5, 5), np.nan)), 'Degradation.kernel'),
                                 (Degradation(None, float('inf')), 'noise level'),
                                 ((gaussian_kernel(2.2), 0.0, 'gaussian8'), 'must be a cfsrdelta_arch.Degradation')):
        with pytest.raises(ValueError, match=message):
            SREngine.from_option_file(opt, device='cpu', degradation=degradation)
    with pytest.raises(ValueError, match='is larger than the'):  # a kernel wider than the (padded) image
        engine_wide = SREngine.from_option_file(opt, device='cpu', degradation=Degradation(np.ones((201, 201))))
        engine_wide.enhance(lr, channel_order='bgr')
    for image, message in ((lr / 1.0, 'must be in \\[0, 1\\]'), (np.full((8, 8, 3), np.nan), 'NaN'),
                           (np.zeros((0, 0, 3), np.uint8), 'empty'), (torch.full((1, 3, 8, 8), np.nan), 'NaN'),
                           (torch.rand(0, 3, 8, 8), 'empty')):
        with pytest.raises(ValueError, match=message):
            engine.enhance(image, channel_order='bgr')
    assert engine.enhance(np.full((20, 24, 3), 1.05), channel_order='bgr').max() <= 1  # overshoot is tolerated
    for flag, value, message in (('--noise', 'inf', 'noise level'), ('--noise', '-1', 'noise level'),
                                 ('--blur-sigma', '1e-160', 'Gaussian blur width'),
                                 ('--blur-sigma', '50', 'Gaussian blur width')):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:  # argparse's status for a bad argument, before any work
            main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'o3'), '--opt', opt, flag, value])
        assert info.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(f'cfsrdelta-infer: error: {flag}: ') and message in last, last


def test_option_sweep_scores_each_value_of_one_option(tmp_path, backbone_path, capsys):  # noqa: F811
    """scripts/sweep_option.py's table (how the pre-filter's λs were chosen): each row is the network
    built with that value, scored like the robustness table; the backbone alone is the reference row."""
    import yaml
    from basicsr.metrics import calculate_psnr

    from cfsrdelta_arch.app.option_sweep import load_variants, parse_value, sweep
    from cfsrdelta_arch.data.degradations import read_degradation
    from cfsrdelta_arch.data.lr_generation import mod_crop, read_image_color
    from cfsrdelta_arch.utils.fileio import OptionFileError
    from cfsrdelta_arch.utils.image_io import image_to_tensor, tensor_to_image
    hr, lq, _ = degraded_val_folder(tmp_path, 'gaussian8', 'g1.14_n2.55')
    refiner = {'type': 'NonBlindRefineNet', 'upscale': 2, 'width': 4, 'num_convs': 2, 'pad': 4,
               'clean_refiner': TINY_CLEAN, 'prefilter_lambda': 1e-3}
    network = {'type': 'BackboneDelta', 'backbone_weights': backbone_path, 'backbone': TINY_CFSR, 'refiner': refiner}
    opt = tmp_path / 'sweep.yml'
    opt.write_text(yaml.safe_dump({'scale': 2, 'network_g': network}))
    assert parse_value('3e-3') == 3e-3 and parse_value('{gaussian8: 1e-3, classical: 2}') == {
        'gaussian8': 1e-3, 'classical': 2.0}
    values = ['0', '{gaussian8: 30.0, classical: 0}']
    scale, variants = load_variants(str(opt), 'refiner.prefilter_noise_lambda', values, untrained=True)
    header, rows = sweep(variants, scale, str(hr), str(tmp_path / 'deg'), ['gaussian8'], kernels=['g1.14'])
    assert header == ['variant', 'gaussian8 g1.14 n2.55', 'mean'] and len(rows) == 3

    kernel, record = read_degradation(lq)
    kwargs = dict(kernel=torch.from_numpy(kernel).float()[None], sigma=float(record['noise_sigma']) / 255)
    for row, growth in zip(rows, (None, 0.0, {'gaussian8': 30.0, 'classical': 0.0})):
        torch.manual_seed(0)  # the untrained variants' initialisation
        net = BackboneDelta(TINY_CFSR, dict(refiner, prefilter_noise_lambda=growth or 0.0),
                            backbone_weights=backbone_path).eval()
        psnr = []
        for name in sorted(os.listdir(hr)):
            lr = image_to_tensor(read_image_color(os.path.join(lq, name)), bgr=True)
            with torch.no_grad():
                sr = net.forward_backbone(lr) if growth is None else net(lr, **kwargs)
            psnr.append(calculate_psnr(tensor_to_image(sr, bgr=True), mod_crop(read_image_color(
                os.path.join(hr, name)), 2), 2, test_y_channel=True))
        assert float(row[-1]) == pytest.approx(np.mean(psnr), abs=6e-4), row
    assert abs(float(rows[1][-1]) - float(rows[2][-1])) > 0.01  # the value reached the network
    for key, values, message in (('refiner.prefilter_noise_lamda', ['1'], "unknown option 'prefilter_noise_lamda'; "
                                  "did you mean 'prefilter_noise_lambda'"),
                                 ('backbone.embed_dim', ['4'], "only the refiner's options are swept"),
                                 ('refiner.prefilter_lambda', ['1e-3', '1e-3'], 'a value is repeated'),
                                 ('refiner.prefilter_lambda', ['nan'], 'nan is not a finite number'),
                                 ('refiner.pad.x', ['1'], 'network_g.refiner.pad is not a section')):
        with pytest.raises(OptionFileError, match=message):
            load_variants(str(opt), key, values, untrained=True)
    blind = tmp_path / 'blind.yml'
    blind.write_text(yaml.safe_dump({'scale': 2, 'network_g': dict(network, refiner=TINY_CLEAN)}))
    with pytest.raises(OptionFileError, match='needs a BackboneDelta with a NonBlindRefineNet refiner'):
        load_variants(str(blind), 'refiner.bp_steps', ['2'], untrained=True)
    sweep_script = load_script('sweep_option').main
    common = ['--opt', str(opt), '--untrained', '--hr', str(hr)]
    for args, message in ((['--key', 'refiner.pad', '--values', '{a: [1'], 'is not YAML'),
                          (['--key', 'refiner.pad', '--values', '4', '--degraded', str(tmp_path / 'none')],
                           'no degraded x2 folders'),
                          (['--key', 'refiner.pad', '--values', '4', '--degraded', str(tmp_path / 'deg'),
                            '--opt', str(tmp_path / 'missing.yml')], 'missing.yml: cannot read')):
        capsys.readouterr()
        assert sweep_script(common + args) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], lines


def test_weight_paths_of_a_nonblind_option_resolve_from_any_directory(tmp_path, monkeypatch):
    """The backbone's and the refiner's frozen clean-path checkpoints of an option file are found
    beside the file's project when the command runs elsewhere (as the sweep and the engine read them)."""
    from cfsrdelta_arch.app.engine import load_option_file, resolved_network_options
    path = os.path.join(ROOT, 'options', 'train', 'train_CFSRDelta_NonBlind_x3.yml')
    monkeypatch.chdir(tmp_path)
    network = resolved_network_options(load_option_file(path), path)
    assert network['backbone_weights'] == os.path.join(ROOT, 'weights', 'official', 'CFSR_x3.pth')
    assert network['refiner']['clean_weights'] == os.path.join(ROOT, 'weights', 'cfsrdelta',
                                                               'CFSRDelta_BPRefineNet_x3.pth')


def test_engine_self_ensemble_flips_the_kernel_with_the_image():
    """SREngine's x8 self-ensemble on 'gaussian8' LR (flip-symmetric: the bicubic samples block centres)
    hands each flipped tile the kernel flipped the same way, as the robustness table's x8 row does; on
    'classical' LR it is refused in one line, also when switched on after construction. Tiles too small
    for the refiner's FFT padding are refused naming the tile options, except on clean LR (the shipped
    delta, which does not pad)."""
    from cfsrdelta_arch.app.engine import Degradation
    official_weights('CFSR_x4.pth')
    opt = os.path.join(ROOT, 'options', 'test', 'test_CFSRDelta_NonBlind_x4.yml')
    motion = setting_kernels('classical', 4)[8].kernel  # k9: a motion blur, not symmetric under flips
    engine = SREngine.from_option_file(opt, device='cpu', self_ensemble=True,
                                       degradation=Degradation(motion, 7.65, 'gaussian8'))
    lr = torch.from_numpy(smooth_image(18, 22, seed=2)).permute(2, 0, 1)[None].float() / 255
    kernel = torch.from_numpy(engine.degradation.kernel).float()
    with torch.inference_mode():
        def run(x, k):
            return engine.net(x, kernel=k[None], sigma=7.65 / 255, degradation='gaussian8')
        flipped = self_ensemble(run, lr, kernel).clamp(0, 1)
        fixed = self_ensemble(lambda x: run(x, kernel), lr).clamp(0, 1)
    out = engine.sr_tensor(lr)
    torch.testing.assert_close(out, flipped, atol=1e-5, rtol=0)
    assert (out - fixed).abs().max() > 1e-3
    with pytest.raises(ValueError, match="not supported on 'classical' LR"):
        SREngine.from_option_file(opt, device='cpu', self_ensemble=True, degradation=Degradation(motion, 0, 'classical'))
    classical = SREngine.from_option_file(opt, device='cpu', degradation=Degradation(motion, 0, 'classical'))
    classical.self_ensemble = True
    with pytest.raises(ValueError, match="not supported on 'classical' LR"):
        classical.sr_tensor(lr)
    engine.self_ensemble, engine.tile_size, engine.tile_overlap = False, 4, 2  # 8-pixel windows, padded by 8
    with pytest.raises(ValueError, match=r'tile_size \(--tile\) 4 with tile_overlap \(--tile-overlap\) 2'):
        engine.sr_tensor(lr)
    engine.tile_overlap = 3
    assert engine.sr_tensor(lr).shape == (1, 3, 72, 88)
    clean = SREngine.from_option_file(opt, device='cpu', tile_size=4, tile_overlap=2,  # as --noise 0 gives
                                      degradation=Degradation(None, 0.0, 'gaussian8'))
    assert clean.sr_tensor(lr).shape == (1, 3, 72, 88)  # the shipped delta does not pad: small tiles are fine


def test_nonblind_delta_self_ensemble_through_basicsr(tmp_path, exp_name, backbone_path):  # noqa: F811
    """test.py with ``val.self_ensemble`` on a 'gaussian8' folder: NonBlindDeltaModel flips the folder's
    kernel with each variant of the LR (a motion kernel, so that a kernel left unflipped would score
    otherwise); on 'classical' LR the x8 ensemble and, for any non-blind model, tiles stop in one line."""
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import img2tensor, tensor2img
    from cfsrdelta_arch.archs.backbone_delta_arch import BackboneDelta
    from cfsrdelta_arch.models.degradation_inputs import ensembled, refuse_tiles
    from cfsrdelta_arch.utils.fileio import OptionFileError
    from test_usrnet import METRICS
    hr, lq, val = degraded_val_folder(tmp_path, 'gaussian8', 'g1.14_n2.55')
    np.save(os.path.join(lq, 'kernel.npy'), setting_kernels('classical', 2)[8].kernel)  # k9, not flip-symmetric
    refiner = {'type': 'NonBlindRefineNet', 'upscale': 2, 'width': 4, 'num_convs': 2, 'pad': 4, 'init_std': 0.05,
               'clean_refiner': TINY_CLEAN}
    torch.manual_seed(3)
    net = BackboneDelta(TINY_CFSR, refiner, backbone_weights=backbone_path).eval()
    weights = tmp_path / 'refiner.pth'
    torch.save({'params': net.refiner.state_dict()}, weights)
    test = {'name': exp_name + '_x8', 'model_type': 'NonBlindDeltaModel', 'scale': 2, 'num_gpu': 0,
            'datasets': {'test_1': val},
            'network_g': {'type': 'BackboneDelta', 'backbone_weights': backbone_path, 'backbone': TINY_CFSR,
                          'refiner': refiner},
            'path': {'pretrain_network_g': str(weights), 'strict_load_g': True},
            'val': {'save_img': False, 'self_ensemble': True, 'metrics': METRICS}}
    run_entries(('test.py', test, tmp_path / 'test.yml'))
    with open(os.path.join(ROOT, 'results', exp_name + '_x8', 'results.md')) as f:
        logged = float(f.read().splitlines()[-1].split('|')[2])
    kernel = torch.from_numpy(np.load(os.path.join(lq, 'kernel.npy'))).float()[None]
    psnr = {True: [], False: []}
    for name in sorted(os.listdir(hr)):
        x = img2tensor(cv2.imread(os.path.join(lq, name)).astype(np.float32) / 255, bgr2rgb=True)[None]
        gt = cv2.imread(str(hr / name))
        with torch.no_grad():
            def run_net(t, k):
                return net(t, kernel=k, sigma=2.55 / 255, degradation='gaussian8')
            for flipped, sr in ((True, self_ensemble(run_net, x, kernel)),
                                (False, self_ensemble(lambda t: run_net(t, kernel), x))):
                psnr[flipped].append(calculate_psnr(tensor2img(sr), gt, crop_border=2, test_y_channel=True))
    assert logged == pytest.approx(np.mean(psnr[True]), abs=1e-4)
    assert abs(np.mean(psnr[True]) - np.mean(psnr[False])) > 1e-3, psnr
    with pytest.raises(OptionFileError, match="val.self_ensemble: self-ensemble is not supported on 'classical' LR"):
        ensembled(lambda t, k: t, torch.zeros(1, 3, 4, 4), kernel, ['classical'], {'val': {'self_ensemble': True}})
    with pytest.raises(OptionFileError, match='val.tile: USRNetModel runs whole images only'):
        refuse_tiles({'val': {'tile': {'size': 16}}}, 'USRNetModel')
