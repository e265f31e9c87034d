"""Render a trajectory with Dask workers started as SLURM jobs (pip install dask-jobqueue).

    python deploy/slurm_render.py top.psf traj.dcd out.zarr
"""

import sys

from dask_jobqueue import SLURMCluster
from distributed import Client

import cryoensemble
from cryoensemble.sources import TrajectorySource


def main(topology, trajectory, store, jobs=8):
    cluster = SLURMCluster(
        queue="gpu",            # edit for your site
        cores=8, processes=8,   # 8 single-threaded worker processes per job
        memory="64GB",
        walltime="02:00:00",
        job_extra_directives=["--gres=gpu:1"],
        job_script_prologue=["export XLA_PYTHON_CLIENT_PREALLOCATE=false"],
    )
    cluster.scale(jobs=jobs)
    with Client(cluster) as client:
        stack = cryoensemble.render_ensemble(
            TrajectorySource(topology, trajectory), shape=128, voxel_size=1.0, store=store,
            client=client, progress=True,
        )
        print(stack)


if __name__ == "__main__":
    main(*sys.argv[1:4])
