"""Get a Dask client: a running scheduler (--scheduler), a LocalCluster sized to the machine, or SLURM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dask
from distributed import Client, LocalCluster

from lamost_classify.host import available_cpus

from .arguments import ClusterArguments


# Dask's workers sample their own stacks every 10 ms for the dashboard's profile page; a batch run has
# nobody on that page, and the sampling thread takes the GIL from the one that classifies (bench/RESULTS.md).
# Batch systems' workers get the same from distributed.yaml.
WORKER_SETTINGS = {"distributed.worker.profile.enabled": False}

# A LocalCluster closes a nanny for good when no worker of its name is back 15 s after its worker died
# (distributed.deploy.lost-worker-timeout). A worker killed by a spectrum is restarted by its nanny, which
# takes longer under load or when it is killed again while the batch is split, and the run would lose that
# core for good. The nannies restart their workers themselves; a cluster left with none is graph.WorkersLost.
# Local only: a batch system's dead job must still be closed, so that adapt() can replace it.
LOCAL_CLUSTER_SETTINGS = {**WORKER_SETTINGS, "distributed.deploy.lost-worker-timeout": "1 day"}


def local_cluster_size() -> tuple[int, int]:
    """(workers, threads per worker): one single-threaded process per core. Reading is GIL-bound Python
    and numpy, inference uses torch's own threads, so processes, not threads, scale here."""
    return available_cpus(), 1


@contextlib.contextmanager
def open_client(cluster: ClusterArguments, log=print) -> Iterator[Client]:
    """A client of ``cluster.scheduler`` when given, else of a new cluster of ``cluster.kind``, closed on exit."""
    if cluster.scheduler:
        with Client(cluster.scheduler) as client:
            yield client
        return
    if cluster.kind == "slurm":
        from .slurm import slurm_cluster

        with slurm_cluster(cpu_jobs=cluster.cpu_jobs, gpu_jobs=cluster.gpu_jobs, adapt=cluster.adapt,
                           jobqueue_config=cluster.jobqueue or cluster.jobqueue_config,
                           wait_timeout=cluster.wait_timeout, log=log) as client:
            yield client
        return
    workers, threads = local_cluster_size()
    resources = None
    if _has_cuda():
        resources = {"GPU": 1}  # one GPU per machine: let every local worker share it
    # Scheduler and dashboard on the loopback only: a local cluster has no business on other interfaces.
    with dask.config.set(LOCAL_CLUSTER_SETTINGS), \
            LocalCluster(n_workers=cluster.workers or workers, threads_per_worker=threads, processes=True,
                         host="127.0.0.1", dashboard_address="127.0.0.1:0", resources=resources) as lc, \
            Client(lc) as client:
        yield client


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False
