"""The `cryoensemble.` keys of `dask.config`: their defaults, registered on import."""

import os

import dask.config
import yaml


def _load_defaults() -> dict:
    with open(os.path.join(os.path.dirname(__file__), "cryoensemble.yaml")) as handle:
        return yaml.safe_load(handle)


dask.config.update_defaults(_load_defaults())


def get(key: str):
    """The value of `cryoensemble.<key>` in this process's dask config."""
    return dask.config.get(f"cryoensemble.{key}")


def lease_ttl_seconds() -> float:
    """`cryoensemble.store.lease-ttl` in seconds (a number or a time string)."""
    from dask.utils import parse_timedelta

    return float(parse_timedelta(get("store.lease-ttl")))
