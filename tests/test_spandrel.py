"""spandrel support: the official CFSR/LESRCNN files and whole CFSR-Delta exports load with
``spandrel.ModelLoader`` after ``cfsrdelta_arch.register_spandrel()``, with sizes read from the
tensors, and give the plugin's output bit for bit, also in a Python where BasicSR cannot be imported."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY_CFSR, official_weights, write_tiny_model

import cfsrdelta_arch
from cfsrdelta_arch.app.engine import SREngine
from cfsrdelta_arch.app.export import export_pth

spandrel = pytest.importorskip('spandrel')
cfsrdelta_arch.register_spandrel()

DELTA_OPT = os.path.join(ROOT, 'options', 'test', 'test_CFSRDelta_BPRefineNet_x4.yml')


def lr_batch(seed=0, size=(13, 11)):
    """(1, 3, H, W) uniform LR in [0, 1]; odd, non-square size."""
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def plugin_output(engine, lr):
    """The plugin's network on ``lr``, clamped like SREngine's output (its own layout: the engine's
    torch backend runs a channels-last copy, whose last bits may differ)."""
    return engine.net(lr).clamp(0, 1)


def assert_same_as_plugin(path, engine, arch_id, scale):
    model = spandrel.ModelLoader().load_from_file(path)
    assert model.architecture.id == arch_id and model.scale == scale and model.purpose == 'SR'
    assert (model.input_channels, model.output_channels) == (3, 3)
    lr = lr_batch()
    assert torch.equal(model(lr), plugin_output(engine, lr))


@pytest.mark.parametrize('name', ['CFSR_x2.pth', 'CFSR_x3.pth', 'CFSR_x4.pth',
                                  'LESRCNN_x2.pth', 'LESRCNN_x3.pth', 'LESRCNN_x4.pth'])
def test_official_files_load_and_match_the_plugin(name):
    path = official_weights(name)
    arch, scale = name[:-4].split('_x')
    engine = SREngine.from_weights(arch, path, int(scale), device='cpu')
    assert_same_as_plugin(path, engine, arch, int(scale))


def test_sizes_come_from_the_tensors_train_form_is_merged(tmp_path):
    """A tiny CFSR in train form (8 channels, one block, x2): built with those sizes and merged."""
    opt, pth = write_tiny_model(str(tmp_path), dict(TINY_CFSR, deploy=False))
    engine = SREngine.from_option_file(opt, weights=pth, device='cpu')
    model = spandrel.ModelLoader().load_from_file(pth)
    assert model.model.conv_first.weight.shape[0] == 8 and len(model.model.layers[0].blocks) == 1
    assert model.model.deploy and model.scale == 2
    lr = lr_batch()
    assert torch.equal(model(lr), plugin_output(engine, lr))


@pytest.mark.parametrize('refiner', [{'type': 'BPRefineNet', 'upscale': 2, 'width': 6, 'num_convs': 4},
                                     {'type': 'LRRefineNet', 'upscale': 2, 'width': 5},
                                     {'type': 'RefineNet', 'width': 7}])
def test_whole_cfsrdelta_exports_load_with_each_refiner(tmp_path, refiner):
    network = {'type': 'BackboneDelta', 'backbone': TINY_CFSR, 'refiner': refiner}
    opt, pth = write_tiny_model(str(tmp_path), network)
    engine = SREngine.from_option_file(opt, weights=pth, device='cpu')
    whole = export_pth(engine.net, str(tmp_path / 'whole.pth'))
    model = spandrel.ModelLoader().load_from_file(whole)
    assert model.tags == ['CFSR', refiner['type']]
    lr = lr_batch()
    assert torch.equal(model(lr), plugin_output(engine, lr))


def test_refiner_only_checkpoint_is_not_a_network(tmp_path):
    _, pth = write_tiny_model(str(tmp_path), {'type': 'BPRefineNet', 'upscale': 2})
    with pytest.raises(spandrel.UnsupportedModelError):
        spandrel.ModelLoader().load_from_file(pth)


# Runs in a Python whose path holds every site-packages entry except BasicSR (-S: no site, no .pth
# files), so ``import basicsr`` raises ModuleNotFoundError as on a machine without it.
NO_BASICSR = '''
import sys, torch
try:
    import basicsr
    sys.exit('basicsr is importable: the test would prove nothing')
except ModuleNotFoundError:
    pass
import cfsrdelta_arch, spandrel
cfsrdelta_arch.register_spandrel()
lr = torch.load(sys.argv[1])
outputs = {}
for path in sys.argv[3:]:
    model = spandrel.ModelLoader().load_from_file(path)
    outputs[path] = (model.architecture.id, model(lr))
assert not any(name == 'basicsr' or name.startswith('basicsr.') for name in sys.modules)
torch.save(outputs, sys.argv[2])
'''


def site_without_basicsr(folder):
    """A folder of links to every entry of this interpreter's site-packages except basicsr's."""
    import site
    os.makedirs(folder)
    for packages in site.getsitepackages():
        for name in os.listdir(packages):
            if not name.lower().startswith('basicsr') and not name.endswith('.pth'):
                target = os.path.join(folder, name)
                if not os.path.exists(target):
                    os.symlink(os.path.join(packages, name), target)
    return folder


def test_spandrel_path_works_without_basicsr(tmp_path):
    """Official CFSR x4 and LESRCNN x3 and the shipped CFSR-Delta x4 (exported whole) load and run
    in spandrel with BasicSR unimportable, giving the plugin's output exactly."""
    engines = {official_weights('CFSR_x4.pth'): SREngine.from_weights('CFSR', official_weights('CFSR_x4.pth'), 4,
                                                                      device='cpu'),
               official_weights('LESRCNN_x3.pth'): SREngine.from_weights('LESRCNN', official_weights('LESRCNN_x3.pth'),
                                                                         3, device='cpu')}
    delta = SREngine.from_option_file(DELTA_OPT, device='cpu')
    engines[export_pth(delta.net, str(tmp_path / 'CFSRDelta_x4.pth'))] = delta
    lr = lr_batch(1, (9, 8))
    torch.save(lr, tmp_path / 'lr.pt')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, site_without_basicsr(str(tmp_path / 'site'))]))
    proc = subprocess.run([sys.executable, '-S', '-c', NO_BASICSR, str(tmp_path / 'lr.pt'), str(tmp_path / 'out.pt'),
                           *engines], env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = torch.load(tmp_path / 'out.pt')
    assert [arch for arch, _ in outputs.values()] == ['CFSR', 'LESRCNN', 'CFSRDelta']
    for path, engine in engines.items():
        assert torch.equal(outputs[path][1], plugin_output(engine, lr)), path

