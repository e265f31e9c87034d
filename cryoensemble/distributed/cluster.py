"""Dask clusters: the embedded default, an existing scheduler, or one worker per GPU."""

import contextlib
import logging
import os

import dask.config
import dask.utils

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


def _log_level() -> int:
    return logging.getLevelName(str(config.get("worker-log-level")).upper())


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
    # Nothing listens beyond this machine unless asked: scheduler, workers, dashboard.
    kwargs.setdefault("host", "127.0.0.1")
    kwargs.setdefault("dashboard_address", "127.0.0.1:0")
    kwargs.setdefault("silence_logs", _log_level())
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
    divided among the GPUs). Each process gets an equal share of its GPU's memory for
    JAX (`XLA_PYTHON_CLIENT_MEM_FRACTION`; nvCOMP draws on the same pool), so no number
    of processes can run the GPU out of memory; every process sizes its batches from
    its pool (`tasks.fitting_batch`) and retries a batch that runs out in halves.
    `threads_per_process` > 1 runs several tasks per process. With one process per GPU
    this is dask-cuda's `LocalCUDACluster` where installed; otherwise distributed's
    SpecCluster.
    """
    cores = os.cpu_count() or 1
    codec = device_codec_installed() and config.get("device-compression") == "auto"
    if not processes_per_gpu:
        per_gpu = max(1, cores // gpus)
        processes_per_gpu = min(per_gpu, DEVICE_CODEC_PROCESSES_PER_GPU) if codec else per_gpu
    threads_per_process = threads_per_process or 1
    env = dict(WORKER_ENVIRONMENT)
    share = _JAX_SHARE_OF_GPU / processes_per_gpu
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{share:.4f}"
    return _gpu_workers(gpus, processes_per_gpu, threads_per_process, env, **kwargs)


# Worker processes per GPU when batches are compressed on the device (benchmarks/ensemble.py).
DEVICE_CODEC_PROCESSES_PER_GPU = 4
# The fraction of a GPU's memory that its worker processes' JAX pools take together; the
# rest holds their CUDA contexts and libraries' workspaces outside the pools.
_JAX_SHARE_OF_GPU = 0.8


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
            kwargs.setdefault("host", "127.0.0.1")
            kwargs.setdefault("dashboard_address", "127.0.0.1:0")
            return LocalCUDACluster(CUDA_VISIBLE_DEVICES=visible, n_workers=gpus,
                                    threads_per_worker=threads_per_process, env=env, **kwargs)
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {
        f"gpu-{i}-{j}": {
            "cls": Nanny,
            "options": {"nthreads": threads_per_process, "host": "127.0.0.1",
                        "silence_logs": _log_level(),
                        "env": dict(env, CUDA_VISIBLE_DEVICES=str(i))},
        }
        for i in range(gpus)
        for j in range(processes_per_gpu)
    }
    scheduler = {"cls": Scheduler, "options": {
        "host": "127.0.0.1", "dashboard_address": kwargs.pop("dashboard_address", "127.0.0.1:0")}}
    kwargs.setdefault("silence_logs", _log_level())
    return SpecCluster(workers=workers, scheduler=scheduler, **kwargs)


@contextlib.contextmanager
def reporting_worker_losses(client, stream=None):
    """While inside, print one line to `stream` (stderr) for each worker that leaves the
    cluster unexpectedly, naming the tasks it was running (they are retried; a task that
    kills `distributed.scheduler.allowed-failures` workers fails the run)."""
    import sys

    stream = sys.stderr if stream is None else stream
    allowed = dask.config.get("distributed.scheduler.allowed-failures")

    def handler(event):
        _, message = event
        if not isinstance(message, dict) or message.get("action") != "remove-worker" \
                or message.get("expected"):
            return
        tasks = sorted(map(str, message.get("processing-tasks") or ()))
        running = f" while running {', '.join(tasks[:4])}" + ("..." if len(tasks) > 4 else "") \
            if tasks else ""
        print(f"cryoensemble: worker {message.get('worker')} died{running}; its tasks are "
              f"retried (a task that kills {allowed + 1} workers fails the run)",
              file=stream, flush=True)

    client.subscribe_topic("all", handler)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a lost scheduler has nothing to unsubscribe
            client.unsubscribe_topic("all")


def _client_for(address: str | None, scheduler_file: str | None, security):
    """A client of an existing scheduler; an unreachable one is one line, after
    `cryoensemble.scheduler-timeout`."""
    from distributed import Client

    from ..errors import InfrastructureError

    where = address or scheduler_file
    timeout = dask.utils.parse_timedelta(config.get("scheduler-timeout"))
    try:
        return Client(address, scheduler_file=scheduler_file, security=security,
                      timeout=timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as error:  # TypeError: TLS settings
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if where.startswith("tls://") and security is None:
            reason = "a tls:// scheduler needs --tls-ca-file, --tls-cert and --tls-key"
        raise InfrastructureError(
            f"cannot reach the Dask scheduler at {where} within {timeout:g} s ({reason}); "
            "check the address, that the scheduler runs and its TLS settings"
        ) from None


@contextlib.contextmanager
def connect(client=None, scheduler_address: str | None = None, gpus: int | None = None,
            n_workers: int | None = None, *, scheduler_file: str | None = None,
            security=None):
    """Yield a `distributed.Client`: the one given, one for `scheduler_address` or
    `scheduler_file` (with `security`, a `distributed.Security` for TLS), the current
    client (`distributed.default_client()`, e.g. one made earlier in a notebook) unless
    `gpus` or `n_workers` ask for a cluster of their own, or one for a new embedded
    cluster (closed on exit)."""
    from distributed import Client, default_client

    if client is None and not scheduler_address and not gpus and not n_workers:
        try:
            client = default_client()
        except ValueError:  # no current client
            client = None
    if client is not None:
        yield client
        return
    if scheduler_address or scheduler_file:
        with _client_for(scheduler_address, scheduler_file, security) as new_client:
            yield new_client
        return
    with make_local_cluster(n_workers=n_workers, gpus=gpus) as cluster, Client(cluster) as new_client:
        yield new_client
