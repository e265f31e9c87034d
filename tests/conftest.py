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


@pytest.fixture
def x64():
    """Run a test with JAX float64 enabled, restoring the setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
