"""Fixtures; shared paths and references live in `helpers` (re-exported here for the
test modules that import them from conftest)."""

import jax
import pytest

from helpers import (  # noqa: F401 - re-exported
    DATA,
    GOLDEN,
    REFERENCE,
    ROOT,
    SHARED,
    TEST_DATA,
    direct_voxel_average,
    relative_l2,
)


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """One persistent JAX compilation cache for the whole run, in pytest's temporary
    folder, every compiled function kept whatever its compile time or size. This process
    uses it, and the Dask worker processes, command-line subprocesses and notebook kernels
    that the tests start inherit it through JAX's environment variables: what one process
    compiled, the next one loads. Each run starts with it empty, as CI does."""
    settings = {
        "jax_compilation_cache_dir": str(tmp_path_factory.mktemp("jax-compilation-cache")),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": -1,
    }
    previous = {name: getattr(jax.config, name) for name in settings}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name.upper(), str(value))
            jax.config.update(name, value)
        yield settings["jax_compilation_cache_dir"]
    for name, value in previous.items():
        jax.config.update(name, value)


@pytest.fixture(scope="session")
def process_cluster():
    """An embedded cluster of two worker processes shared by the modules that render
    through one without killing its workers (each module connects its own client)."""
    from cryoensemble.distributed import make_local_cluster

    with make_local_cluster(n_workers=2) as cluster:
        yield cluster


@pytest.fixture
def x64():
    """Run a test with JAX float64 enabled, restoring the setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
