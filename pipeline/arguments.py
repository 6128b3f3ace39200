"""One validated description of a run, built once (by the CLI, a test or a script) and handed down.

``RunArguments`` says what to read and where to write; its ``model`` part (``ModelArguments``) says
which network runs where and how, its ``cluster`` part (``ClusterArguments``) where the tasks run.
Building them checks everything that can be checked before a cluster starts and resolves what is
resolved once (the prior the card chooses, the weights' integrity and model id); a value that cannot
be used raises ``InvalidArgument`` with one line naming the option. Device and precision ``auto`` are
resolved where the network runs (a worker may have a GPU the front does not), by
``Classifier`` -> ``FastPath``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lamost_classify.contract import model_id

from .releases import get_release

if TYPE_CHECKING:
    from lamost_classify.model.inference import Classifier

    from .slurm import JobqueueConfig

CLUSTER_KINDS = ("local", "slurm")


class InvalidArgument(ValueError):
    """An option's value cannot be used; the message names the option and says what to give instead."""


@dataclass(frozen=True)
class ModelArguments:
    """Which network, on which device, in which precision, through which back-end, under which prior.

    ``weights``: a shipped model name or a .safetensors path (None: the packaged model). ``device``:
    auto, cpu or cuda[:N]. ``precision``: auto, fp32, bf16 or fp16. ``backend``: torch, compile or onnx.
    ``prior``: the class prior STAR,GALAXY,QSO of the data (normalised here; None: the card's choice).
    """

    weights: str | Path | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "torch"
    prior: tuple[float, ...] | None = None
    # Resolved once, when built:
    target_prior: tuple[float, ...] = field(init=False)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        from lamost_classify.model.fastpath import check_runtime
        from lamost_classify.model.inference import card_target_prior
        from lamost_classify.model.runtime import choose_device
        from lamost_classify.model.weights import load_weights

        try:
            device = choose_device(self.device, self.backend)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda"):
            raise InvalidArgument(f"--device {self.device!r}: use auto, cpu or cuda (cuda:N for one GPU of "
                                  "several)")
        # Checked as on a machine without a GPU (the workers may be elsewhere): the CPU runs every option.
        try:
            check_runtime(device, self.precision, self.backend)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        prior = None if self.prior is None else normalised_prior(self.prior)
        # Bad weights stop the run here, before a cluster starts; the card fixes the model id and prior.
        _, card = load_weights(self.weights, device="cpu")
        object.__setattr__(self, "prior", prior)
        object.__setattr__(self, "target_prior", prior if prior is not None else card_target_prior(card))
        object.__setattr__(self, "name", model_id(card))

    def load(self) -> Classifier:
        """The classifier these arguments describe, on this machine (``auto``: its GPU when it has one)."""
        from lamost_classify.model.inference import Classifier
        from lamost_classify.model.weights import load_weights

        net, card = load_weights(self.weights, device="cpu")
        return Classifier(net, card, self.device, self.target_prior, precision=self.precision, backend=self.backend)


def normalised_prior(values: tuple[float, ...]) -> tuple[float, ...]:
    """Three positive numbers STAR,GALAXY,QSO, scaled to sum to 1."""
    try:
        parts = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        parts = ()
    if len(parts) != 3 or not all(p > 0 for p in parts) or not all(p < float("inf") for p in parts):
        raise InvalidArgument("--prior: give three positive numbers (STAR,GALAXY,QSO), e.g. 0.985,0.012,0.003")
    total = sum(parts)
    return tuple(p / total for p in parts)


@dataclass(frozen=True)
class ClusterArguments:
    """Where the tasks run: a running scheduler (``scheduler``), else a cluster of ``kind``: ``local``
    (``workers`` processes, None: one per core) or ``slurm`` (``cpu_jobs`` reader jobs or ``adapt``
    (MIN, MAX) of them, ``gpu_jobs`` GPU jobs, from ``jobqueue_config``, waiting ``wait_timeout`` s for
    the first workers)."""

    scheduler: str | None = None
    kind: str = "local"
    workers: int | None = None
    cpu_jobs: int = 1
    gpu_jobs: int = 0
    adapt: tuple[int, int] | None = None
    jobqueue_config: Path | None = None
    wait_timeout: float = 120.0
    # Read once, when built, for --cluster slurm: the lamost-cpu and lamost-gpu sections.
    jobqueue: JobqueueConfig | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in CLUSTER_KINDS:
            raise InvalidArgument(f"--cluster {self.kind!r}: use one of {', '.join(CLUSTER_KINDS)}")
        if self.workers is not None and self.workers < 1:
            raise InvalidArgument(f"--workers {self.workers}: give at least 1, or leave it out for one per core")
        if self.cpu_jobs < 0 or self.gpu_jobs < 0:
            raise InvalidArgument("--cpu-jobs and --gpu-jobs cannot be negative")
        if self.adapt is not None and not (len(self.adapt) == 2 and 0 <= self.adapt[0] <= self.adapt[1]):
            raise InvalidArgument(f"--adapt {':'.join(map(str, self.adapt))}: need MIN:MAX with 0 <= MIN <= MAX")
        if not self.wait_timeout > 0:
            raise InvalidArgument(f"--wait-timeout {self.wait_timeout}: give a number of seconds above 0")
        if self.kind == "slurm" and self.scheduler is None:
            self._check_slurm()

    def _check_slurm(self) -> None:
        from .slurm import SlurmClusterError, load_jobqueue_config

        if self.adapt is None and self.cpu_jobs == 0 and self.gpu_jobs == 0:
            raise InvalidArgument("no worker jobs asked for: give --cpu-jobs and/or --gpu-jobs, or --adapt MIN:MAX")
        try:
            import dask_jobqueue  # noqa: F401 - the jobs are dask-jobqueue's
        except ImportError:
            raise SlurmClusterError("--cluster slurm needs dask-jobqueue: pip install 'lamost-classify[slurm]'") from None
        if shutil.which("sbatch") is None:
            raise SlurmClusterError("sbatch not found: --cluster slurm must run on a SLURM login or compute node")
        # A bad file or section is refused before any job is submitted.
        object.__setattr__(self, "jobqueue", load_jobqueue_config(self.jobqueue_config))


@dataclass(frozen=True)
class RunArguments:
    """A whole run: inputs (a release profile under ``data_root`` and/or ``inputs`` items), the catalog
    directory ``output``, ``batch_size`` spectra per task, what else to store, and the model and
    cluster parts. ``release`` 'sample' without a ``data_root`` or inputs is the built-in sample."""

    output: Path
    model: ModelArguments = field(default_factory=ModelArguments)
    cluster: ClusterArguments = field(default_factory=ClusterArguments)
    release: str | None = None
    data_root: Path | None = None
    inputs: tuple[str, ...] = ()
    batch_size: int = 1000
    overwrite: bool = False
    save_flux: bool = False
    save_cam: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "inputs", tuple(str(i) for i in self.inputs))
        if self.data_root is not None:
            object.__setattr__(self, "data_root", Path(self.data_root))
        if not self.release and not self.inputs:
            raise InvalidArgument("give --release (with --data-root) or --input; try --release sample")
        if self.release:
            try:
                get_release(self.release)
            except (KeyError, ValueError) as exc:
                raise InvalidArgument(str(exc.args[0]) if exc.args else str(exc)) from None
            if self.data_root is None and not self.inputs and not self.is_sample:
                raise InvalidArgument(f"--release {self.release} needs --data-root (where the release's files are)")
        if self.batch_size < 1:
            raise InvalidArgument(f"--batch-size {self.batch_size}: give at least 1 spectrum per task")

    @property
    def release_name(self) -> str:
        """The catalog's ``release`` value: the profile's name as given, else 'custom'."""
        return self.release or "custom"

    @property
    def is_sample(self) -> bool:
        """The built-in sample release, generated on first use (no --data-root, no --input)."""
        return (self.release or "").strip().lower() == "sample" and self.data_root is None and not self.inputs
