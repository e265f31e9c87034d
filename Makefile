# `make demo` and `make test` set up their own virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,md]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# The AdK closed->open trajectory (98 frames) into a zarr stack on an embedded LocalCluster.
# The files come with the MDAnalysisTests package (the `examples` extra, in `test`).
# Rerunning resumes: only conformations missing from the store are rendered.
EXAMPLE = $(PY) -c 'import sys; from cryoensemble.examples import example_path; print(example_path(sys.argv[1]))'
demo: $(STAMP)
	$(PY) -m cryoensemble render "$$($(EXAMPLE) adk_dims.dcd)" --topology "$$($(EXAMPLE) adk.psf)" --out out/adk_dims.zarr --shape 96 --voxel-size 1.0
	$(PY) -m cryoensemble info out/adk_dims.zarr

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/render.py

clean:
	rm -rf $(VENV) out
