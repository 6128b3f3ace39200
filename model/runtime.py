"""Where the network runs: device choice, CPU threads, and batched forward passes."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from lamost_classify.host import available_cpus


def choose_device(device: str = "auto", backend: str = "torch", gpu: bool = False) -> torch.device:
    """The device rule: 'auto' is the GPU when there is one (``gpu``) and the back-end runs there
    (onnxruntime runs on the CPU here), else the CPU; any other name is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if gpu and backend != "onnx" else "cpu")
    return torch.device(device)


def resolve_device(device: str = "auto", backend: str = "torch") -> torch.device:
    """``choose_device`` on this machine; a GPU asked for by name that torch does not see is an error."""
    resolved = choose_device(device, backend, gpu=torch.cuda.is_available())
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return resolved


def set_threads(n: int | None = None) -> int:
    """Give torch ``n`` intra-op threads (default: every CPU we may use; torch's own default counts
    the node's cores, which oversubscribes a SLURM job that has a few of them)."""
    n = n or available_cpus()
    torch.set_num_threads(n)
    return n


@contextmanager
def denormals_flushed() -> Iterator[None]:
    """Flush denormal floats to zero inside, and only inside: Adam's second-moment estimates decay into
    denormals, which are 10-100x slower on x86, but a process that goes on to prepare spectra must still
    see an ivar of 1e-45 as more than zero. (torch cannot tell the previous setting; off is its default.)"""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


# glibc mallopt parameters, and what the network's activations need: blocks of a few MB allocated from the
# heap (not mmap'ed afresh each time), and freed ones kept for the next batch.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest
TRIM_THRESHOLD = 64 * 2**20


def keep_freed_memory() -> bool:
    """Let this process reuse freed memory instead of handing it back to the OS after every batch.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap threshold
    at 128 kB: every activation of the network is then mmap'ed, faulted in page by page and unmapped again,
    and the network runs 2-3x slower than in a plain process (bench/RESULTS.md). Returns False where this
    is not glibc (nothing changed)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                        TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def batched_logits(
    model: nn.Module, flux: np.ndarray, device: torch.device | str = "cpu", max_batch: int = 1024
) -> np.ndarray:
    """Logits (B, n_classes) float32 of ``model`` in eval mode, ``max_batch`` spectra at a time.

    On CUDA out-of-memory the batch is halved and retried, down to one spectrum.
    """
    device = torch.device(device)
    flux = np.asarray(flux)
    if flux.ndim != 2:
        raise ValueError(f"expected flux of shape (batch, n_pixels), got {flux.shape}")
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    start, size = 0, max(1, int(max_batch))
    try:
        with torch.inference_mode():
            while start < len(flux):
                chunk = torch.from_numpy(np.ascontiguousarray(flux[start:start + size], dtype=np.float32))
                try:
                    logits = model(chunk.to(device, non_blocking=True)).float().cpu().numpy()
                except torch.OutOfMemoryError:
                    if size == 1:
                        raise
                    torch.cuda.empty_cache()
                    size = max(1, size // 2)
                    continue
                out.append(logits)
                start += len(chunk)
    finally:
        model.train(was_training)
    n_classes = getattr(getattr(model, "config", None), "n_classes", 3)
    return np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)
