"""TTASRModel: BasicSR's SRModel with test-time options and checked, CPU-safe weight loading."""
import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from cfsrdelta_arch.utils.inference import DEFAULT_TILE_OVERLAP, super_resolve
from cfsrdelta_arch.utils.weights import load_state_dict_file


def resolve_device_count(opt):
    """Fall back to the CPU (``num_gpu: 0``) when the options ask for GPUs this machine lacks."""
    if opt.get('num_gpu', 0) != 0 and not torch.cuda.is_available():
        get_root_logger().warning(f"num_gpu: {opt['num_gpu']} but CUDA is not available; running on the CPU")
        opt['num_gpu'] = 0


@MODEL_REGISTRY.register()
class TTASRModel(SRModel):
    """Single-network SR model for any registered arch (CFSR, LESRCNN, EDSR, ...).

    On top of ``SRModel``:
    - ``val.self_ensemble: true`` averages the 8 flip/transpose variants at test time;
    - ``val.tile: {size: 128}`` runs large images in overlapping LR tiles (``overlap``: LR context,
      default DEFAULT_TILE_OVERLAP);
    - upstream checkpoints are sha256-verified and a wrong network/scale is one clear error line;
    - ``num_gpu`` larger than the machine's GPU count falls back to the CPU with a warning.
    """

    def __init__(self, opt):
        resolve_device_count(opt)
        super().__init__(opt)

    def load_network(self, net, load_path, strict=True, param_key='params'):
        net = self.get_bare_model(net)
        get_root_logger().info(f'Loading {net.__class__.__name__} from {load_path} [{param_key}]')
        net.load_state_dict(load_state_dict_file(load_path, param_key), strict=strict)

    def _network_for_test(self):
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g

    def _inference_options(self):
        val = self.opt.get('val') or {}
        tile = val.get('tile') or {}
        return dict(self_ensemble_on=bool(val.get('self_ensemble', False)),
                    tile_size=tile.get('size'), tile_overlap=tile.get('overlap', DEFAULT_TILE_OVERLAP))

    def test(self):
        net = self._network_for_test()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = super_resolve(net, self.lq, self.opt['scale'], **self._inference_options())
        net.train(was_training)
