"""The store on a local disk and on a real S3 endpoint (moto's server on 127.0.0.1):
render, resume, kill -9 during creation and mid-run, a second writer, corrupted and lost
objects, verify and repair. Each case ends with a store equal to a clean run's, or with a
one-line refusal."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr
import zarr

from conftest import DATA
from cryoensemble.cli import main as cli_main
from cryoensemble.distributed import plan_render, render_ensemble, run_plan
from cryoensemble.sources import MorphSource, MultiModelSource
from cryoensemble.store import (
    StoreLayout,
    StoreLeaseError,
    StoreLocation,
    StoreLocationError,
    StoreMismatchError,
    as_location,
    done_conformations,
    open_store,
    open_writer,
    prepare_store,
    verify_store,
)
from s3server import CREDENTIALS, moto_server


NMR = DATA / "nmr_neopetrosiamide.pdb"
KWARGS = dict(shape=26, voxel_size=1.0)


def subprocess_env() -> dict:
    """This process's environment (read when a subprocess starts: the test session's
    fixtures set some of it), for a CPU-only JAX that allocates as it goes."""
    return dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def client(process_cluster):
    from distributed import Client

    with Client(process_cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def s3():
    """(endpoint URL, storage options, bucket) of a fresh S3 endpoint."""
    import s3fs

    with moto_server() as endpoint:
        options = {"endpoint_url": endpoint, "key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                   "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
        s3fs.S3FileSystem(**options).mkdir("bucket")
        yield endpoint, options, "bucket"


class Backend:
    """Fresh store locations on one backend, and that backend's one clean render of the
    NMR ensemble (made on first use), copied object by object for tests that damage it."""

    def __init__(self, new_location, client):
        self.new_location = new_location
        self.client = client
        self._clean = None

    def clean(self) -> StoreLocation:
        if self._clean is None:
            location = self.new_location()
            render_ensemble(MultiModelSource(NMR), store=location, client=self.client, **KWARGS)
            self._clean = location
        return self._clean

    def copy_of_clean(self) -> StoreLocation:
        source, copy = self.clean(), self.new_location()
        for key in source.list_keys():
            copy.put(key, source.get(key))
        return copy


@pytest.fixture(scope="module")
def backends(client, tmp_path_factory, request):
    counter = iter(range(10000))
    folder = tmp_path_factory.mktemp("stores")

    def local():
        return StoreLocation.from_url(str(folder / f"s{next(counter)}.zarr"))

    def s3():
        _, options, bucket = request.getfixturevalue("s3")
        return StoreLocation.from_url(f"s3://{bucket}/s{next(counter)}.zarr", options)

    return {"local": Backend(local, client), "s3": Backend(s3, client)}


@pytest.fixture(params=["local", "s3"])
def backend(request, backends) -> Backend:
    return backends[request.param]


@pytest.fixture
def place(backend):
    """A factory of fresh store locations on one backend."""
    return backend.new_location


@pytest.fixture(scope="module")
def reference(backends):
    """The clean render on a local disk."""
    return open_store(backends["local"].clean())["potential"].values


def assert_equals_clean(location, reference):
    dataset = open_store(location)
    np.testing.assert_array_equal(dataset["rendered"].values, 1)
    np.testing.assert_array_equal(dataset["potential"].values, reference)
    assert verify_store(location).ok


def rendered_now(source, location, client, **kwargs) -> list[int]:
    """Resume `location`; the conformations that had to be rendered."""
    return run_plan(plan_render(source, store=location, **dict(KWARGS, **kwargs)), client).rendered


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """The command line, run in this process (its own LocalCluster where it makes one;
    what it reads outside that cluster, here, not on the test's workers)."""
    import dask

    capsys.readouterr()
    with dask.config.set(scheduler="synchronous"):
        code = cli_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def cli_store_args(location):
    options = location.storage_options
    return [location.url] + [f"--storage-option={k}={v}" for k, v in options.items()]


def shard_key(location, i, s=0):
    return f"potential/c/{i}/{s}/0/0"


def test_render_resume_sharded_plain_zarr(client, backend, reference):
    location = backend.clean()  # rendered on this backend
    np.testing.assert_array_equal(open_store(location)["potential"].values, reference)
    # Plain zarr v3: one shard object per conformation, crc32c after zstd in each chunk.
    group = zarr.open_group(location.zarr_store(read_only=True), mode="r")
    metadata = group["potential"].metadata.to_dict()
    sharding = metadata["codecs"][0]
    assert sharding["name"] == "sharding_indexed"
    assert [c["name"] for c in sharding["configuration"]["codecs"]] == ["bytes", "zstd", "crc32c"]
    shards = [k for k in location.list_keys("potential/c")]
    assert sorted(shards) == sorted(shard_key(location, i) for i in range(24))
    # Resume renders nothing; a lost shard is rendered again, exactly that one.
    copy = backend.copy_of_clean()
    source = MultiModelSource(NMR)
    assert rendered_now(source, copy, client) == []
    copy.delete([shard_key(copy, 7)])
    assert rendered_now(source, copy, client) == [7]
    assert_equals_clean(copy, reference)


def test_write_slabs_partial_shards_and_empty_shards(place):
    """Slab writes, the grid's last partial shard and all-zero shards (no object) read back
    exactly through plain xarray; empty shards count as present, lost ones do not."""
    location = place()
    rng = np.random.default_rng(0)
    volumes = np.zeros((4, 20, 12, 14), np.float32)
    volumes[:, 4:14, 2:10, 3:11] = rng.random((4, 10, 8, 8)) ** 4
    layout = StoreLayout(4, (20, 12, 14), "float32", 8)  # shards of 8, 8, 4 planes
    parameters = {"voxel_size": 1.0, "shape": [20, 12, 14], "dtype": "float32",
                  "n_conformations": 4, "z_chunk": 8}
    assert prepare_store(location, layout, parameters, {}, {})
    writer = open_writer(location)
    writer.write_volumes(0, volumes[:2])
    writer.write_volumes(2, volumes[2:, :8], z_start=0)
    writer.write_volumes(2, volumes[2:, 16:], z_start=16)  # zeros: no object, recorded
    writer.write_volumes(2, volumes[2:, 8:16], z_start=8)
    with pytest.raises(ValueError, match="whole shards"):
        writer.write_volumes(3, volumes[3:, 4:12], z_start=4)
    writer.mark_rendered(0, 4)
    assert not any(k.startswith("potential/c/2/2") for k in location.list_keys("potential/c"))
    np.testing.assert_array_equal(
        xr.open_zarr(location.zarr_store(read_only=True))["potential"].values, volumes)
    assert done_conformations(location, layout).all()
    location.delete([shard_key(location, 1, 1)])
    np.testing.assert_array_equal(done_conformations(location, layout), [1, 0, 1, 1])
    assert set(verify_store(location).bad) == {1}
    assert not prepare_store(location, layout, parameters, {}, {})  # same parameters: kept


# A render killed (SIGKILL, no cleanup) at its k-th metadata write while creating the store;
# a local write is left torn (a temporary file holding half the bytes), as a crash would.
KILL_DURING_CREATION = textwrap.dedent("""
    import os, signal, sys, json
    from distributed import Client
    from cryoensemble.sources import MultiModelSource
    from cryoensemble.store import StoreLocation
    from cryoensemble.distributed import render_ensemble

    url, options, k = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    calls = []
    original = StoreLocation.put

    def put(self, key, data):
        if key != "cryoensemble-lease.json":
            if len(calls) == k:
                if self.is_local:
                    path = os.path.join(self.url, *key.split("/"))
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path + ".torn.partial", "wb") as handle:
                        handle.write(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            calls.append(key)
        return original(self, key, data)

    StoreLocation.put = put
    with Client(processes=False, n_workers=1, threads_per_worker=1) as client:
        render_ensemble(MultiModelSource(sys.argv[4]), shape=26, voxel_size=1.0, store=url,
                        storage_options=options, client=client)
    print("finished", len(calls))
""")


def test_kill_during_creation_then_rerun_finishes(client, place, reference, tmp_path):
    script = tmp_path / "kill_creation.py"
    script.write_text(KILL_DURING_CREATION)
    # The 15 writes of this creation: the identity, 13 metadata documents and coordinate
    # chunks, the root zarr.json last. Killed after the identity and right before the root
    # metadata here; midway in the overwrite test; before the identity (only a lease) in
    # the second-writer test.
    runs = {}
    for k in (1, 14):  # side by side: each is mostly start-up
        location = place()
        runs[k] = location, subprocess.Popen(
            [sys.executable, str(script), location.url, json.dumps(location.storage_options),
             str(k), str(NMR)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    for k, (location, run) in runs.items():
        out, err = run.communicate(timeout=300)
        assert run.returncode == -signal.SIGKILL, (k, out, err[-2000:])
        assert (location.get("zarr.json") is None) and (location.get("cryoensemble.json") is not None)
        render_ensemble(MultiModelSource(NMR), store=location, client=client, **KWARGS)
        assert_equals_clean(location, reference)
        assert not [key for key in location.list_keys() if key.endswith(".partial")]


def test_lost_metadata_is_restored_without_rendering(client, backend, reference):
    location = backend.copy_of_clean()
    location.delete(["zarr.json", "potential/zarr.json", "rendered/zarr.json"])
    report = verify_store(location)
    assert not report.ok and any("zarr.json" in p for p in report.metadata)
    assert rendered_now(MultiModelSource(NMR), location, client) == []
    assert_equals_clean(location, reference)


def test_overwrite_replaces_half_made_store_never_a_foreign_one(client, place, reference, tmp_path):
    location = place()
    script = tmp_path / "kill_creation.py"
    script.write_text(KILL_DURING_CREATION)
    subprocess.run([sys.executable, str(script), location.url,
                    json.dumps(location.storage_options), "8", str(NMR)], timeout=300, env=subprocess_env(),
                   capture_output=True)
    source = MultiModelSource(NMR)
    with pytest.raises(StoreMismatchError, match="shape") as info:
        render_ensemble(source, store=location, client=client, shape=20, voxel_size=1.0,
                        outside="clip")
    assert "\n" not in str(info.value)
    render_ensemble(source, store=location, client=client, overwrite=True, **KWARGS)
    assert_equals_clean(location, reference)
    # A folder or prefix holding anything else is never touched, overwrite or not.
    foreign = place()
    foreign.put("notes.txt", b"keep me")
    with pytest.raises(StoreMismatchError, match="not a cryoensemble store"):
        render_ensemble(source, store=foreign, client=client, overwrite=True, **KWARGS)
    assert foreign.list_keys() == ["notes.txt"] and foreign.get("notes.txt") == b"keep me"


HOLD_LEASE = textwrap.dedent("""
    import sys, time, json
    from cryoensemble.store import StoreLocation, acquire_lease
    location = StoreLocation.from_url(sys.argv[1], json.loads(sys.argv[2]))
    with acquire_lease(location, ttl_s=60):
        print("holding", flush=True)
        time.sleep(600)
""")


def test_second_writer_refused_then_takes_over_a_dead_holder(client, place, reference, tmp_path):
    location = place()
    source = MultiModelSource(NMR)
    script = tmp_path / "hold.py"
    script.write_text(HOLD_LEASE)
    holder = subprocess.Popen([sys.executable, str(script), location.url,
                               json.dumps(location.storage_options)],
                              stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreLeaseError, match=f"pid {holder.pid} on ") as info:
            render_ensemble(source, store=location, client=client, **KWARGS)
        assert "\n" not in str(info.value)
        assert location.list_keys() == ["cryoensemble-lease.json"]  # nothing else written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    render_ensemble(source, store=location, client=client, **KWARGS)  # the holder is gone
    assert_equals_clean(location, reference)
    assert "cryoensemble-lease.json" not in location.list_keys()  # released


RACE_FOR_LEASE = textwrap.dedent("""
    import os, sys, time
    from cryoensemble.store import StoreLeaseError, StoreLocation, acquire_lease
    location, go = StoreLocation.from_url(sys.argv[1]), sys.argv[2]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        with acquire_lease(location, ttl_s=60):
            print("won", flush=True)
            while os.path.exists(go):  # held until every racer has answered
                time.sleep(0.01)
    except StoreLeaseError:
        print("refused", flush=True)
""")


def test_racing_takers_of_a_new_local_store_one_wins(tmp_path):
    """Processes that ask for a fresh local store's lease at the same instant: exactly one
    gets it (the local path creates the lease only if absent, without the settle wait)."""
    script, go = tmp_path / "race.py", tmp_path / "go"
    script.write_text(RACE_FOR_LEASE)
    store = str(tmp_path / "race.zarr")
    racers = [subprocess.Popen([sys.executable, str(script), store, str(go)],
                               stdout=subprocess.PIPE, text=True, env=subprocess_env())
              for _ in range(4)]
    try:
        assert [p.stdout.readline().strip() for p in racers] == ["ready"] * 4
        go.touch()
        outcomes = sorted(p.stdout.readline().strip() for p in racers)
        go.unlink()
        assert outcomes == ["refused"] * 3 + ["won"]
        assert all(p.wait(timeout=30) == 0 for p in racers)
    finally:
        for p in racers:
            p.kill()


MORPH = dict(n=30, shape=32, voxel_size=2.0)


@pytest.fixture(scope="module")
def morph_clean(client, tmp_path_factory):
    """A clean render of the AdK morph (the kill-mid-run case's reference)."""
    source = MorphSource(DATA / "adk_closed.pdb", DATA / "adk_open.pdb", MORPH["n"])
    path = str(tmp_path_factory.mktemp("morph") / "clean.zarr")
    return render_ensemble(source, store=path, client=client, shape=MORPH["shape"],
                           voxel_size=MORPH["voxel_size"])["potential"].values


def test_kill_whole_job_mid_run_resumes_to_clean(client, place, morph_clean):
    """The CLI render (its own LocalCluster) killed with SIGKILL mid-run, then resumed."""
    location = place()
    n = MORPH["n"]
    morph = [str(DATA / "adk_closed.pdb"), str(DATA / "adk_open.pdb"), "--morph", str(n)]
    args = ["render", *morph, "--out", *cli_store_args(location), "--shape", str(MORPH["shape"]),
            "--voxel-size", str(MORPH["voxel_size"]), "--batch-size", "1", "--workers", "1",
            "--quiet"]
    job = subprocess.Popen([sys.executable, "-m", "cryoensemble", *args], env=subprocess_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and job.poll() is None:
            if len(location.list_keys("rendered/c")) >= 2:
                break
            time.sleep(0.02)
        os.killpg(job.pid, signal.SIGKILL)
    finally:
        job.wait()
    marked = len(location.list_keys("rendered/c"))
    assert 2 <= marked < n, job.stderr.read()[-2000:]
    source = MorphSource(DATA / "adk_closed.pdb", DATA / "adk_open.pdb", n)
    rendered = rendered_now(source, location, client, shape=MORPH["shape"],
                            voxel_size=MORPH["voxel_size"])
    assert len(rendered) <= n - marked + 1  # only what was missing
    np.testing.assert_array_equal(open_store(location)["potential"].values, morph_clean)
    assert verify_store(location).ok


def test_corrupted_shards_verify_and_repair(backend, reference, capsys, monkeypatch):
    location = backend.copy_of_clean()
    truncated, garbage, flipped, lost = 2, 5, 9, 11
    data = location.get(shard_key(location, truncated))
    location.put(shard_key(location, truncated), data[: len(data) // 2])
    location.put(shard_key(location, garbage), os.urandom(len(location.get(shard_key(location, garbage)))))
    data = bytearray(location.get(shard_key(location, flipped)))
    data[len(data) // 3] ^= 0x10
    location.put(shard_key(location, flipped), bytes(data))
    location.delete([shard_key(location, lost)])
    # Reading a damaged conformation is an error, never wrong numbers.
    potential = open_store(location)["potential"]
    for index in (truncated, garbage, flipped):
        with pytest.raises(Exception, match="checksum|[Ii]ndex|shard|decompress|Zstd|size"):
            potential[index].values
    if not location.is_local:  # the CLI takes the endpoint from the standard environment
        for key, value in CREDENTIALS.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL", location.storage_options["endpoint_url"])
    # verify prints what it found, then --repair renders exactly the bad ones again.
    code, out, err = run_cli(capsys, "verify", location.url, "--repair", "--workers", "1")
    assert code == 0, out + err[-2000:]
    found = out.split("repair:")[0]
    for index in (truncated, garbage, flipped, lost):
        assert f"conformation {index}:" in found
    assert "20 / 24 conformations intact, 4 bad" in found
    assert "rendering 4 conformation(s)" in out
    assert_equals_clean(location, reference)
    code, out, err = run_cli(capsys, "info", location.url)
    assert code == 0 and "24 / 24" in out, err


def test_verify_sample_against_a_fresh_render(backends, capsys):
    location = backends["local"].copy_of_clean()
    stored = open_store(location)["potential"][3:4].values
    # Conformation 3 replaced by other values in valid chunks: checksums pass, the
    # comparison with a fresh render does not.
    open_writer(location).write_volumes(3, stored * 1.01)
    code, out, err = run_cli(capsys, "verify", location.url, "--sample", "24", "--workers", "1")
    assert code == 1, out + err[-2000:]
    assert out.count("against a fresh render (ok)") == 23
    assert "sample 3: relative L2 1.00e-02 against a fresh render (MISMATCH)" in out


def test_bad_locations_are_one_line_errors_before_rendering(client, tmp_path, capsys):
    source = MultiModelSource(NMR)
    cases = [("nosuchscheme://bucket/x.zarr", None, "unknown storage scheme"),
             ("s3://bucket/x.zarr", {"endpoint_url": "http://127.0.0.1:9", "key": "a",
                                     "secret": "b"}, "cannot reach|does not exist")]
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        cases.append(("gs://bucket/x.zarr", None, "needs a driver"))
    for url, options, message in cases:
        started = time.monotonic()
        with pytest.raises(StoreLocationError, match=message) as info:
            render_ensemble(source, store=url, storage_options=options, client=client, **KWARGS)
        assert "\n" not in str(info.value) and url.split("/")[0] in str(info.value)
        assert time.monotonic() - started < 120
    code, _, err = run_cli(capsys, "render", str(NMR), "--out", "nosuchscheme://b/x.zarr",
                           "--shape", "26", "--voxel-size", "1", "--quiet")
    assert code == 3 and err.count("\n") == 1 and "unknown storage scheme" in err
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(StoreLocationError, match="is a file"):
        as_location(str(file)).check()


def test_memory_store():
    """memory:// through zarr's FsspecStore. It lives in this process's memory, so it is
    read here with dask's synchronous scheduler, not by another test's cluster workers."""
    import dask

    location = as_location("memory://cryoensemble-test/x.zarr")
    layout = StoreLayout(2, (8, 8, 8), "float32", 8)
    parameters = {"voxel_size": 1.0, "shape": [8, 8, 8], "dtype": "float32",
                  "n_conformations": 2, "z_chunk": 8}
    prepare_store(location, layout, parameters, {"label": np.array(["a", "b"])}, {})
    volumes = np.random.default_rng(1).random((2, 8, 8, 8)).astype(np.float32)
    writer = open_writer(location)
    writer.write_volumes(0, volumes)
    writer.mark_rendered(0, 2)
    assert done_conformations(location, layout).all()
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(open_store(location)["potential"].values, volumes)
        assert list(open_store(location)["label"].values) == ["a", "b"]
        assert verify_store(location).ok


def test_durable_local_writes_land_whole_and_leave_no_descriptor_open(tmp_path):
    """`write_files` (how workers store device-compressed chunks): more files than one
    fsync group land byte for byte in new nested folders, and a write that fails midway
    (a file stands where a folder must go) raises with every descriptor it opened closed."""
    from cryoensemble.store._location import _FSYNC_GROUP, write_files

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    rng = np.random.default_rng(0)
    files = {str(tmp_path / "p" / "c" / str(i) / "0" / "0"): rng.bytes(int(rng.integers(0, 9000)))
             for i in range(2 * _FSYNC_GROUP + 5)}
    before = open_descriptors()
    write_files(files, durable=True)
    assert open_descriptors() == before
    for path, data in files.items():
        with open(path, "rb") as handle:
            assert handle.read() == data

    (tmp_path / "blocked").write_bytes(b"a file, not a folder")
    broken = dict(list(files.items())[:10])
    broken[str(tmp_path / "blocked" / "0" / "0")] = b"x"
    broken.update(dict(list(files.items())[10:20]))
    before = open_descriptors()
    with pytest.raises(OSError):
        write_files({k + ".new": v for k, v in broken.items()}, durable=True)
    assert open_descriptors() == before
