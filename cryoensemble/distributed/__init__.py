"""Dask layer: clusters, worker tasks and the ensemble render."""

from . import config as config  # registers the `cryoensemble.` dask config defaults
from ._checks import check_positions_in_box as check_positions_in_box
from .cluster import connect as connect, make_local_cluster as make_local_cluster
from .ensemble import (
    RenderPlan as RenderPlan,
    RenderReport as RenderReport,
    plan_render as plan_render,
    render_ensemble as render_ensemble,
    run_plan as run_plan,
)
from .tasks import RENDERERS as RENDERERS, WorkerState as WorkerState, worker_state as worker_state


__all__ = [
    "RENDERERS",
    "RenderPlan",
    "RenderReport",
    "WorkerState",
    "check_positions_in_box",
    "connect",
    "make_local_cluster",
    "plan_render",
    "render_ensemble",
    "run_plan",
    "worker_state",
]
