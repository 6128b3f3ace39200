"""SLURM through dask-jobqueue (issue 5): job scripts, and a real one-node slurmctld.

Tests marked ``slurm`` need a SLURM that answers with an idle node (``sudo bash deploy/local-slurm/start.sh``).
Elsewhere they skip with the reason; under CI (env CI=true) they fail instead, so CI never passes
without having run them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import yaml
from click.testing import CliRunner

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
if importlib.util.find_spec("dask_jobqueue") is None and not IN_CI:
    pytest.skip("dask-jobqueue is not installed: pip install -e '.[test]' (or '.[slurm]')", allow_module_level=True)

from lamost_classify.pipeline.slurm import (
    SlurmClusterError,
    _Watcher,
    check_section,
    job_scripts,
    load_jobqueue_config,
    slurm_cluster,
    slurm_time_seconds,
)

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
LIVE_STATES = "PENDING,CONFIGURING,RUNNING,SUSPENDED,COMPLETING"


# --- the SLURM the tests run against ---------------------------------------------------------------------


def slurm_unavailable() -> str | None:
    """Why the SLURM tests cannot run here, or None when a node with a GPU gres is idle (the GPU worker
    jobs ask --gres=gpu:1; deploy/local-slurm/start.sh declares a placeholder GPU on a CPU-only machine)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM client tools (sinfo, sbatch) not found; start one with: sudo bash deploy/local-slurm/start.sh"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--Node", "--format", "%T %G"], capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s (slurmctld down?)"
    if done.returncode != 0:
        return f"sinfo failed: {done.stderr.strip()} (slurmctld down? sudo bash deploy/local-slurm/start.sh)"
    nodes = [line.split(maxsplit=1) + [""] for line in done.stdout.splitlines() if line.strip()]
    idle = [gres for state, gres, *_ in nodes if state.rstrip("*") in {"idle", "mixed"}]
    if not idle:
        return f"no idle SLURM node (sinfo: {[n[0] for n in nodes] or 'no nodes'})"
    if not any("gpu" in gres for gres in idle):
        return (f"no idle SLURM node has a GPU gres (sinfo %G: {idle}); the GPU worker jobs need --gres=gpu:1: "
                "declare one (deploy/local-slurm/start.sh does, SLURM_NODE_GPUS=1)")
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    reason = slurm_unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true but SLURM is not usable: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    # dask-jobqueue creates a job's log-directory (relative: slurm-logs/) when it builds the script.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def jobqueue_dir(tmp_path: Path) -> Path:
    """deploy/'s two YAML files, with logs under tmp_path and a 2 s lost-worker-timeout so a lost job
    is replaced within seconds."""
    cfg = yaml.safe_load((DEPLOY / "jobqueue.yaml").read_text())
    for section in cfg["jobqueue"].values():
        section["log-directory"] = str(tmp_path / "slurm-logs")
    dist = yaml.safe_load((DEPLOY / "distributed.yaml").read_text())
    dist["distributed"]["deploy"]["lost-worker-timeout"] = "2s"
    out = tmp_path / "jobqueue"
    out.mkdir()
    (out / "jobqueue.yaml").write_text(yaml.safe_dump(cfg))
    (out / "distributed.yaml").write_text(yaml.safe_dump(dist))
    return out


def squeue(run_id: str | None = None) -> list[tuple[str, str, str]]:
    """(job id, job name, state) of live jobs, only this run's when ``run_id`` is given."""
    out = subprocess.run(["squeue", "--noheader", "--states", LIVE_STATES, "--format", "%i %j %T"],
                         capture_output=True, text=True, timeout=20).stdout
    rows = [tuple(line.split()) for line in out.splitlines() if len(line.split()) == 3]
    return [r for r in rows if run_id is None or r[1].endswith(f"-{run_id}")]


def worker_names(client) -> list[str]:
    return sorted(str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values())


def run_id_of(names: list[str]) -> str:
    # worker names are <section>-<run id>-<n>
    return names[0].split("-")[2]


def worker_name_of_gpu_task(client) -> str:
    """Name of the worker that runs a task asking for the GPU resource. (A lambda: cloudpickle sends it
    by value; a function of this module would be sent by reference, which workers cannot import.)"""
    from distributed import get_worker

    return client.submit(lambda: str(get_worker().name), resources={"GPU": 1}, pure=False).result(timeout=60)


# --- configuration and job scripts (no SLURM needed) ------------------------------------------------------


def test_cpu_job_script_has_its_directives_and_worker_arguments():
    script = job_scripts(DEPLOY / "jobqueue.yaml")["lamost-cpu"]
    for line in ("#SBATCH -J lamost-cpu", "#SBATCH -n 1", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=3G",
                 "#SBATCH -t 01:00:00"):
        assert line in script.splitlines(), line
    assert "-m distributed.cli.dask_worker tcp://<scheduler-address>:8786" in script
    assert "--nthreads 1" in script and "--memory-limit 3.00GiB" in script
    assert "--lifetime 50m --lifetime-stagger 5m" in script
    assert "--gres" not in script and "GPU=" not in script  # readers never hold a GPU
    assert f"export DASK_CONFIG={DEPLOY}" in script  # distributed.yaml reaches the workers


def test_gpu_job_script_asks_a_gpu_and_declares_the_resource():
    script = job_scripts(DEPLOY / "jobqueue.yaml")["lamost-gpu"]
    for line in ("#SBATCH -J lamost-gpu", "#SBATCH --gres=gpu:1", "#SBATCH --mem=4G", "#SBATCH --cpus-per-task=1",
                 "#SBATCH -t 01:00:00"):
        assert line in script.splitlines(), line
    assert "--resources GPU=1" in script
    assert "--lifetime 50m --lifetime-stagger 5m" in script


def test_shipped_default_is_deploy_jobqueue_yaml():
    config = load_jobqueue_config()
    assert config.sections == load_jobqueue_config(DEPLOY / "jobqueue.yaml").sections
    assert config.dask_config_dir is not None and (config.dask_config_dir / "distributed.yaml").is_file()


@pytest.mark.parametrize(
    "value, seconds",
    [("30", 1800), ("10:30", 630), ("01:00:00", 3600), ("2-0", 172800), ("1-02:03", 93780), ("1-00:00:10", 86410)],
)
def test_slurm_time_formats(value, seconds):
    assert slurm_time_seconds(value) == seconds


def _section(**changes):
    section = load_jobqueue_config(DEPLOY / "jobqueue.yaml").sections["lamost-gpu"]
    section.update(changes)
    return section


def test_bad_sections_are_refused_with_the_reason():
    with pytest.raises(SlurmClusterError, match="memory"):
        check_section("lamost-gpu", _section(memory=None))
    with pytest.raises(SlurmClusterError, match="before the walltime"):
        check_section("lamost-gpu", _section(walltime="00:50:00"))  # 50m +/- 5m lifetime outlives it
    with pytest.raises(SlurmClusterError, match="GPU"):
        check_section("lamost-gpu", _section(**{"worker-extra-args": ["--lifetime", "50m"]}))
    check_section("lamost-gpu", _section(walltime="00:57:00"))  # 55 min + 1 min margin fits


def test_unknown_key_and_missing_section_are_refused(tmp_path):
    cfg = yaml.safe_load((DEPLOY / "jobqueue.yaml").read_text())
    cfg["jobqueue"]["lamost-cpu"]["memroy"] = "4GB"
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SlurmClusterError, match="memroy"):
        load_jobqueue_config(tmp_path / "typo.yaml")
    del cfg["jobqueue"]["lamost-gpu"]
    del cfg["jobqueue"]["lamost-cpu"]["memroy"]
    (tmp_path / "nogpu.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SlurmClusterError, match="lamost-gpu"):
        load_jobqueue_config(tmp_path / "nogpu.yaml")


def test_slurm_script_command_prints_both_scripts():
    from lamost_classify.cli import main

    result = CliRunner().invoke(main, ["slurm-script", "--jobqueue-config", str(DEPLOY / "jobqueue.yaml")])
    assert result.exit_code == 0, result.output
    assert "# --- lamost-cpu ---" in result.output and "# --- lamost-gpu ---" in result.output
    assert result.output.count("#!/usr/bin/env bash") == 2
    only_gpu = CliRunner().invoke(main, ["slurm-script", "--section", "lamost-gpu"])
    assert "--gres=gpu:1" in only_gpu.output and "# --- lamost-cpu ---" not in only_gpu.output


def test_a_reader_lost_before_the_clusters_own_worker_list_caught_up_is_replaced():
    """The cluster learns of workers through a stream that can lag the scheduler: a reader that the wait
    saw connect, lost before that stream brought it, must still count as seen and be resubmitted."""
    import asyncio

    class LaggingCluster:  # a SLURMCluster's state as the watcher reads it, with no SLURM behind it
        def __init__(self):
            self.scheduler_info = {"workers": {}}  # its copy has not heard of the reader yet
            self.worker_spec = {"lamost-cpu-x-0": {}}  # the slot it keeps for the reader's job
            self.workers: dict = {}  # the job already dropped as lost
            self.scaled: list[int] = []

        def sync(self, fn):
            return asyncio.run(fn())

        def scale(self, n):
            self.scaled.append(n)

    cluster, log = LaggingCluster(), []
    watcher = _Watcher(cluster, "lamost-gpu-x", 0, log.append)
    watcher.start({"lamost-cpu-x-0"})
    watcher.stop()
    assert cluster.scaled == [1], log
    assert any("reader worker(s) lamost-cpu-x-0 gone" in line for line in log), log


def test_deploy_scripts_are_valid_bash():
    for script in ("lamost-classify.sbatch", "local-slurm/start.sh", "local-slurm/stop.sh"):
        subprocess.run(["bash", "-n", str(DEPLOY / script)], check=True)


# --- a real SLURM ----------------------------------------------------------------------------------------


@pytest.mark.slurm
def test_cpu_and_gpu_jobs_share_one_client_and_are_cancelled_on_error(slurm, jobqueue_dir):
    log: list[str] = []
    with pytest.raises(RuntimeError, match="the pipeline failed"):
        with slurm_cluster(cpu_jobs=1, gpu_jobs=1, jobqueue_config=jobqueue_dir / "jobqueue.yaml", wait_timeout=90,
                           log=log.append) as client:
            names = worker_names(client)
            run_id = run_id_of(names)
            assert [n.rsplit("-", 1)[0] for n in names] == [f"lamost-cpu-{run_id}", f"lamost-gpu-{run_id}"]
            queue = squeue(run_id)
            print("squeue while connected:", *queue, sep="\n  ")
            assert sorted((name, state) for _, name, state in queue) == [
                (f"lamost-cpu-{run_id}", "RUNNING"), (f"lamost-gpu-{run_id}", "RUNNING")]
            # Only the GPU job's worker takes tasks that ask for the GPU resource.
            gpu_ran_on = {worker_name_of_gpu_task(client) for _ in range(4)}
            assert gpu_ran_on == {f"lamost-gpu-{run_id}-0"}
            raise RuntimeError("the pipeline failed")
    connected = [line for line in log if "connected" in line]
    print(*connected, sep="\n")
    assert connected and re.search(r"connected [\d.]+ s after submit", connected[0])
    assert squeue(run_id) == []  # nothing left in the queue, not even COMPLETING


@pytest.mark.slurm
def test_lost_worker_jobs_are_replaced(slurm, jobqueue_dir):
    log: list[str] = []
    with slurm_cluster(cpu_jobs=1, gpu_jobs=1, jobqueue_config=jobqueue_dir / "jobqueue.yaml", wait_timeout=90,
                       log=log.append) as client:
        run_id = run_id_of(worker_names(client))
        before = {name: job_id for job_id, name, _ in squeue(run_id)}
        subprocess.run(["scancel", *before.values()], check=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            after = {name: job_id for job_id, name, state in squeue(run_id) if state == "RUNNING"}
            if len(worker_names(client)) == 2 and set(after) == set(before) and not set(after.values()) & set(
                    before.values()):
                break
            time.sleep(0.5)
        assert set(after) == set(before) and not set(after.values()) & set(before.values()), (before, after, log)
        assert len(worker_names(client)) == 2, log
        assert worker_name_of_gpu_task(client) == f"lamost-gpu-{run_id}-0"
    assert any("GPU worker" in line and "replacement" in line for line in log), log
    assert any("reader worker" in line and "replacement" in line for line in log), log
    assert squeue(run_id) == []


@pytest.mark.slurm
def test_no_worker_in_time_shows_the_queue_and_cancels(slurm, jobqueue_dir):
    path = jobqueue_dir / "jobqueue.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["jobqueue"]["lamost-cpu"]["job-extra-directives"] = ["--begin=now+1hour"]  # pends for an hour
    path.write_text(yaml.safe_dump(cfg))
    log: list[str] = []
    with pytest.raises(SlurmClusterError, match="no worker connected within 3 s"):
        with slurm_cluster(cpu_jobs=1, jobqueue_config=path, wait_timeout=3, log=log.append):
            pass
    text = "\n".join(log)
    assert "PENDING" in text and "(BeginTime)" in text  # squeue, with the reason it waits
    assert "PARTITION" in text  # sinfo of the partition
    assert "#SBATCH --begin=now+1hour" in text  # the job script
    run_id = re.search(r"lamost-cpu-([0-9a-f]{6})", text).group(1)
    assert squeue(run_id) == []


@pytest.mark.slurm
def test_a_job_that_cannot_start_a_worker_fails_fast_with_its_stderr(slurm, jobqueue_dir):
    path = jobqueue_dir / "jobqueue.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["jobqueue"]["lamost-cpu"]["python"] = "/nonexistent/python3"
    path.write_text(yaml.safe_dump(cfg))
    log: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(SlurmClusterError, match="ended before their workers connected"):
        with slurm_cluster(cpu_jobs=1, jobqueue_config=path, wait_timeout=60, log=log.append):
            pass
    assert time.monotonic() - t0 < 30
    assert "/nonexistent/python3: No such file or directory" in "\n".join(log)


@pytest.mark.slurm
def test_sigterm_to_the_run_cancels_its_jobs(slurm, jobqueue_dir):
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from lamost_classify.pipeline.slurm import slurm_cluster\n"
        "with slurm_cluster(cpu_jobs=1, jobqueue_config=Path(sys.argv[1]), wait_timeout=60,\n"
        "                   log=lambda m: print(m, flush=True)) as client:\n"
        "    print('READY', client.scheduler_info(n_workers=-1)['workers'].popitem()[1]['name'], flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(jobqueue_dir / "jobqueue.yaml")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("READY"):
                break
        assert lines and lines[-1].startswith("READY"), "".join(lines)
        run_id = lines[-1].split()[1].split("-")[2]
        assert len(squeue(run_id)) == 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert squeue(run_id) == []


# --- end to end: lamost-classify run --cluster slurm -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A small untrained DenseNet: these tests check the plumbing (every input once, same rows as a
    local run), not the classes."""
    import torch

    from lamost_classify.model.densenet import build_model
    from lamost_classify.model.weights import save_weights

    torch.manual_seed(3)
    widths = {"growth_rate": 4, "branch_channels": 2, "stem_channels": 4, "n_dense_blocks": 2}
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return str(save_weights(build_model("fast", **widths), path, name="tiny-slurm", overrides=widths))


def write_spectra(directory: Path, n: int, seed: int = 5) -> list[Path]:
    """``n`` small LAMOST v2 files (a smooth continuum with absorption lines and noise), and one that is
    not FITS, which must come out as a flagged row."""
    from lamost_classify.mocks.writers import write_lamost_fits

    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    wavelength = 10 ** (3.5682 + 1e-4 * np.arange(3909))
    paths = []
    for i in range(n):
        temp = rng.uniform(4000, 9000)
        continuum = 1e4 / (wavelength / 5000) ** 5 / np.expm1(1.44e8 / (wavelength * temp))
        flux = continuum / continuum.max() * 100
        for line in (3934, 3969, 4861, 5175, 6563, 8542):
            flux *= 1 - 0.4 * np.exp(-0.5 * ((wavelength - line * rng.uniform(0.999, 1.001)) / 4) ** 2)
        flux += rng.normal(0, 2, wavelength.size)
        path = directory / f"spec-55859-F5902_sp{1 + i // 250:02d}-{1 + i % 250:03d}.fits.gz"
        write_lamost_fits(path, "v2", wavelength, flux, np.full(wavelength.size, 0.25), np.zeros(wavelength.size),
                          header={"OBSID": 1000 + i, "RA": 10 + i * 0.01, "DEC": 20.0, "CLASS": "STAR"})
        paths.append(path)
    bad = directory / "spec-55859-F5902_sp16-250.fits.gz"
    bad.write_bytes(b"this is not a FITS file")
    return [*paths, bad]


def read_catalog(out: Path):
    table = ds.dataset(out / "parquet", format="parquet").to_table()
    return table.sort_by("source").to_pydict()


def run_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import sys; from lamost_classify.cli import main; sys.exit(main())",
                             "run", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slurm
@pytest.mark.slow
def test_run_on_slurm_matches_a_local_run(slurm, jobqueue_dir, tiny_model, tmp_path):
    sources = write_spectra(tmp_path / "spectra", 23)
    common = ["--input", str(tmp_path / "spectra"), "--model", tiny_model, "--batch-size", "4", "--no-progress"]
    t0 = time.monotonic()
    proc = run_cli([*common, "--output", str(tmp_path / "on-slurm"), "--cluster", "slurm", "--cpu-jobs", "1",
                    "--gpu-jobs", "1", "--jobqueue-config", str(jobqueue_dir / "jobqueue.yaml")], tmp_path)
    seen_queue: set[tuple[str, str]] = set()
    while proc.poll() is None:
        seen_queue |= {(name, state) for _, name, state in squeue() if name.startswith("lamost-")}
        time.sleep(0.2)
    output = proc.stdout.read()
    print(f"run --cluster slurm: {time.monotonic() - t0:.1f} s; squeue during the run: {sorted(seen_queue)}")
    print(output)
    assert proc.returncode == 0, output
    run_id = re.search(r"lamost-cpu-([0-9a-f]{6})", output).group(1)
    assert {(f"lamost-cpu-{run_id}", "RUNNING"), (f"lamost-gpu-{run_id}", "RUNNING")} <= seen_queue
    assert squeue(run_id) == []

    local = run_cli([*common, "--output", str(tmp_path / "local"), "--cluster", "local", "--workers", "1"], tmp_path)
    local_output = local.communicate(timeout=300)[0]
    assert local.returncode == 0, local_output

    on_slurm, on_local = read_catalog(tmp_path / "on-slurm"), read_catalog(tmp_path / "local")
    assert sorted(on_slurm["source"]) == sorted(str(p) for p in sources)  # complete, each input once
    assert set(on_slurm) == set(on_local)
    for column, values in on_slurm.items():
        if column.startswith("prob_") or column in {"confidence", "margin", "snr_pixel"}:
            np.testing.assert_allclose(np.array(values, dtype=float), np.array(on_local[column], dtype=float),
                                       rtol=1e-5, atol=1e-6, err_msg=column)
        else:
            assert values == on_local[column], column
    assert on_slurm["error"][on_slurm["source"].index(str(sources[-1]))]  # the non-FITS file: a flagged row
    summary = json.loads((tmp_path / "on-slurm" / "summary.json").read_text())
    assert len(summary["inference_workers"]) == 1  # every batch classified on the GPU job's worker


@pytest.mark.slurm
@pytest.mark.slow
def test_run_survives_scancel_of_a_worker_job(slurm, jobqueue_dir, tiny_model, tmp_path):
    n = 40
    sources = write_spectra(tmp_path / "spectra", n)
    out = tmp_path / "catalog"
    args = ["--input", str(tmp_path / "spectra"), "--model", tiny_model, "--batch-size", "2", "--no-progress", "--output", str(out),
            "--cluster", "slurm", "--cpu-jobs", "1", "--gpu-jobs", "1", "--jobqueue-config",
            str(jobqueue_dir / "jobqueue.yaml")]
    proc = run_cli(args, tmp_path)
    cancelled = None
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        written = len(list((out / "parquet").glob("*.parquet"))) if (out / "parquet").is_dir() else 0
        if cancelled is None and written >= 2:
            gpu = [(job_id, name) for job_id, name, state in squeue() if name.startswith("lamost-gpu-")]
            if gpu:
                subprocess.run(["scancel", gpu[0][0]], check=True)
                cancelled = (gpu[0], written)
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    output = proc.stdout.read()
    print(output)
    assert cancelled is not None, f"the run ended before a worker job could be cancelled:\n{output}"
    print(f"scancel {cancelled[0]} after {cancelled[1]} batches were written")
    n_batches = (n + 1 + 1) // 2
    assert cancelled[1] < n_batches, "the run had finished before the scancel: make it longer"
    if proc.returncode != 0:  # a rerun of the same command resumes
        rerun = run_cli(args, tmp_path)
        output += rerun.communicate(timeout=300)[0]
        assert rerun.returncode == 0, output
    assert "replacement" in output  # the cancelled GPU job was replaced
    catalog = read_catalog(out)
    assert sorted(catalog["source"]) == sorted(str(p) for p in sources)  # none lost, none twice
    assert sum(c is not None for c in catalog["class"]) == n  # every good spectrum classified
    run_id = cancelled[0][1].split("-")[2]
    assert squeue(run_id) == []


@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_script_runs_everything_in_one_allocation(slurm, tiny_model, tmp_path):
    sources = write_spectra(tmp_path / "spectra", 11)
    out = tmp_path / "catalog"
    log = tmp_path / "job.out"
    # The test node has 2 cores: one GPU worker and one reader.
    submit = subprocess.run(
        ["sbatch", "--parsable", "--ntasks=2", "--mem-per-cpu=2G", "--time=00:10:00", f"--output={log}",
         f"--export=ALL,PYTHON={sys.executable}", str(DEPLOY / "lamost-classify.sbatch"),
         "--input", str(tmp_path / "spectra"), "--model", tiny_model, "--output", str(out), "--batch-size", "4"],
        capture_output=True, text=True, cwd=tmp_path, check=True)
    job_id = submit.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 180
    while any(i == job_id for i, _, _ in squeue()) and time.monotonic() < deadline:
        time.sleep(0.5)
    text = log.read_text() if log.exists() else ""
    if any(i == job_id for i, _, _ in squeue()):
        subprocess.run(["scancel", job_id])
        pytest.fail(f"the job did not finish in 180 s:\n{text[-3000:]}")
    assert "2 workers connected" in text, text[-3000:]
    assert "12 spectra ->" in text, text[-3000:]
    catalog = read_catalog(out)
    assert sorted(catalog["source"]) == sorted(str(p) for p in sources)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["inference_workers"]) == 1  # the srun step with --resources GPU=1
    assert not list(tmp_path.glob(".lamost-scheduler-*.json"))  # cleaned up
