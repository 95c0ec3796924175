"""Inference backends: one callable per runtime, ``backend(lr) -> sr``, so that tiling and the x8
self-ensemble (utils/inference.py) run unchanged on any of them.

- ``'torch'``: the network itself, eager PyTorch (any device).
- ``'onnxruntime'``: the network's ONNX export (app/export.py) in an onnxruntime CPU session, dynamic
  shapes (onnxruntime plans per run; one session serves every size).
- ``'openvino'``: the same ONNX file compiled by OpenVINO for the CPU, once per input shape: static
  shapes ran 441 ms against 522 ms for a dynamic one (CFSR x4, 320x180 LR, 2 threads). Tiled
  inference gives every tile the same shape (``tiled_forward``), so a tiled run compiles one shape
  (two with self-ensemble on non-square tiles: the transposed variants).

Compiled artefacts are cached on disk in :func:`cache_dir` and reused by later runs: the ONNX file
keyed by the network's fingerprint (code, weights, buffers, settings: :func:`network_fingerprint`),
torch's version and the opset; OpenVINO's compiled blobs also by OpenVINO's version, the input shape
and the compile properties. Every file is written atomically (temporary file + rename), so runs in
parallel or killed midway never leave a partial file under a final name.
"""
import copy
import functools
import hashlib
import inspect
import io
import os

import numpy as np
import torch

from cfsrdelta_arch.utils.fileio import write_bytes_atomic
from .export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_session

BACKENDS = ('torch', 'onnxruntime', 'openvino')
CACHE_ENV = 'CFSRDELTA_CACHE'
# Compiled shapes an OpenVINO backend keeps in memory: whole images of a few sizes, or tiles with
# their transposed variants (self-ensemble), without growing without bound on a folder of sizes.
OPENVINO_SHAPES_IN_MEMORY = 4


def cache_dir():
    """Folder of compiled models: ``$CFSRDELTA_CACHE``, else ``~/.cache/cfsrdelta`` (created on write)."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache', 'cfsrdelta')


def network_fingerprint(net):
    """sha256 (hex) of everything an export of ``net`` depends on: the class, the source file (so an
    edited forward is exported again) and the scalar settings (ints, floats, strings, ...) of every
    submodule, and the names, shapes, dtypes and values of every parameter and buffer (non-persistent
    ones too, e.g. fixed bicubic kernels)."""
    digest = hashlib.sha256()
    for source in sorted({inspect.getsourcefile(type(module)) for module in net.modules()}):
        with open(source, 'rb') as f:
            digest.update(f.read())
    for name, module in net.named_modules():
        settings = sorted((k, repr(v)) for k, v in vars(module).items()
                          if k != 'training' and isinstance(v, (bool, int, float, str, tuple)))
        digest.update(f'{name}:{type(module).__qualname__}:{settings}\n'.encode())
    for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
        digest.update(f'{name}:{tuple(tensor.shape)}:{tensor.dtype}\n'.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached_onnx(net, folder=None, opset=DEFAULT_OPSET):
    """Path of ``net``'s ONNX export in the cache (``folder`` or :func:`cache_dir`), exported on a miss."""
    key = f'{network_fingerprint(net)[:32]}-torch{torch.__version__}-opset{opset}'
    path = os.path.join(folder or cache_dir(), f'{type(net).__name__}-{key}.onnx')
    if not os.path.isfile(path):
        export_onnx(net, path, opset)
    return path


def numpy_input(lr):
    """(N, C, H, W) tensor -> C-contiguous float32 numpy array on the CPU (a gray tile expanded to RGB
    is a strided view; the runtimes need dense memory)."""
    return np.ascontiguousarray(lr.detach().to('cpu', torch.float32).numpy())


class TorchBackend:
    """Eager PyTorch: ``net`` on ``device``; LR (N, 3, H, W) float in [0, 1] -> SR on ``device``.

    Runs in inference mode with channels-last tensors, on a copy of ``net`` (the caller's network
    keeps its layout, so other users of it, e.g. the benchmarks, are unaffected). CFSR x4 / CFSR-Delta
    x4 at 320x180, 2 CPU threads, against contiguous NCHW under ``torch.no_grad``, median of 7
    interleaved runs: 1.02x / 1.09x faster with glibc's default allocator, equal (1.02x / 0.99x) with
    the CLI's (utils/allocator.py), which makes either about 1.4x faster; same output to 2.3e-6.
    torch.compile (inductor, freezing) ran as fast as OpenVINO (608 vs 587 ms) after 16-34 s of
    compilation per input shape, so it is not used here (README, "CPU runtimes").
    """

    name = 'torch'

    def __init__(self, net, device='cpu'):
        self.device = torch.device(device)
        self.net = copy.deepcopy(net).to(self.device, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def __call__(self, lr, *args, **kwargs):
        """``args``/``kwargs``: a non-blind network's degradation inputs (app/engine.py)."""
        return self.net(lr.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last),
                        *args, **kwargs)


class OnnxRuntimeBackend:
    """onnxruntime CPU session of the cached ONNX export; LR (N, 3, H, W) float32 in [0, 1] -> SR
    (N, 3, s*H, s*W) float32 on the CPU. ``threads`` 0 lets onnxruntime choose."""

    name = 'onnxruntime'

    def __init__(self, net, threads=0, folder=None):
        self.path = cached_onnx(net, folder)
        self.session = onnx_session(self.path, threads)

    def __call__(self, lr):
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: numpy_input(lr)})[0])


def openvino_config(threads=0, profile=False):
    """OpenVINO CPU compile properties: the LATENCY hint, ``threads`` inference threads (0: OpenVINO's
    choice) and, with ``profile``, per-node timings (app/benchmark.py: openvino_layer_profile)."""
    import openvino as ov
    import openvino.properties.hint as hints
    config = {hints.performance_mode: hints.PerformanceMode.LATENCY}
    if threads:
        config[ov.properties.inference_num_threads] = int(threads)
    if profile:
        config[ov.properties.enable_profiling] = True
    return config


class OpenVinoBackend:
    """OpenVINO CPU, compiled for each input shape met (static shapes; see the module docstring);
    LR (N, 3, H, W) float32 in [0, 1] -> SR (N, 3, s*H, s*W) float32 on the CPU.

    Compiles with the LATENCY performance hint (one stream using every thread for one request) and
    ``threads`` inference threads (0: OpenVINO's choice). A compiled blob is read from the cache when
    one exists for this network, OpenVINO version, shape and properties, else compiled and stored; an
    unreadable blob (e.g. from another CPU) is compiled again and replaced.
    """

    name = 'openvino'

    def __init__(self, net, threads=0, folder=None, profile=False):
        import openvino as ov
        self.folder = folder or cache_dir()
        self.onnx_path = cached_onnx(net, self.folder)
        self.core = ov.Core()
        self.config = openvino_config(threads, profile)
        self.version = ov.get_version().split('-')[0]
        self.request = functools.lru_cache(maxsize=OPENVINO_SHAPES_IN_MEMORY)(self._compile)

    def blob_path(self, shape):
        """Cache file of the model compiled for input ``shape`` (N, C, H, W) with this backend's config."""
        stem = os.path.splitext(os.path.basename(self.onnx_path))[0]
        options = hashlib.sha256(repr(sorted((str(k), str(v)) for k, v in self.config.items())).encode())
        dims = 'x'.join(map(str, shape))
        return os.path.join(self.folder, f'{stem}-openvino{self.version}-{dims}-{options.hexdigest()[:8]}.blob')

    def _compile(self, shape):
        """Infer request of the model compiled for ``shape``, from the disk cache when possible
        (``self.request(shape)``: the same, kept in memory for the last few shapes)."""
        path = self.blob_path(shape)
        compiled = None
        if os.path.isfile(path):
            try:
                with open(path, 'rb') as f:
                    compiled = self.core.import_model(f.read(), 'CPU', self.config)
            except RuntimeError:  # stale or foreign blob: compile again below
                compiled = None
        if compiled is None:
            model = self.core.read_model(self.onnx_path)
            model.reshape({INPUT_NAME: list(shape)})
            compiled = self.core.compile_model(model, 'CPU', self.config)
            blob = io.BytesIO()
            compiled.export_model(blob)
            write_bytes_atomic(path, blob.getvalue())
        return compiled.create_infer_request()

    def __call__(self, lr):
        x = numpy_input(lr)
        request = self.request(tuple(x.shape))
        request.infer({INPUT_NAME: x}, share_inputs=True)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())  # the request reuses its memory


def make_backend(name, net, device='cpu', threads=0, folder=None):
    """The backend ``name`` (one of :data:`BACKENDS`) running ``net`` (eval, deploy form).

    ``device`` applies to 'torch' only (the others run on the CPU); ``threads`` to the others only
    (torch's count is process-wide: ``torch.set_num_threads``); ``folder`` overrides :func:`cache_dir`.

    Raises:
        ValueError: unknown backend name (one line listing the known ones).
    """
    if name == 'torch':
        return TorchBackend(net, device)
    if name == 'onnxruntime':
        return OnnxRuntimeBackend(net, threads, folder)
    if name == 'openvino':
        return OpenVinoBackend(net, threads, folder)
    raise ValueError(f"backend '{name}' is not one of {', '.join(BACKENDS)}")
