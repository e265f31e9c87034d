"""Particle images: cryoensemble.simulate_images against the loop a cryojax user writes.

Measures, in one run on this machine:

- `simulate_images`: `--n-images` particles (default 100,000), 128x128 at 1.5 A, from
  the 98-frame AdK DIMS ensemble (../shared/data/adk.psf + adk_dims.dcd), uniform poses,
  CTF (defocus 1-2.5 um, astigmatism up to 500 A) and white noise at SNR 0.1, into a
  local zarr store, on an embedded Dask cluster (CPU workers, or one GPU worker per
  GPU when JAX sees GPUs). Timed from submission to the last chunk written; cluster
  start-up and the first compilation (a warm-up run of one chunk) are excluded and
  printed separately.
- the loop: for `--loop-images` particles (default 300) of the same dataset, one jitted
  cryojax 0.6.0 image (`make_image_model` with `GaussianMixtureProjection`, same pose,
  shift and CTF) plus noise, written to one MRC file each (cryoensemble's own image
  model in the same loop when cryojax is not installed).

Accuracy beside each: the relative L2 error of the noiseless, CTF-free projection of a
few of the particles against a float64 numpy direct sum (every gaussian on every pixel,
exact pixel averages).

    python benchmarks/images.py                       # 100,000 particles (GPU machine)
    python benchmarks/images.py --n-images 2000 --loop-images 50   # this CPU
"""

import argparse
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

import numpy as np


# This process only plans and checks: leave the GPU's memory to the workers.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("CRYOENSEMBLE_SHARED", ROOT.parent / "shared")) / "data"


def machine_line() -> str:
    import jax

    import cryoensemble

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return (f"# {platform.platform()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
            f"{jax.default_backend()} x{len(devices)} ({', '.join(kinds)}), "
            f"cryoensemble {cryoensemble.__version__}")


def direct_projection(positions, amplitudes, variances, box, pixel_size) -> np.ndarray:
    """float64 numpy: every gaussian on every pixel, exact pixel averages (A^-1)."""
    from scipy.special import erf

    axis = (np.arange(box) - box // 2) * pixel_size
    out = np.zeros((box, box))
    for p, a_row, v_row in zip(positions, amplitudes, variances):
        for a, v in zip(a_row, v_row):
            s = np.sqrt(2 * v)
            py, px = ((erf((axis - c + pixel_size / 2) / s) - erf((axis - c - pixel_size / 2) / s))
                      / (2 * pixel_size) for c in (p[1], p[0]))
            out += a * np.outer(py, px)
    return out


def relative_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def atom_image_model(source, args):
    """cryoensemble's image model of the source's atoms (Peng parameters)."""
    from cryoensemble.constants import PengScatteringFactorParameters
    from cryoensemble.simulator import GaussianMixtureImageModel, GaussianMixtureVolume

    volume = GaussianMixtureVolume.from_tabulated_parameters(
        np.zeros((source.n_atoms, 3), np.float32), PengScatteringFactorParameters(source.atomic_numbers))
    return GaussianMixtureImageModel(volume.amplitudes, volume.variances, (args.box, args.box),
                                     args.pixel_size, args.voltage)


def cryojax_loop(source, labels, args, directory):
    """The loop: one jitted image per particle + one MRC file each. Returns (name, the
    per-image seconds, a function giving one noiseless CTF-free projection)."""
    import jax
    import jax.numpy as jnp
    import mrcfile

    box, d = args.box, args.pixel_size
    frames = source.read(0, len(source)) - np.asarray(labels["centre"], np.float32)
    try:
        import cryojax.simulator as cxs
        from cryojax.constants import PengScatteringFactorParameters

        parameters = PengScatteringFactorParameters(source.atomic_numbers)
        config = cxs.BasicImageConfig((box, box), d, args.voltage)

        def image(positions, wxyz, shift, ctf, use_ctf=True):
            volume = cxs.GaussianMixtureVolume.from_tabulated_parameters(positions, parameters)
            pose = cxs.QuaternionPose(shift[0], shift[1], wxyz)
            if not use_ctf:
                model = cxs.make_image_model(volume, config, pose, None,
                                             cxs.GaussianMixtureProjection(), translate_mode="atom")
                return model.simulate()
            du, dv, angle = ctf
            theory = cxs.ContrastTransferTheory(
                cxs.AstigmaticCTF((du + dv) / 2, du - dv, -angle - 90.0, 2.7),
                amplitude_contrast_ratio=0.1)
            model = cxs.make_image_model(volume, config, pose, theory,
                                         cxs.GaussianMixtureProjection(), translate_mode="atom")
            return model.simulate()

        name = "cryojax 0.6.0 GaussianMixtureProjection, jit per image + MRC"
        scale = 1.0  # cryojax's projection image model returns the projection (A^-1)
    except ImportError:
        from cryoensemble.simulator import AstigmaticCTF, ContrastTransferTheory, QuaternionPose

        model = atom_image_model(source, args)

        def image(positions, wxyz, shift, ctf, use_ctf=True):
            rotation = QuaternionPose(wxyz=wxyz).rotation_matrix
            if not use_ctf:
                return model.project(positions, rotation, shift)
            du, dv, angle = ctf
            theory = ContrastTransferTheory(
                AstigmaticCTF((du + dv) / 2, du - dv, -angle - 90.0, 2.7), None, 0.1)
            return model(positions, rotation, shift, theory)

        name = "cryoensemble GaussianMixtureImageModel, jit per image + MRC (cryojax absent)"
        scale = 1.0

    simulate = jax.jit(image)
    project = jax.jit(lambda p, q, s: image(p, q, s, None, use_ctf=False))

    def one(i):
        positions = jnp.asarray(frames[labels["conformation"][i]])
        out = simulate(positions, jnp.asarray(labels["quaternion"][i], jnp.float32),
                       jnp.asarray([labels["shift_x"][i], labels["shift_y"][i]], jnp.float32),
                       jnp.asarray([labels["defocus_u"][i], labels["defocus_v"][i],
                                    labels["defocus_angle"][i]], jnp.float32))
        out = np.asarray(out, np.float32)
        rng = np.random.default_rng(i)
        out = out + rng.normal(0, out.std() / np.sqrt(args.snr), out.shape).astype(np.float32)
        with mrcfile.new(os.path.join(directory, f"particle_{i:06d}.mrc"), overwrite=True) as mrc:
            mrc.set_data(out)
            mrc.voxel_size = d

    one(0)  # compile
    start = time.perf_counter()
    for i in range(args.loop_images):
        one(i)
    per_image = (time.perf_counter() - start) / args.loop_images

    def noiseless(i):
        out = project(jnp.asarray(frames[labels["conformation"][i]]),
                      jnp.asarray(labels["quaternion"][i], jnp.float32),
                      jnp.asarray([labels["shift_x"][i], labels["shift_y"][i]], jnp.float32))
        return np.asarray(out, np.float64) * scale

    return name, per_image, noiseless


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=100_000)
    parser.add_argument("--loop-images", type=int, default=300)
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--pixel-size", type=float, default=1.5)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--voltage", type=float, default=300.0)
    parser.add_argument("--batch-size", type=int, default=None, help="particles per chunk")
    parser.add_argument("--images-per-step", type=int, default=None)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--gpus", type=int, default=None, help="default: every GPU JAX sees")
    parser.add_argument("--workers", type=int, default=None, help="CPU workers (default: cores)")
    parser.add_argument("--processes-per-gpu", type=int, default=None,
                        help="GPU worker processes per GPU (default: cores / GPUs)")
    parser.add_argument("--check-images", type=int, default=2, help="particles checked in float64")
    parser.add_argument("--out", default=None, help="folder for the store (default: a temp dir)")
    args = parser.parse_args()

    import jax
    from distributed import Client

    import cryoensemble
    from cryoensemble.distributed import make_local_cluster
    from cryoensemble.particles import CTFDistribution
    from cryoensemble.simulator import QuaternionPose
    from cryoensemble.sources import TrajectorySource

    print(machine_line(), flush=True)
    gpus = args.gpus
    if gpus is None and jax.default_backend() == "gpu":
        gpus = len(jax.devices())
    source = TrajectorySource(DATA / "adk.psf", DATA / "adk_dims.dcd")
    ctf = CTFDistribution(defocus_in_angstroms=(10000.0, 25000.0), astigmatism_in_angstroms=(0.0, 500.0))
    options = dict(box=args.box, pixel_size=args.pixel_size, ctf=ctf, snr=args.snr, seed=0,
                   voltage_in_kilovolts=args.voltage, dtype=args.dtype,
                   images_per_chunk=args.batch_size, images_per_step=args.images_per_step)
    work = pathlib.Path(args.out or tempfile.mkdtemp(prefix="images-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "particles.zarr"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(work / "warmup.zarr", ignore_errors=True)
    print(f"# {args.n_images} particles {args.box}x{args.box} @ {args.pixel_size} A from "
          f"{len(source)} AdK DIMS conformations ({source.n_atoms} atoms), CTF, SNR {args.snr}, "
          f"{args.dtype}, store {store}", flush=True)

    start = time.perf_counter()
    cluster = make_local_cluster(n_workers=args.workers, gpus=gpus,
                                 processes_per_gpu=args.processes_per_gpu)
    client = Client(cluster)
    n_workers = len(client.scheduler_info()["workers"])
    startup = time.perf_counter() - start
    # Warm-up: every worker compiles the image function once (one chunk each).
    start = time.perf_counter()
    per_chunk = args.batch_size or min(512, args.n_images)
    cryoensemble.simulate_images(source, n_images=per_chunk * n_workers,
                                 store=str(work / "warmup.zarr"), client=client, **options)
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    dataset = cryoensemble.simulate_images(source, n_images=args.n_images, store=str(store),
                                           client=client, **options)
    elapsed = time.perf_counter() - start
    client.close()
    cluster.close()
    rate = args.n_images / elapsed
    stored_bytes = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    print(f"cluster start-up {startup:.1f} s ({n_workers} workers"
          f"{f', {gpus} GPU(s)' if gpus else ''}); warm-up (compile) {warmup:.1f} s")
    print(f"simulate_images  {args.n_images} images in {elapsed:.2f} s = {rate:,.0f} images/s "
          f"({stored_bytes / elapsed / 2**20:,.0f} MiB/s to the store)", flush=True)

    labels = {k: dataset[k].values for k in ("conformation", "quaternion", "shift_x", "shift_y",
                                             "defocus_u", "defocus_v", "defocus_angle")}
    labels["centre"] = dataset["images"].attrs["centre_angstrom"]
    loop_dir = work / "loop"
    loop_dir.mkdir(exist_ok=True)
    name, per_image, loop_noiseless = cryojax_loop(source, labels, args, str(loop_dir))
    loop_rate = 1.0 / per_image
    print(f"loop             {name}: {per_image * 1e3:.2f} ms/image = {loop_rate:,.0f} images/s "
          f"(over {args.loop_images})")
    print(f"ratio            {rate / loop_rate:,.1f}x the loop")

    # Accuracy: noiseless, CTF-free projections against the float64 direct sum.
    model = atom_image_model(source, args)
    project = jax.jit(lambda p, r, s: model.project(p, r, s))
    amplitudes = np.asarray(model.amplitudes, np.float64)
    variances = np.asarray(model.variances, np.float64)
    ours, theirs = [], []
    for i in range(args.check_images):
        conformation = int(labels["conformation"][i])
        positions = (source.read(conformation, conformation + 1)[0]
                     - np.asarray(labels["centre"], np.float32))
        rotation = np.asarray(QuaternionPose(wxyz=labels["quaternion"][i]).rotation_matrix,
                              np.float64)
        shift = np.array([labels["shift_x"][i], labels["shift_y"][i]])
        posed = positions.astype(np.float64) @ rotation.T + np.r_[shift, 0.0]
        reference = direct_projection(posed, amplitudes, variances, args.box, args.pixel_size)
        image = project(positions, rotation.astype(np.float32), shift.astype(np.float32))
        ours.append(relative_l2(image, reference))
        theirs.append(relative_l2(loop_noiseless(i), reference))
    print(f"error            simulate_images projection {max(ours):.2e}, loop {max(theirs):.2e} "
          f"(relative L2 vs float64 direct sum, worst of {args.check_images} particles)")
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
