"""Dask layer: clusters, worker tasks and the ensemble render."""

from .cluster import connect as connect, make_local_cluster as make_local_cluster
from .ensemble import RenderPlan as RenderPlan, render_ensemble as render_ensemble


__all__ = ["RenderPlan", "connect", "make_local_cluster", "render_ensemble"]
