"""Dask clusters: the embedded default, an existing scheduler, or one worker per GPU."""

import contextlib
import logging
import os

from . import config


# Each worker is one process with one JAX thread: Dask provides the parallelism, and JAX
# must not grab all GPU memory up front (several workers may share a host).
WORKER_ENVIRONMENT = {
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_CPU_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def make_local_cluster(n_workers: int | None = None, gpus: int | None = None,
                       processes_per_gpu: int | None = None,
                       threads_per_process: int | None = None, **kwargs):
    """An embedded cluster sized to this machine.

    **Arguments:**

    - `n_workers`: CPU worker processes (default: one per core).
    - `gpus`: if set, GPU workers instead: `processes_per_gpu` processes per GPU, each
      running `threads_per_process` tasks at once (see `_gpu_cluster`).
    - `kwargs`: passed to the cluster class.
    """
    if gpus:
        return _gpu_cluster(int(gpus), processes_per_gpu, threads_per_process, **kwargs)
    from distributed import LocalCluster

    env = dict(WORKER_ENVIRONMENT, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
               XLA_FLAGS=_CPU_XLA_FLAGS)
    kwargs.setdefault("dashboard_address", ":0")
    return LocalCluster(
        n_workers=n_workers or os.cpu_count(), threads_per_worker=1, processes=True,
        env=env, **kwargs,
    )


def _gpu_cluster(gpus: int, processes_per_gpu: int | None = None,
                 threads_per_process: int | None = None, **kwargs):
    """Worker processes that each see one GPU.

    With nvCOMP installed, batches are compressed on the device and the host only
    checksums and stores compressed objects, so a few processes per GPU keep it busy
    (`DEVICE_CODEC_PROCESSES_PER_GPU`, from benchmarks/ensemble.py); without it, the
    host compresses, so every core runs one single-threaded worker process (the cores
    divided among the GPUs). With device compression each process gets an equal share
    of its GPU's memory for JAX (`XLA_PYTHON_CLIENT_MEM_FRACTION`), with room left
    outside JAX's pool for nvCOMP's buffers; every process sizes its batches from its
    pool (`tasks.fitting_batch`) and retries a batch that runs out in halves. `threads_per_process` > 1 runs several
    tasks per process. With one process per GPU this is dask-cuda's `LocalCUDACluster`
    where installed; otherwise distributed's SpecCluster.
    """
    cores = os.cpu_count() or 1
    codec = device_codec_installed() and config.get("device-compression") == "auto"
    if not processes_per_gpu:
        per_gpu = max(1, cores // gpus)
        processes_per_gpu = min(per_gpu, DEVICE_CODEC_PROCESSES_PER_GPU) if codec else per_gpu
    threads_per_process = threads_per_process or 1
    env = dict(WORKER_ENVIRONMENT)
    if codec:
        share = _JAX_SHARE_WITH_CODEC / processes_per_gpu
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{share:.4f}"
    return _gpu_workers(gpus, processes_per_gpu, threads_per_process, env, **kwargs)


# Worker processes per GPU when batches are compressed on the device: 16 per H100 ran
# nvCOMP out of device memory (its buffers live outside JAX's pools); 4 did not at 96^3.
DEVICE_CODEC_PROCESSES_PER_GPU = 4
# With device compression, the fraction of a GPU's memory that its worker processes' JAX
# pools take together: the rest holds CUDA contexts and nvCOMP's output and scratch
# buffers (of the order of the batch itself, more for small chunks).
_JAX_SHARE_WITH_CODEC = 0.5


def device_codec_installed() -> bool:
    """Whether nvCOMP's Python package is installed (checked without starting CUDA: the
    client never initializes a GPU)."""
    import importlib.util

    try:
        return importlib.util.find_spec("nvidia.nvcomp") is not None
    except (ImportError, ValueError):
        return False


def _gpu_workers(gpus, processes_per_gpu, threads_per_process, env, **kwargs):
    if processes_per_gpu == 1:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            LocalCUDACluster = None
        if LocalCUDACluster is not None:
            visible = ",".join(str(i) for i in range(gpus))
            return LocalCUDACluster(CUDA_VISIBLE_DEVICES=visible, n_workers=gpus,
                                    threads_per_worker=threads_per_process, env=env, **kwargs)
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {
        f"gpu-{i}-{j}": {
            "cls": Nanny,
            "options": {"nthreads": threads_per_process, "host": "127.0.0.1",
                        "silence_logs": logging.WARNING,
                        "env": dict(env, CUDA_VISIBLE_DEVICES=str(i))},
        }
        for i in range(gpus)
        for j in range(processes_per_gpu)
    }
    scheduler = {"cls": Scheduler, "options": {
        "host": "127.0.0.1", "dashboard_address": kwargs.pop("dashboard_address", ":0")}}
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
