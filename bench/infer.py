"""Inference speed of each preset, precision and back-end, against this machine's own matmul rate.

    python bench/infer.py [--presets paper,fast] [--device cpu] [--threads 2] [--variants ...]
                          [--batch-sizes 256] [--seconds 3] [--mocks 3000] [--weights default]

Stages: matmul rates (sgemm, bf16) -> a mock set (``mocks.simulate`` + ``grid.prepare_arrays``,
balanced classes, cached under work/bench/) -> per preset: the network (trained weights when
``--weights`` names some of that preset, else random weights with BatchNorm statistics taken on the
mocks, so activations have realistic scales) -> its reference logits (the training model, eager,
fp32) -> per variant: labels and probabilities on the mocks against the reference, then spectra/s
on repeated batches -> the table, in Markdown -> the matmul rates again (other jobs on a shared machine
change them: compare ratios, not raw rates, between runs).

Columns: spectra/s (median over the timed calls of a round; the best of ``--rounds`` rounds, each
variant timed once per round, so that other jobs' load hits all alike); GFLOP/s = the reference's FLOPs per spectrum
(torch.utils.flop_counter) x spectra/s, so extra work a variant does (padded kernels) is not
counted; / matmul = GFLOP/s over the matmul rate in the variant's precision; agree = share of mock
labels (argmax of the logits, no prior: the strictest test) equal to the reference's; dp 99.9% and
max dp = 99.9th percentile and maximum over the mocks of the largest difference of a class probability,
softmax(logits / T), from the reference's; peak MB = during the timed calls, resident memory above
the level before them (CPU; glibc keeps freed memory, so this is a lower bound after a bigger variant)
or torch's peak CUDA allocation above the level before them (GPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from lamost_classify.model.densenet import build_model, count_flops
from lamost_classify.model.fastpath import DEFAULT_BATCH, PRECISIONS, FastPath
from lamost_classify.model.runtime import batched_logits, resolve_device, set_threads

CACHE = Path(__file__).resolve().parents[1] / "work" / "bench"
CPU_VARIANTS = "reference/fp32,torch/fp32,torch/bf16,onnx/fp32"
GPU_VARIANTS = "reference/fp32,torch/fp32,torch/bf16,torch/fp16,compile/fp32,compile/bf16,compile/fp16"
PROBE_DECAY = 0.1  # L2 weight of the linear probe: margins of a few tenths, as ambiguous spectra have


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rates(device: torch.device) -> dict[str, float]:
    """The matmul rate, GFLOP/s, of each precision FastPath offers. Not float16 on a CPU: torch emulates
    it there (~0.4 GFLOP/s, a minute per matmul), and the table's ratio for it reads nan."""
    return {p: matmul_rate(dtype, device) for p, dtype in PRECISIONS.items()
            if not (p == "fp16" and device.type == "cpu")}


def matmul_rate(dtype: torch.dtype, device: torch.device, seconds: float = 1.0) -> float:
    """GFLOP/s of one square matmul (2n^3 FLOPs), median over ``seconds`` of calls."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 3:
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def mock_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(flux (n, 2600) float32, class labels) of balanced mocks, prepared as the pipeline does.

    Cached as work/bench/mocks-<n>-<seed>-<templates>.npz ('real' templates from ../shared, else the
    'analytic' fallback); a cached set is used as it is, so a GPU machine can be handed this one.
    """
    cached = sorted(CACHE.glob(f"mocks-{n}-{seed}-*.npz"), key=lambda p: "-real" not in p.name)
    if cached:
        data = np.load(cached[0])
        return data["flux"], data["labels"]
    from lamost_classify import CLASS_NAMES
    from lamost_classify.mocks.simulate import simulate
    from lamost_classify.mocks.templates import default_templates_dir
    from lamost_classify.pipeline.grid import prepare_arrays

    fluxes, labels = [], []
    for chunk in simulate(n, seed, class_mix="balanced", chunk_size=500):
        prepared = prepare_arrays(chunk.wavelength, chunk.flux, chunk.ivar, chunk.andmask)
        fluxes.append(prepared.flux)
        labels.append([CLASS_NAMES.index(str(c).upper()) for c in chunk.truth["class"]])
    flux, label = np.concatenate(fluxes), np.concatenate(labels).astype(np.int64)
    path = CACHE / f"mocks-{n}-{seed}-{'real' if default_templates_dir() else 'analytic'}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, flux=flux, labels=label)
    return flux, label


def network(preset: str, weights: str | None, flux: np.ndarray, labels: np.ndarray,
            n_probe: int = 600) -> tuple[torch.nn.Module, float, str]:
    """(network in eval mode, temperature, where its weights came from).

    Without trained weights of the preset: random convolutions, BatchNorm statistics taken on the mocks
    (realistic activation scales) and the classifier fitted to the mocks' labels (a linear probe), so
    that the logits separate the classes by margins like a trained net's. Raw random logits differ by
    ~0.04 between classes, and any rounding would flip labels: that would measure ties, not precision.
    """
    if weights:
        from lamost_classify.model.weights import load_weights

        net, card = load_weights(weights)
        if card.get("preset") == preset:
            return net.eval(), float(card.get("temperature", 1.0)), f"trained ({card.get('name')})"
    torch.manual_seed(0)
    net = build_model(preset)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    net.train()
    # The probe's features and labels come from the same first n_probe mocks (slices of the whole set
    # would run past n_probe in the last step of 64).
    probe_flux, target = flux[:n_probe], torch.from_numpy(labels[:n_probe])
    n_probe = len(probe_flux)
    with torch.no_grad():
        for i in range(0, min(n_probe, 128), 64):
            net(torch.from_numpy(probe_flux[i:i + 64]))
        net.eval()
        pooled = torch.cat([net.features(torch.from_numpy(probe_flux[i:i + 64])).mean(dim=2)
                            for i in range(0, n_probe, 64)])
    optimizer = torch.optim.LBFGS(net.classifier.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        # Weight decay keeps the margins finite (a separable probe would grow its weights without end).
        loss = torch.nn.functional.cross_entropy(net.classifier(pooled), target)
        loss = loss + PROBE_DECAY * net.classifier.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return net.eval(), 1.0, f"random, BN statistics and a linear-probe classifier from {n_probe} mocks"


def release_freed_memory() -> None:
    """Hand memory that earlier variants freed back to the OS (glibc keeps it otherwise), so that each
    variant's resident-memory peak starts from what is really in use."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: peaks may then be too low after a bigger variant
        pass


class PeakMemory:
    """Peak resident memory (CPU) or peak CUDA allocation above the level at entry, in MB."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb = device, 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self.rss())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            release_freed_memory()
            self._base = self._peak = self.rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self.rss())
        self.peak_mb = (peak - self._base) / 2**20


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def throughput(logits_of, batch: np.ndarray, seconds: float) -> float:
    """Median spectra/s of ``logits_of(batch)`` (numpy in, numpy out) after a warm-up call."""
    logits_of(batch)
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 3:
        t = time.perf_counter()
        logits_of(batch)
        times.append(time.perf_counter() - t)
    return len(batch) / statistics.median(times)


def ablate(path: FastPath, step: str) -> None:
    """Undo one kept optimisation of ``path``'s folded network (``--ablation``), to measure what it gives."""
    from torch.nn import functional as F

    if step == "channels-last":  # back to torch's default (B, C, 1, L) layout for activations and weights
        path.net.memory_format = torch.contiguous_format
        path.net.to(memory_format=torch.contiguous_format)
    elif step == "pool-first":  # the transitions' 1x1 conv on every pixel, then the pooling, as the reference
        for t in [*path.net.transitions, *path.net.cross_transitions]:
            t.forward = lambda x, t=t: F.avg_pool2d(t.conv(t.pre(x)), (1, 2))
    else:
        raise ValueError(f"unknown ablation {step!r}")


ABLATIONS = ("channels-last", "pool-first", "paired-branches")


def parse_variant(text: str) -> tuple[str, str, list[int], int | None]:
    """'torch/bf16@4096~64' -> ('torch', 'bf16', [4096], 64)."""
    text, _, width = text.partition("~")
    text, _, batch = text.partition("@")
    backend, _, precision = text.partition("/")
    return backend, precision or "fp32", [int(batch)] if batch else [], int(width) if width else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="paper,fast")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every CPU we may use)")
    parser.add_argument("--variants", default=None,
                        help=f"backend/precision[@batch][~width] list (default: {CPU_VARIANTS} on CPU, "
                             f"{GPU_VARIANTS} on GPU): @batch times the variant at that batch size only, ~width "
                             "groups multi-scale branches to at least that many maps per convolution")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma list; default: FastPath's default for the device and precision")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per variant and batch size")
    parser.add_argument("--rounds", type=int, default=3, help="the timed seconds are split into this many rounds")
    parser.add_argument("--mocks", type=int, default=3000, help="mock spectra for the agreement columns")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--weights", default=None, help="trained weights for the preset they are of ('default')")
    parser.add_argument("--ablation", action="store_true",
                        help=f"also time torch/fp32 and torch/bf16 with each kept step undone in turn: {ABLATIONS}")
    args = parser.parse_args()

    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    default_variants = GPU_VARIANTS if device.type == "cuda" else CPU_VARIANTS
    variants = [(*parse_variant(v), None) for v in (args.variants or default_variants).split(",")]
    if args.ablation:
        # Without "paired-branches": group width 8 = one convolution per kernel size (fast: 8 maps each).
        variants += [("torch", precision, [], 8 if step == "paired-branches" else None, step)
                     for precision in ("fp32", "bf16") for step in ABLATIONS]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} threads"
    print(f"# bench/infer.py  {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
          f"command: python {' '.join(sys.argv)}\n"
          f"torch {torch.__version__}, {name}, load average {os.getloadavg()[0]:.1f}", flush=True)
    rates = matmul_rates(device)
    print("matmul: " + ", ".join(f"{p} {r:.3g}" for p, r in rates.items()) + " GFLOP/s", flush=True)
    flux, labels = mock_set(args.mocks, args.seed)

    rows = []
    for preset in args.presets.split(","):
        net, temperature, origin = network(preset, args.weights, flux, labels)
        flops = count_flops(net)
        print(f"{preset}: {flops / 1e6:.1f} MFLOPs/spectrum, weights {origin}", flush=True)
        # The reference in true fp32: cuDNN would otherwise use TF32 for its convolutions.
        tf32, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
        ref_logits = batched_logits(net.to(device), flux, device, 256)
        torch.backends.cudnn.allow_tf32 = tf32
        ref_labels, ref_prob = ref_logits.argmax(1), softmax(ref_logits, temperature)
        runs = []  # (name, precision, batch, logits_of, agree, dp 99.9%, max dp)
        for backend, precision, variant_batch, group_width, step in variants:
            for batch_size in variant_batch or batch_sizes or [DEFAULT_BATCH[(device.type, precision)]]:
                name = f"{backend}/{precision}" + (f"~{group_width}" if group_width and not step else "")
                name += f" without {step}" if step else ""
                try:
                    if backend == "reference":
                        def logits_of(x, net=net, b=batch_size):
                            return batched_logits(net, x, device, b)
                    else:
                        logits_of = FastPath(net, device, precision, backend, max_batch=batch_size,
                                             group_width=group_width)
                        if step and step != "paired-branches":
                            ablate(logits_of, step)
                    logits = logits_of(flux)
                except Exception as exc:  # one failing back-end must not hide the others' numbers
                    print(f"  {preset} {name}: failed: {exc!r}", flush=True)
                    continue
                dp = np.abs(softmax(logits, temperature) - ref_prob).max(axis=1)
                runs.append((name, precision, batch_size, logits_of, float((logits.argmax(1) == ref_labels).mean()),
                             float(np.quantile(dp, 0.999)), float(dp.max())))
        # Timed in rounds, every variant once per round, best round kept: other jobs on a shared
        # machine come and go, and would otherwise favour whichever variant ran in a quiet minute.
        speeds: dict[str, float] = {}
        peaks: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, precision, batch_size, logits_of, *_ in runs:
                timing_batch = np.resize(flux, (batch_size, flux.shape[1]))
                with PeakMemory(device) as memory:
                    speed = throughput(logits_of, timing_batch, args.seconds / args.rounds)
                key = f"{name}@{batch_size}"
                speeds[key] = max(speeds.get(key, 0.0), speed)
                peaks[key] = max(peaks.get(key, 0.0), memory.peak_mb)
        for name, precision, batch_size, _, agree, dp999, max_dp in runs:
            key = f"{name}@{batch_size}"
            gflops = flops * speeds[key] / 1e9
            row = (preset, name, batch_size, speeds[key], gflops, gflops / rates.get(precision, float("nan")), agree, dp999, max_dp,
                   peaks[key])
            rows.append(row)
            print("  " + " ".join(str(v) for v in row), flush=True)

    print("\n| preset | variant | batch | spectra/s | GFLOP/s | / matmul | agree | dp 99.9% | max dp | peak MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for preset, variant, batch, speed, gflops, ratio, agree, dp999, max_dp, peak in rows:
        print(f"| {preset} | {variant} | {batch} | {speed:,.0f} | {gflops:.1f} | {ratio:.2f} | {agree:.2%} | "
              f"{dp999:.4f} | {max_dp:.4f} | {peak:.0f} |")
    after = matmul_rates(device)
    print("\nmatmul before/after: " + ", ".join(f"{p} {rates[p]:.3g}/{after[p]:.3g}" for p in rates)
          + f" GFLOP/s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
