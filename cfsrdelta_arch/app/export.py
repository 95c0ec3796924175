"""Export a loaded network (deploy form, see SREngine) for inference elsewhere.

- :func:`export_pth`: whole-network ``{'params': state_dict}``; loads strictly into the arch built in
  deploy form (for BackboneDelta: a state dict with ``backbone.*`` and ``refiner.*`` keys, usable with
  ``cfsrdelta-infer --opt <train yml> --weights <file>``).
- :func:`export_onnx`: ONNX graph with dynamic batch, height and width; input ``lr``
  (N, 3, H, W) float32 RGB in [0, 1], output ``sr`` (N, 3, s*H, s*W), unclamped except for a
  BackboneDelta's SR_base.
- :func:`check_onnx`: run the file in onnxruntime at several sizes against PyTorch.

Uses the TorchScript exporter (``dynamo=False``): torch 2.14's default dynamo exporter needs the
optional onnxscript package and is not needed for these plain conv networks.
"""
import warnings

import numpy as np
import torch

from cfsrdelta_arch.utils.fileio import atomic_path, torch_save_atomic

INPUT_NAME, OUTPUT_NAME = 'lr', 'sr'
DEFAULT_OPSET = 17


def export_pth(net, path):
    """Write ``{'params': state_dict}`` of ``net`` (tensors on the CPU) to ``path``, atomically."""
    torch_save_atomic({'params': {k: v.detach().cpu() for k, v in net.state_dict().items()}}, path)
    return path


def export_onnx(net, path, opset=DEFAULT_OPSET, sample_size=(64, 64)):
    """Trace ``net`` (eval, deploy form) on a (1, 3, *sample_size) input and write an ONNX file with
    dynamic N, H and W, atomically. Returns ``path``."""
    net = net.eval()
    device = next(net.parameters()).device
    sample = torch.rand(1, 3, *sample_size, device=device)
    with torch.no_grad(), warnings.catch_warnings(), atomic_path(path) as tmp:
        # Expected and harmless here: the legacy exporter's deprecation notice, and tracer notes on
        # Python-level shape checks (e.g. LRRefineNet's); check_onnx verifies other sizes.
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        torch.onnx.export(
            net, (sample,), tmp, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'},
                          OUTPUT_NAME: {0: 'batch', 2: 'out_height', 3: 'out_width'}})
    return path


def onnx_session(path, threads=0):
    """onnxruntime CPU session for ``path``; ``threads`` 0 lets onnxruntime choose."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def check_onnx(net, path, sizes=((24, 32), (37, 29)), seed=0):
    """Max abs difference between onnxruntime and PyTorch outputs for random inputs of each (H, W).

    Returns:
        list[tuple[tuple[int, int], float]]: ((H, W), max |onnx - torch|) per size.
    """
    session = onnx_session(path)
    gen = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    results = []
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = net.eval()(x.to(device)).cpu().numpy()
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if out.shape != ref.shape:
            raise ValueError(f'{path}: ONNX output {out.shape} for input {(h, w)}, PyTorch gives {ref.shape}')
        results.append(((h, w), float(np.abs(out - ref).max())))
    return results
