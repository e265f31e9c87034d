"""Render an MD trajectory with Dask workers started as SLURM jobs (dask-jobqueue).

    pip install 'cryoensemble[md,deploy]'
    python deploy/slurm.py traj.dcd --topology top.psf --out stack.zarr \\
        --shape 128 --voxel-size 1.0 --jobs 8 --queue gpu

Worker settings come from `jobqueue.yaml` beside this file (as defaults: your own
`~/.config/dask/jobqueue.yaml` and the options below win). The launcher submits the
jobs, waits until the workers have connected (the batch size is planned from the
workers present) and renders into the store; rerunning resumes it.
`--print-job-script` prints the batch script and exits without submitting.

The scheduler and workers talk TLS with certificates generated for this run
(distributed's `Security.temporary()`, written to the jobs' shared temporary folder), so
nothing else on the cluster's network can submit work to them; `--no-tls` turns it off.
"""

import argparse
import pathlib
import sys

import dask.config
import yaml

from cryoensemble.cli import parse_shape


CONFIG = pathlib.Path(__file__).with_name("jobqueue.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slurm.py", description=__doc__.splitlines()[0])
    parser.add_argument("trajectories", nargs="+", metavar="TRAJECTORY")
    parser.add_argument("--topology", required=True, help="PSF, PDB, GRO, TPR, ...")
    parser.add_argument("--out", required=True, help="zarr store directory (shared filesystem)")
    parser.add_argument("--shape", type=parse_shape, required=True, help="N or NZ,NY,NX")
    parser.add_argument("--voxel-size", type=float, required=True, help="A")
    parser.add_argument("--frames", help="START:STOP:STEP of trajectory frames")
    parser.add_argument("--select", default="all", help="MDAnalysis atom selection")
    parser.add_argument("--batch-size", type=int, help="conformations per task (default: auto)")
    parser.add_argument("--jobs", type=int, default=1, help="SLURM jobs to submit")
    parser.add_argument("--cores", type=int, help="cores per job")
    parser.add_argument("--processes", type=int, help="single-threaded worker processes per job")
    parser.add_argument("--memory", help="memory per job, e.g. 64GB")
    parser.add_argument("--walltime", help="HH:MM:SS")
    parser.add_argument("--queue", help="SLURM partition")
    parser.add_argument("--account", help="SLURM account")
    parser.add_argument("--gpus-per-job", type=int,
                        help="GPUs per job (--gres=gpu:N); 0 for CPU-only jobs")
    parser.add_argument("--config", type=pathlib.Path, default=CONFIG,
                        help="jobqueue yaml used as defaults (default: deploy/jobqueue.yaml)")
    parser.add_argument("--min-workers", type=int,
                        help="workers to wait for before planning (default: all of them)")
    parser.add_argument("--wait-timeout", type=float, default=3600.0,
                        help="seconds to wait for the workers (default 3600)")
    parser.add_argument("--print-job-script", action="store_true",
                        help="print the batch script and exit")
    parser.add_argument("--no-tls", action="store_true",
                        help="plain TCP between scheduler and workers (default: TLS with "
                        "certificates generated for this run)")
    return parser


def cluster_options(args) -> dict:
    """`SLURMCluster` keyword arguments: the yaml's settings, then the options given."""
    with open(args.config) as f:
        dask.config.update_defaults(yaml.safe_load(f))
    options = {
        key: value for key, value in {
            "cores": args.cores, "processes": args.processes, "memory": args.memory,
            "walltime": args.walltime, "queue": args.queue, "account": args.account,
        }.items() if value is not None
    }
    if args.gpus_per_job is not None:
        directives = [d for d in dask.config.get("jobqueue.slurm.job-extra-directives")
                      if not d.startswith("--gres=gpu")]
        if args.gpus_per_job:
            directives.append(f"--gres=gpu:{args.gpus_per_job}")
        options["job_extra_directives"] = directives
    return options


def make_cluster(args, **kwargs):
    """The `SLURMCluster` (nothing submitted until it is scaled)."""
    from dask_jobqueue import SLURMCluster
    from distributed import Security

    if not args.no_tls:
        kwargs.setdefault("security", Security.temporary())
        kwargs.setdefault("protocol", "tls://")
    return SLURMCluster(**cluster_options(args), **kwargs)


def workers_expected(args) -> int:
    """All the worker processes of all the jobs, unless `--min-workers` says fewer."""
    processes = args.processes or dask.config.get("jobqueue.slurm.processes") or 1
    return args.min_workers or args.jobs * processes


def render(args, cluster):
    """Wait for `args.min_workers` workers of `cluster`, then render into `args.out`."""
    from distributed import Client

    import cryoensemble
    from cryoensemble.sources import TrajectorySource

    source = TrajectorySource(args.topology, args.trajectories, frames=args.frames,
                              selection=args.select)
    n_workers = args.min_workers or 1
    with Client(cluster) as client:
        print(f"dashboard: {client.dashboard_link}; waiting for {n_workers} workers",
              file=sys.stderr, flush=True)
        try:
            client.wait_for_workers(n_workers, timeout=args.wait_timeout)
        except TimeoutError:
            present = len(client.scheduler_info()["workers"])
            raise TimeoutError(
                f"--wait-timeout: {present} of {n_workers} workers connected after "
                f"{args.wait_timeout:g} s (check squeue and the job logs)"
            ) from None
        return cryoensemble.render_ensemble(
            source, shape=args.shape, voxel_size=args.voxel_size, store=args.out,
            client=client, batch_size=args.batch_size, progress=True,
        )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.voxel_size > 0:
        raise SystemExit(f"slurm.py: --voxel-size must be > 0 (A); got {args.voxel_size}")
    if args.print_job_script:
        with make_cluster(args) as cluster:
            print(cluster.job_script())
        return 0
    with make_cluster(args) as cluster:
        args.min_workers = workers_expected(args)
        cluster.scale(jobs=args.jobs)
        stack = render(args, cluster)
        print(stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
