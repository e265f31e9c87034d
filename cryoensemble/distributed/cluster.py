"""Dask clusters: the embedded default, an existing scheduler, or one worker per GPU."""

import contextlib
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
    - `gpus`: if set, dask-cuda's `LocalCUDACluster` with one worker per GPU instead
      (extra `gpu`).
    - `kwargs`: passed to the cluster class.
    """
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ImportError("--gpus needs dask-cuda: pip install 'cryoensemble[gpu]'") from None
        visible = ",".join(str(i) for i in range(int(gpus)))
        # A GPU worker leaves the host's cores to compression.
        codec_threads = max(1, (os.cpu_count() or 1) // int(gpus))
        return LocalCUDACluster(
            CUDA_VISIBLE_DEVICES=visible, n_workers=int(gpus), threads_per_worker=1,
            env=dict(WORKER_ENVIRONMENT, CRYOENSEMBLE_CODEC_THREADS=str(codec_threads)),
            **kwargs,
        )
    from distributed import LocalCluster

    env = dict(WORKER_ENVIRONMENT, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
               XLA_FLAGS=_CPU_XLA_FLAGS, CRYOENSEMBLE_CODEC_THREADS="1")
    kwargs.setdefault("dashboard_address", ":0")
    return LocalCluster(
        n_workers=n_workers or os.cpu_count(), threads_per_worker=1, processes=True, env=env,
        **kwargs,
    )


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
