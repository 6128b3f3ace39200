"""How a folded network is run: device, precision, back-end and batch size (``FastPath``).

``FastPath`` runs the inference twin of a trained network (``folding.fold``) on a device, in a
precision, through a back-end (eager torch, torch.compile, onnxruntime), in batches of the size that
measured fastest (bench/RESULTS.md): what ``Classifier`` uses. ``check_runtime`` says which
combinations can run and what "auto" means.
"""

from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import torch
from torch import nn

from .folding import PRECISIONS, fold
from .runtime import batched_logits

# Fewest output maps per multi-scale convolution, per device type: narrower branches are grouped.
# CPU: the floats in one AVX-512 register, measured. CUDA: the same until bench/gpu.sh has measured
# the alternatives (tensor cores want 64 or more).
GROUP_WIDTH: dict[str, int] = {"cpu": 16, "cuda": 16}

BACKENDS = ("torch", "compile", "onnx")
ONNX_MISSING = "the onnx back-end needs onnxruntime: pip install 'lamost-classify[onnx]'"
# What "auto" means, per device type (bench/RESULTS.md, "Defaults, therefore"). CPU: fp32, as bf16
# moves probabilities past the goal for a gain that CPU runs, bound by the readers, hardly see.
# GPU: fp16, the same tensor-core rate as bf16 and closer to fp32.
DEFAULT_PRECISION: dict[str, str] = {"cpu": "fp32", "cuda": "fp16"}
# Spectra per forward pass, per device type and precision (bench/RESULTS.md: the batch sweep). On the
# CPU, batches small enough for the activations to stay in cache are the fastest.
DEFAULT_BATCH: dict[tuple[str, str], int] = {("cpu", "fp32"): 128, ("cpu", "bf16"): 256, ("cpu", "fp16"): 128,
                                             ("cuda", "fp32"): 4096, ("cuda", "bf16"): 4096, ("cuda", "fp16"): 4096}


def check_runtime(device: torch.device, precision: str, backend: str) -> str:
    """The precision to use ("auto" resolved for ``device``); ValueError for a combination that cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown back-end {backend!r}; choose one of {list(BACKENDS)}")
    if precision == "auto":
        precision = DEFAULT_PRECISION.get(device.type, "fp32")
        if backend == "onnx":
            precision = "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)} or 'auto'")
    if backend == "onnx" and precision != "fp32":
        raise ValueError("the onnx back-end runs fp32 only (onnxruntime has no bfloat16 convolutions on the CPU); "
                         f"use the torch back-end for {precision}")
    if backend == "onnx" and device.type != "cpu":
        raise ValueError(f"the onnx back-end runs on the CPU only, not on {device}")
    if backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        raise ImportError(ONNX_MISSING)
    return precision


class FastPath:
    """Logits of a trained network on one device, in one precision, through one back-end.

    - ``torch``: the folded network in eager mode (``fold``).
    - ``compile``: the same through ``torch.compile`` (compiles on the first batch, once per process,
      which takes a while: bench/RESULTS.md; needs a C++ compiler on the CPU, Triton on a GPU). Batches are padded to
      ``max_batch``, one compiled shape: on a GPU give the pipeline batches of at least that size.
    - ``onnx``: the folded network exported to ONNX and run by onnxruntime on the CPU (fp32 only;
      needs the ``onnx`` extra).

    Call it on (B, 2600) float32 spectra; it returns (B, n_classes) float32 logits. ``outputs`` also
    returns the redshift head's two columns after them when the network has one.
    ``net`` is the folded torch network on the device, for CAMs whatever the back-end.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", precision: str = "auto",
                 backend: str = "torch", max_batch: int | None = None, group_width: int | None = None) -> None:
        self.device = torch.device(device)
        self.precision = check_runtime(self.device, precision, backend)
        self.backend = backend
        self.max_batch = int(max_batch or DEFAULT_BATCH.get((self.device.type, self.precision), 256))
        self.group_width = group_width or GROUP_WIDTH.get(self.device.type, 16)
        self.net = fold(model, self.precision, self.group_width).to(self.device)
        self.n_classes = self.net.classifier.out_features if hasattr(self.net, "classifier") else 3
        self._session = None
        self._model, self._fp32 = model, None  # float32 twin, built only when a reduced precision needs it
        self._run: nn.Module = self.net
        if backend == "compile":
            # Weights frozen as constants: without, inductor's C++ code for this bfloat16 net does not
            # compile in torch 2.13 ("conflicting declaration of tmp_acc0_vec"). One static shape,
            # max_batch (``__call__`` pads to it): every new shape would cost another compilation.
            self._run = torch.compile(self.net, dynamic=False, options={"freezing": True})
        elif backend == "onnx":
            self._session = onnx_session(self.net)

    def __call__(self, flux: np.ndarray) -> np.ndarray:
        return self.outputs(flux)[:, :self.n_classes]

    def outputs(self, flux: np.ndarray) -> np.ndarray:
        """Logits, then the redshift head's outputs when there is a head: (B, n_classes [+ 2])."""
        flux = np.asarray(flux)
        if flux.ndim != 2:
            raise ValueError(f"expected flux of shape (batch, n_pixels), got {flux.shape}")
        logits = self._logits(flux)
        if self.precision == "fp16":
            overflowed = ~np.isfinite(logits).all(axis=1)
            if overflowed.any():
                logits[overflowed] = self.float32_outputs(flux[overflowed])[:, :logits.shape[1]]
        return logits

    def float32_outputs(self, flux: np.ndarray) -> np.ndarray:
        """``outputs`` of the float32 twin, whatever this path's precision (built on first use): for the
        rows a reduced precision overflows or leaves undecided."""
        if self.precision == "fp32":
            return self._logits(flux)
        if self._fp32 is None:
            self._fp32 = fold(self._model, "fp32", self.group_width).to(self.device)
        return batched_logits(self._fp32, flux, self.device, self.max_batch)

    def _logits(self, flux: np.ndarray) -> np.ndarray:
        if self.backend == "torch":
            return batched_logits(self._run, flux, self.device, self.max_batch)
        out = []
        for start in range(0, len(flux), self.max_batch):
            chunk = np.ascontiguousarray(flux[start:start + self.max_batch], np.float32)
            if self._session is not None:
                out.append(self._session.run(None, {"flux": chunk})[0])
            else:  # compiled: pad to the one compiled shape (zero rows change no other row in eval mode)
                padded = np.zeros((self.max_batch, chunk.shape[1]), np.float32)
                padded[:len(chunk)] = chunk
                out.append(batched_logits(self._run, padded, self.device, self.max_batch)[:len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, self.n_classes), np.float32)


def onnx_session(net: nn.Module, n_pixels: int = 2600):
    """An onnxruntime session (CPU) of ``net`` exported in memory, with a dynamic batch dimension."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(ONNX_MISSING) from exc
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch's legacy (TorchScript) exporter: the dynamo one needs onnxscript, which the extra does not pull in.
        warnings.simplefilter("ignore")
        torch.onnx.export(net.cpu(), (torch.zeros(2, n_pixels),), buffer, input_names=["flux"],
                          output_names=["logits"], dynamic_axes={"flux": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
