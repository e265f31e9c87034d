"""Dask clusters: the embedded default, an existing scheduler, or one worker per GPU."""

import contextlib
import logging
import os


# Each worker is one process with one JAX thread: Dask provides the parallelism, and JAX
# must not grab all GPU memory up front (several workers may share a host).
WORKER_ENVIRONMENT = {
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_CPU_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def make_local_cluster(n_workers: int | None = None, gpus: int | None = None, **kwargs):
    """An embedded cluster sized to this machine.

    **Arguments:**

    - `n_workers`: CPU worker processes (default: one per core).
    - `gpus`: if set, one worker per GPU instead: dask-cuda's `LocalCUDACluster` (extra
      `gpu`), or an equivalent `SpecCluster` where dask-cuda is not installed.
    - `kwargs`: passed to the cluster class.
    """
    if gpus:
        return _gpu_cluster(int(gpus), **kwargs)
    from distributed import LocalCluster

    env = dict(WORKER_ENVIRONMENT, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
               XLA_FLAGS=_CPU_XLA_FLAGS, CRYOENSEMBLE_CODEC_THREADS="1")
    kwargs.setdefault("dashboard_address", ":0")
    return LocalCluster(
        n_workers=n_workers or os.cpu_count(), threads_per_worker=1, processes=True, env=env,
        **kwargs,
    )


# Tasks in flight per GPU worker: while one renders, others copy to the host, compress
# and write, so the device is not idle during I/O.
THREADS_PER_GPU = 4


def _gpu_cluster(gpus: int, **kwargs):
    """One worker process per GPU, each seeing only its own device, running
    `THREADS_PER_GPU` tasks at once.

    dask-cuda's LocalCUDACluster where it is installed (it also pins CPU affinity and
    knows NVLink topologies); otherwise the same layout from distributed's SpecCluster.
    """
    # A GPU worker leaves the host's cores to compression.
    codec_threads = max(1, (os.cpu_count() or 1) // gpus)
    env = dict(WORKER_ENVIRONMENT, CRYOENSEMBLE_CODEC_THREADS=str(codec_threads))
    visible = ",".join(str(i) for i in range(gpus))
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None
    if LocalCUDACluster is not None:
        return LocalCUDACluster(
            CUDA_VISIBLE_DEVICES=visible, n_workers=gpus, threads_per_worker=THREADS_PER_GPU,
            env=env, **kwargs
        )
    from distributed import Nanny, Scheduler, SpecCluster

    kwargs.setdefault("dashboard_address", ":0")
    workers = {
        f"gpu-{i}": {
            "cls": Nanny,
            "options": {"nthreads": THREADS_PER_GPU, "host": "127.0.0.1",
                        "silence_logs": logging.WARNING,
                        "env": dict(env, CUDA_VISIBLE_DEVICES=str(i))},
        }
        for i in range(gpus)
    }
    scheduler = {"cls": Scheduler, "options": {
        "host": "127.0.0.1", "dashboard_address": kwargs.pop("dashboard_address")}}
    kwargs.setdefault("silence_logs", logging.WARNING)
    return SpecCluster(workers=workers, scheduler=scheduler, **kwargs)


@contextlib.contextmanager
def connect(client=None, scheduler_address: str | None = None, gpus: int | None = None,
            n_workers: int | None = None):
    """Yield a `distributed.Client`: the one given, one for `scheduler_address`, or one
    for a new embedded cluster (closed on exit)."""
    from distributed import Client

    if client is not None:
        yield client
        return
    if scheduler_address:
        with Client(scheduler_address) as new_client:
            yield new_client
        return
    with make_local_cluster(n_workers=n_workers, gpus=gpus) as cluster, Client(cluster) as new_client:
        yield new_client
