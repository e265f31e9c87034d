"""What viewers and Dask users expect of a store and of render_ensemble: OME-Zarr metadata
read by the OME-Zarr readers, UDUNITS units, MRC export read back by mrcfile, a lazy
Dataset for store=None and the current distributed client reused."""

import json

import numpy as np
import pytest
import xarray as xr

from helpers import DATA, relative_l2
from cryoensemble.cli import main
from cryoensemble.constants import PengScatteringFactorParameters
from cryoensemble.distributed import render_ensemble
from cryoensemble.simulator import GaussianMixtureRenderFn, GaussianMixtureVolume
from cryoensemble.sources import MultiModelSource


SHAPE, VOXEL_SIZE = (30, 32, 34), 1.25


@pytest.fixture(scope="module")
def client(process_cluster):
    from distributed import Client

    with Client(process_cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def source():
    return MultiModelSource(DATA / "nmr_neopetrosiamide.pdb")


@pytest.fixture(scope="module")
def store(client, source, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stores") / "nmr.zarr")
    render_ensemble(source, shape=SHAPE, voxel_size=VOXEL_SIZE, store=path, client=client)
    return path


def direct_render(positions, atomic_numbers):
    volume = GaussianMixtureVolume.from_tabulated_parameters(
        positions, PengScatteringFactorParameters(atomic_numbers))
    return np.asarray(GaussianMixtureRenderFn(SHAPE, VOXEL_SIZE)(volume))


def test_ome_zarr_readers_see_potential_in_angstrom(store):
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader
    from ome_zarr_models.v05 import Image

    # The OME-Zarr models validate the group against NGFF 0.5 (zarr v3).
    image = Image.from_zarr(zarr.open_group(store, mode="r"))
    assert image.attributes.ome.multiscales[0].datasets[0].path == "potential"

    # ome-zarr-py's reader (napari-ome-zarr's) finds one image node: the potential stack.
    nodes = [n for n in Reader(parse_url(store))() if n.load(Multiscales)]
    assert len(nodes) == 1
    node = nodes[0]
    assert node.data[0].shape == (24, *SHAPE)
    axes = node.metadata["axes"]
    assert [a["name"] for a in axes] == ["conformation", "z", "y", "x"]
    assert [a.get("unit") for a in axes[1:]] == ["angstrom"] * 3
    scale, translation = node.metadata["coordinateTransformations"][0]
    # The physical position of each voxel index is the store's own coordinate axis,
    # and voxel n // 2 sits at 0 A.
    dataset = xr.open_zarr(store)
    for k, axis in enumerate("zyx", start=1):
        index = np.arange(SHAPE[k - 1])
        physical = index * scale["scale"][k] + translation["translation"][k]
        np.testing.assert_allclose(physical, dataset[axis].values, atol=1e-12)
        assert physical[SHAPE[k - 1] // 2] == 0.0
    np.testing.assert_array_equal(node.data[0][3].compute(), dataset["potential"][3].values)


def test_units_are_udunits_and_conventions_cf(store):
    dataset = xr.open_zarr(store)
    assert dataset["potential"].attrs["units"] == "angstrom-2"
    assert all(dataset[a].attrs["units"] == "angstrom" for a in "zyx")
    assert dataset.attrs["Conventions"].startswith("CF-")
    # No attribute anywhere spells a unit "A" (ampere in UDUNITS and pint).
    for variable in dataset.variables.values():
        assert variable.attrs.get("units") not in ("A", "A^-2")


def test_export_mrc_overlays_the_model(store, source, tmp_path):
    import mrcfile

    out = tmp_path / "maps"
    assert main(["export", store, "--mrc", str(out), "--conformations", "0,5-6"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["conformation_00000.mrc", "conformation_00005.mrc", "conformation_00006.mrc"]
    centre = source.read(0, 1)[0].astype(np.float64).mean(axis=0)
    parameters = json.loads(xr.open_zarr(store).attrs["cryoensemble_parameters"])
    np.testing.assert_allclose(parameters["centre"], centre, atol=1e-6)
    peng = PengScatteringFactorParameters(source.atomic_numbers)
    weights = np.asarray(peng.a, np.float64).sum(axis=1)  # f(0) of each atom: its integral
    for index in (0, 5, 6):
        with mrcfile.open(out / f"conformation_{index:05d}.mrc") as mrc:
            data = np.asarray(mrc.data)
            assert data.shape == SHAPE and data.dtype == np.float32
            for axis in "xyz":
                assert float(mrc.voxel_size[axis]) == pytest.approx(VOXEL_SIZE)
            origin = np.array([float(mrc.header.origin[a]) for a in "xyz"])
        positions = source.read(index, index + 1)[0].astype(np.float64)
        reference = direct_render((positions - centre).astype(np.float32), source.atomic_numbers)
        assert relative_l2(data, reference) <= 1e-6
        # Physical invariant: the map's centroid, placed by the header as ChimeraX does
        # (origin + index * voxel size), is the f(0)-weighted centroid of the file's atoms.
        nz, ny, nx = SHAPE
        grids = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        total = data.astype(np.float64).sum()
        centroid_xyz = [origin[a] + VOXEL_SIZE * (data * grids[2 - a]).sum() / total
                        for a in range(3)]
        expected = (weights[:, None] * positions).sum(axis=0) / weights.sum()
        np.testing.assert_allclose(centroid_xyz, expected, atol=0.02)


def test_export_refuses_bad_requests_in_one_line(store, tmp_path, capsys):
    assert main(["export", store, "--mrc", str(tmp_path / "a"), "--conformations", "3-1"]) == 2
    assert main(["export", store, "--mrc", str(tmp_path / "a"), "--conformations", "24"]) == 3  # out of range: input
    assert main(["export", store, "--relion", str(tmp_path / "r")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3
    assert "3-1" in errors[0] and "out of range" in errors[1] and "--mrc" in errors[2]
    assert not (tmp_path / "a").exists() and not (tmp_path / "r").exists()


def test_lazy_render_equals_the_store_and_uses_the_current_client(client, source, store):
    from distributed import get_task_stream

    lazy = render_ensemble(source, shape=SHAPE, voxel_size=VOXEL_SIZE, store=None, batch_size=5)
    assert lazy["potential"].chunks[0] == (5, 5, 5, 5, 4)
    stored = xr.open_zarr(store)
    assert lazy.attrs["cryoensemble_parameters"] == stored.attrs["cryoensemble_parameters"]
    np.testing.assert_array_equal(lazy["model"], stored["model"])
    with get_task_stream(client) as stream:  # computed by the current client's workers
        mean = lazy["potential"].isel(conformation=slice(3, 12)).mean("conformation").compute()
    names = [t["key"][0] if isinstance(t["key"], tuple) else t["key"] for t in stream.data]
    assert any("render_block" in name for name in names)
    expected = stored["potential"].isel(conformation=slice(3, 12)).mean("conformation")
    assert relative_l2(mean.values, expected.values) <= 1e-6


def test_render_without_client_uses_the_current_one(client, source, tmp_path, monkeypatch):
    import distributed

    def no_second_cluster(*args, **kwargs):
        raise AssertionError("a second LocalCluster was started")

    monkeypatch.setattr(distributed, "LocalCluster", no_second_cluster)
    path = str(tmp_path / "current.zarr")
    before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    dataset = render_ensemble(MultiModelSource(DATA / "nmr_neopetrosiamide.pdb"), shape=16,
                              voxel_size=2.0, store=path)
    assert int(dataset["rendered"].sum()) == 24
    after = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert after > before  # the render's tasks ran on this client's scheduler


def test_export_dispatches_a_particle_store_to_relion(client, source, tmp_path, capsys):
    import starfile

    from cryoensemble.particles import simulate_images

    particles = str(tmp_path / "particles.zarr")
    simulate_images(source, n_images=6, box=16, pixel_size=2.0, store=particles, client=client,
                    images_per_chunk=3)
    assert main(["export", particles, "--mrc", str(tmp_path / "maps")]) == 2
    assert "--relion" in capsys.readouterr().err
    assert main(["export", particles, "--relion", str(tmp_path / "relion")]) == 0
    star = starfile.read(tmp_path / "relion" / "particles.star")
    assert len(star["particles"]) == 6
