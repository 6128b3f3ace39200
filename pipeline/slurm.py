"""Dask workers as SLURM jobs, through dask-jobqueue, for ``lamost-classify run --cluster slurm``.

One scheduler, in the ``run`` process, and two kinds of worker job, each a named section of a
jobqueue.yaml (deploy/jobqueue.yaml is the template):

* ``lamost-cpu``: readers, the jobs of a ``SLURMCluster`` (fixed ``--cpu-jobs`` or ``--adapt MIN:MAX``);
* ``lamost-gpu``: one GPU each, declaring the Dask resource ``GPU=1``. They are ``SLURMJob`` s of that
  section started against the same scheduler, so one Client sees every worker and the pipeline can
  send inference tasks to ``resources={"GPU": 1}``. They stay outside the adaptive pool: adapting must
  never retire the only GPU.

While the run lasts a watcher replaces any worker job that connected and then went away (``--lifetime``
retirement before the walltime, pre-emption, ``scancel``). At the end every job is cancelled, also on
Ctrl-C, SIGTERM or an error, and leftovers are cancelled by job name.
"""

from __future__ import annotations

import contextlib
import getpass
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import dask
import yaml
from dask.utils import parse_timedelta

CPU_SECTION = "lamost-cpu"
GPU_SECTION = "lamost-gpu"
SECTIONS = (CPU_SECTION, GPU_SECTION)
PLACEHOLDER_ADDRESS = "tcp://<scheduler-address>:8786"
# A retiring worker needs this long, after its --lifetime, to hand its data on and exit before SLURM
# kills the job at the walltime.
RETIRE_MARGIN_S = 60.0
SUPERVISE_INTERVAL_S = 2.0  # cheap: reads state the cluster already keeps


class SlurmClusterError(RuntimeError):
    """The SLURM cluster could not be configured or started (the message says why and what to check)."""


# --- configuration -------------------------------------------------------------------------------------


@dataclass
class JobqueueConfig:
    sections: dict[str, dict[str, Any]]  # section name -> complete dask-jobqueue settings
    source: str  # where the sections came from, for messages
    dask_config_dir: Path | None  # a directory holding a distributed.yaml to apply too, or None


def default_config_path() -> Path:
    """The jobqueue.yaml shipped with the package (the same file as deploy/jobqueue.yaml)."""
    return Path(str(resources.files("lamost_classify.pipeline") / "jobqueue.yaml"))


def load_jobqueue_config(path: Path | None = None) -> JobqueueConfig:
    """Read the ``lamost-cpu`` and ``lamost-gpu`` sections: from ``path``; else from Dask's own config
    (a jobqueue.yaml in ~/.config/dask/); else the shipped default. Keys a section leaves out take
    dask-jobqueue's ``jobqueue.slurm`` values. Raises SlurmClusterError on a bad file or section."""
    import dask_jobqueue  # noqa: F401 - registers the ``jobqueue.slurm`` defaults

    if path is None and dask.config.get(f"jobqueue.{CPU_SECTION}", None) is not None:
        raw = {name: dask.config.get(f"jobqueue.{name}", None) or {} for name in SECTIONS}
        source, config_dir = "Dask's configuration (~/.config/dask)", None
    else:
        path = Path(path) if path is not None else default_config_path()
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SlurmClusterError(f"cannot read the jobqueue config {path}: {exc}") from None
        raw = (data.get("jobqueue") or {}) if isinstance(data, dict) else {}
        source = str(path)
        config_dir = path.parent if (path.parent / "distributed.yaml").is_file() else None
    defaults = dask.config.get("jobqueue.slurm")
    sections = {}
    for name in SECTIONS:
        section = raw.get(name)
        if not isinstance(section, dict):
            raise SlurmClusterError(f"{source} has no 'jobqueue: {name}:' section (see deploy/jobqueue.yaml)")
        unknown = sorted(set(section) - set(defaults))
        if unknown:
            raise SlurmClusterError(
                f"unknown key(s) {', '.join(unknown)} in section {name} of {source}; dask-jobqueue's SLURM "
                f"keys are: {', '.join(sorted(defaults))}"
            )
        sections[name] = dask.config.merge(defaults, section)
        check_section(name, sections[name], source)
    return JobqueueConfig(sections, source, config_dir)


def check_section(name: str, section: dict[str, Any], source: str = "the jobqueue config") -> None:
    """Refuse settings that would fail late on the cluster: no cores or memory (under CR_Core_Memory a
    job without --mem takes a whole node), a worker lifetime that outlasts the walltime, a GPU section
    whose workers do not declare the GPU resource."""
    where = f"section {name} of {source}"
    if not section.get("cores"):
        raise SlurmClusterError(f"{where}: set 'cores' (CPU cores per job)")
    if not section.get("memory"):
        raise SlurmClusterError(
            f"{where}: set 'memory' (e.g. 4GB): a SLURM job without --mem may be given a whole node's memory"
        )
    args = [str(a) for a in section.get("worker-extra-args") or []]
    lifetime = _option_value(args, "--lifetime")
    walltime = section.get("walltime")
    if lifetime is not None and walltime:
        stagger = _option_value(args, "--lifetime-stagger") or "0s"
        latest = parse_timedelta(lifetime) + parse_timedelta(stagger)
        limit = slurm_time_seconds(str(walltime))
        if latest + RETIRE_MARGIN_S > limit:
            raise SlurmClusterError(
                f"{where}: --lifetime {lifetime} + --lifetime-stagger {stagger} must end at least "
                f"{RETIRE_MARGIN_S:.0f} s before the walltime {walltime}, so workers retire before SLURM kills them"
            )
    if name == GPU_SECTION:
        declared = _option_value(args, "--resources") or ""
        if not re.search(r"(^|[ ,])GPU=\d", declared):
            raise SlurmClusterError(
                f"{where}: worker-extra-args must declare the Dask resource GPU, e.g. [--resources, GPU=1]; "
                "inference tasks ask for it"
            )


def slurm_time_seconds(value: str) -> float:
    """SLURM's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days, _, rest = value.strip().rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0.0, 0.0])[:3]
        return ((float(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    if len(parts) == 3:
        return (parts[0] * 60 + parts[1]) * 60 + parts[2]
    raise SlurmClusterError(f"cannot read the SLURM time {value!r}")


def _option_value(args: list[str], option: str) -> str | None:
    """The value of ``option`` in a worker command line, as ``--opt value`` or ``--opt=value``."""
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


@contextlib.contextmanager
def _applied(config: JobqueueConfig) -> Iterator[None]:
    """Put the sections (and a distributed.yaml next to the file) into Dask's config while the cluster
    lives: dask-jobqueue reads ``jobqueue.<section>.*`` each time it builds a job."""
    settings: dict[str, Any] = {f"jobqueue.{name}": section for name, section in config.sections.items()}
    if config.dask_config_dir is not None:
        extra = yaml.safe_load((config.dask_config_dir / "distributed.yaml").read_text()) or {}
        settings.update(_leaves(extra.get("distributed") or {}, "distributed"))
        # Workers read it too: DASK_CONFIG adds that directory to the places Dask reads YAML from.
        for name in SECTIONS:
            prologue = list(config.sections[name].get("job-script-prologue") or [])
            prologue.insert(0, f"export DASK_CONFIG={config.dask_config_dir.resolve()}")
            settings[f"jobqueue.{name}"] = {**config.sections[name], "job-script-prologue": prologue}
    with dask.config.set(settings):
        yield


def _leaves(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Dotted keys of the leaves: dask.config.set replaces whole sub-trees, a YAML file only adds to them."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}.{key}"))
        else:
            out[f"{prefix}.{key}"] = value
    return out


# --- job scripts ---------------------------------------------------------------------------------------


def job_scripts(jobqueue_config: Path | None = None, scheduler_address: str = PLACEHOLDER_ADDRESS) -> dict[str, str]:
    """The job script each section would submit, by section name (``lamost-classify slurm-script``)."""
    from dask_jobqueue.slurm import SLURMJob

    config = load_jobqueue_config(jobqueue_config)
    with _applied(config):
        return {
            name: SLURMJob(scheduler=scheduler_address, name=f"{name}-<n>", config_name=name).job_script()
            for name in SECTIONS
        }


# --- the cluster ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def slurm_cluster(
    cpu_jobs: int = 1,
    gpu_jobs: int = 0,
    adapt: tuple[int, int] | None = None,
    jobqueue_config: Path | JobqueueConfig | None = None,
    wait_timeout: float = 120,
    log: Callable[[str], Any] = print,
) -> Iterator[Any]:
    """A ``distributed.Client`` connected to reader jobs (``cpu_jobs``, or adaptive ``adapt=(MIN, MAX)``
    jobs) and ``gpu_jobs`` GPU jobs, all on one scheduler. Waits up to ``wait_timeout`` s for at least
    one worker of each kind asked for, else raises SlurmClusterError after logging squeue, the
    partition and the job script. Every job is cancelled on the way out, whatever the way.
    The counts, dask-jobqueue, sbatch and the jobqueue file are checked when a run's
    ``ClusterArguments`` are built (``pipeline/arguments.py``)."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    config = (jobqueue_config if isinstance(jobqueue_config, JobqueueConfig)
              else load_jobqueue_config(jobqueue_config))
    run_id = secrets.token_hex(3)
    cpu_name = f"{config.sections[CPU_SECTION]['name']}-{run_id}"
    gpu_name = f"{config.sections[GPU_SECTION]['name']}-{run_id}"
    cluster = client = watcher = None
    with _applied(config), _sigterm_as_exit():
        try:
            # The CPU cluster owns the scheduler; its workers are named <cpu_name>-<n>.
            cluster = SLURMCluster(config_name=CPU_SECTION, job_name=cpu_name, name=cpu_name)
            t_submit = time.monotonic()
            if adapt is not None:
                cluster.adapt(minimum_jobs=adapt[0], maximum_jobs=adapt[1])
                log(f"SLURM: adaptive {adapt[0]}..{adapt[1]} {CPU_SECTION} jobs ({cpu_name}), scheduler "
                    f"{cluster.scheduler_address}")
            elif cpu_jobs:
                cluster.scale(jobs=cpu_jobs)
                log(f"SLURM: submitting {cpu_jobs} {CPU_SECTION} job(s) ({cpu_name}), scheduler "
                    f"{cluster.scheduler_address}")
            watcher = _Watcher(cluster, gpu_name, gpu_jobs, log)
            watcher.start_gpu_jobs()
            if gpu_jobs:
                log(f"SLURM: submitted {gpu_jobs} {GPU_SECTION} job(s) ({gpu_name})")
            client = Client(cluster)
            want_cpu = (adapt[0] if adapt is not None else cpu_jobs) > 0
            connected = _wait_for_workers(client, cluster, watcher, cpu_name, want_cpu, gpu_jobs > 0, wait_timeout,
                                          t_submit, config, log)
            watcher.start(connected)
            yield client
        finally:
            if watcher is not None:
                watcher.stop()
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            if watcher is not None:
                watcher.close_gpu_jobs()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close(timeout=30)
            # Jobs submitted but never tracked (an interrupt during sbatch, a cluster that failed to close).
            left = cancel_jobs_named([cpu_name, gpu_name])
            if left:
                log(f"SLURM: cancelled leftover job(s) {', '.join(left)}")


class _Watcher:
    """Keeps the asked-for worker jobs alive: GPU jobs it submits itself; reader jobs belong to the
    SLURMCluster, which forgets a lost worker's job but keeps its slot in ``worker_spec``: scaling to
    the same size resubmits it. Only workers that once connected are replaced, so a job that cannot
    start never becomes a submit loop."""

    def __init__(self, cluster, gpu_name: str, gpu_jobs: int, log: Callable[[str], Any]):
        self.cluster = cluster
        self.gpu_name = gpu_name
        self.gpu_jobs: dict[str, Any] = {f"{gpu_name}-{i}": None for i in range(gpu_jobs)}  # worker name -> job
        self.seen: set[str] = set()  # worker names that connected since their job was (re)submitted
        self.missing_since: dict[str, float] = {}
        self.lost_timeout = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
        self.log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def job_ids(self) -> list[str]:
        ids = [getattr(job, "job_id", None) for job in self.cluster.workers.values()]
        ids += [job.job_id for job in self.gpu_jobs.values() if job is not None]
        return [str(i) for i in ids if i]

    def start_gpu_jobs(self) -> None:
        for name in self.gpu_jobs:
            self.gpu_jobs[name] = self.cluster.sync(self._submit_gpu, name)

    async def _submit_gpu(self, name: str):
        from dask_jobqueue.slurm import SLURMJob

        address = getattr(self.cluster.scheduler, "contact_address", None) or self.cluster.scheduler.address
        job = SLURMJob(scheduler=address, name=name, config_name=GPU_SECTION, job_name=self.gpu_name)
        await job
        return job

    def gpu_job_script(self) -> str:
        from dask_jobqueue.slurm import SLURMJob

        return SLURMJob(scheduler=self.cluster.scheduler_address, name=f"{self.gpu_name}-<n>",
                        config_name=GPU_SECTION, job_name=self.gpu_name).job_script()

    def start(self, connected: set[str]) -> None:
        """Watch from now on. ``connected``: the worker names the scheduler itself has (the cluster's own
        copy of its worker list arrives by a stream and can lag it), so that a job lost right away is
        replaced too."""
        self.seen |= connected
        self.cluster.sync(self.check)
        self._thread = threading.Thread(target=self._loop, name="slurm-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(SUPERVISE_INTERVAL_S):
            try:
                self.cluster.sync(self.check)
            except Exception as exc:  # a failed check must not end the run; the next one retries
                self.log(f"SLURM: worker check failed: {exc!r}")

    async def check(self) -> None:
        """One pass, on the cluster's event loop (where dask-jobqueue changes its own state)."""
        now = time.monotonic()
        connected = {str(w.get("name")) for w in self.cluster.scheduler_info.get("workers", {}).values()}
        self.seen |= connected
        # Readers: the cluster drops a lost worker's job after lost-worker-timeout; rescale resubmits it.
        lost_readers = [n for n in self.cluster.worker_spec if n in self.seen and n not in self.cluster.workers]
        if lost_readers:
            self.log(f"SLURM: reader worker(s) {', '.join(map(str, lost_readers))} gone; submitting replacements")
            self.seen -= set(lost_readers)
            self.cluster.scale(len(self.cluster.worker_spec))
        # GPU workers: ours to replace.
        for name, job in list(self.gpu_jobs.items()):
            if name in connected or name not in self.seen:
                self.missing_since.pop(name, None)
                continue
            since = self.missing_since.setdefault(name, now)
            if now - since < self.lost_timeout:
                continue
            self.log(f"SLURM: GPU worker {name} (job {getattr(job, 'job_id', '?')}) gone; submitting a replacement")
            with contextlib.suppress(Exception):
                await job.close()
            self.seen.discard(name)
            self.missing_since.pop(name, None)
            self.gpu_jobs[name] = await self._submit_gpu(name)

    def close_gpu_jobs(self) -> None:
        for name, job in self.gpu_jobs.items():
            if job is not None:
                with contextlib.suppress(Exception):
                    self.cluster.sync(job.close)
            self.gpu_jobs[name] = None


def _wait_for_workers(client, cluster, watcher: _Watcher, cpu_name: str, want_cpu: bool, want_gpu: bool,
                      timeout: float, t_submit: float, config: JobqueueConfig, log: Callable[[str], Any]) -> set[str]:
    """Until one reader (if asked) and one GPU worker (if asked) have connected, or ``timeout``; the
    connected workers' names. A job that ends before its worker connects (bad python path, missing
    module) is reported at once."""
    deadline = time.monotonic() + timeout
    gone_checked = 0.0
    while True:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        n_cpu = sum(str(w.get("name", "")).startswith(cpu_name) for w in workers)
        n_gpu = sum(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers)
        if (n_cpu or not want_cpu) and (n_gpu or not want_gpu):
            log(f"SLURM: {n_cpu} reader and {n_gpu} GPU worker(s) connected {time.monotonic() - t_submit:.1f} s "
                "after submit")
            return {str(w.get("name")) for w in workers}
        now = time.monotonic()
        if now > deadline:
            problem = f"no worker connected within {timeout:.0f} s" if not (n_cpu or n_gpu) else (
                f"no {'GPU' if want_gpu and not n_gpu else 'reader'} worker connected within {timeout:.0f} s")
            break
        if now - gone_checked > 2.0:
            gone_checked = now
            ids = watcher.job_ids()
            if ids and not queued_jobs(ids):
                problem = f"worker job(s) {', '.join(ids)} ended before their workers connected"
                break
        time.sleep(0.25)
    _report_no_workers(cluster, watcher, config, [cpu_name, watcher.gpu_name], want_gpu, log)
    raise SlurmClusterError(
        f"SLURM: {problem}. squeue, the partition and the job script are above; check the queue "
        f"(partition, account, memory, --gres) in {config.source}, the job logs in "
        f"{config.sections[CPU_SECTION].get('log-directory') or 'the submit directory'}, or wait longer."
    )


def _report_no_workers(cluster, watcher: _Watcher, config: JobqueueConfig, job_names: list[str], want_gpu: bool,
                       log: Callable[[str], Any]) -> None:
    log("SLURM: the worker jobs, as squeue shows them:")
    log(_command(["squeue", "--user", getpass.getuser(), "--name", ",".join(job_names),
                  "--format", "%.10i %.12P %.24j %.8T %.10M %.20R"]))
    sections = SECTIONS if want_gpu else (CPU_SECTION,)
    for partition in dict.fromkeys(config.sections[name].get("queue") for name in sections):
        log(f"SLURM: partition {partition or '(the default)'}:")
        log(_command(["sinfo", "--partition", partition] if partition else ["sinfo"]))
    log(f"SLURM: {CPU_SECTION} job script:\n{cluster.job_script()}")
    if want_gpu:
        log(f"SLURM: {GPU_SECTION} job script:\n{watcher.gpu_job_script()}")
    # A job that already ended says why in its stderr (a wrong python, a module that does not load).
    for job in [*cluster.workers.values(), *watcher.gpu_jobs.values()]:
        log_dir, job_id = getattr(job, "log_directory", None), getattr(job, "job_id", None)
        if not job_id:
            continue
        # With no log-directory SLURM writes both streams to slurm-<id>.out in the submit directory.
        err = Path(log_dir) / f"{job.job_name or 'worker'}-{job_id}.err" if log_dir else Path(f"slurm-{job_id}.out")
        if err.is_file() and err.stat().st_size:
            tail = err.read_text(errors="replace").splitlines()[-15:]
            log(f"SLURM: the end of {err}:\n" + "\n".join(tail))


# --- squeue / scancel ----------------------------------------------------------------------------------


def queued_jobs(job_ids: list[str]) -> dict[str, str]:
    """State of those of ``job_ids`` SLURM still knows as pending or running, by job id."""
    out = _command(["squeue", "--noheader", "--jobs", ",".join(job_ids), "--format", "%i %T"], check=False)
    states = dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)
    return {i: s for i, s in states.items() if s not in {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT"}}


def jobs_named(names: list[str], states: str = "PENDING,CONFIGURING,RUNNING,SUSPENDED") -> list[str]:
    """Ids of this user's jobs with one of these job names, in one of ``states``."""
    out = _command(["squeue", "--noheader", "--user", getpass.getuser(), "--name", ",".join(names),
                    "--states", states, "--format", "%i"], check=False)
    return [i for i in out.split() if i.isdigit()]


def cancel_jobs_named(names: list[str], wait: float = 20.0) -> list[str]:
    """Cancel this user's live jobs with these job names, then wait up to ``wait`` s until SLURM has
    finished with all of them (no COMPLETING left); returns the ids it had to cancel."""
    ids = jobs_named(names)
    if ids:
        _command(["scancel", *ids], check=False)
    deadline = time.monotonic() + wait
    while jobs_named(names, states="PENDING,CONFIGURING,RUNNING,SUSPENDED,COMPLETING") and time.monotonic() < deadline:
        time.sleep(0.5)
    return ids


def _command(cmd: list[str], check: bool = False) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=check)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"({' '.join(cmd)} failed: {exc})"
    return (done.stdout + done.stderr).rstrip()


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM (scancel of the run's own job, a kill from the shell) unwinds like Ctrl-C does, so the
    ``finally`` that cancels the worker jobs runs. Only the main thread can set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = [
    "CPU_SECTION", "GPU_SECTION", "JobqueueConfig", "SlurmClusterError", "cancel_jobs_named", "check_section",
    "default_config_path", "job_scripts", "jobs_named", "load_jobqueue_config", "queued_jobs", "slurm_cluster",
    "slurm_time_seconds",
]

