"""The API reference builds offline from the docstrings and documents every public name."""

import importlib
import inspect
import pathlib
import re
import subprocess
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = ["simulator", "constants", "coordinates", "ndimage", "io", "sources", "store",
           "distributed", "examples"]

pytest.importorskip("mkdocstrings_handlers.python", reason="docs extra not installed")


def public_names(module) -> set[str]:
    """`__all__`, or the classes and functions the module itself defines."""
    if hasattr(module, "__all__"):
        return set(module.__all__)
    return {
        name for name, value in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith(module.__name__)
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_every_module_has_a_page_with_every_public_name(site):
    for name in MODULES:
        page = site / "api" / name / "index.html"
        assert page.is_file(), f"no API page for cryoensemble.{name}"
        ids = set(re.findall(r'id="(cryoensemble[\w.]*)"', page.read_text()))
        module = importlib.import_module(f"cryoensemble.{name}")
        missing = {n for n in public_names(module) if f"cryoensemble.{name}.{n}" not in ids}
        assert not missing, f"cryoensemble.{name}: undocumented on its page: {sorted(missing)}"


def test_docstrings_rendered_and_changelog_included(site):
    simulator = (site / "api" / "simulator" / "index.html").read_text()
    # The `**Arguments:**` sections of the docstrings reach the page as Markdown.
    assert "<strong>Arguments:</strong>" in simulator
    changelog = (site / "changelog" / "index.html").read_text()
    assert "Keep a Changelog" in changelog and "0.1.0" in changelog
