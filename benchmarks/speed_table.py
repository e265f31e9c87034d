"""Every row of the speed table in one run: the other benchmarks, at the product's defaults,
one after another on this machine, then one table with each target and each error.

Rows (each part is one of the benchmarks beside this file, run as a subprocess with its
own log and JSON in `--out`):

- `ensemble`: AdK DIMS frames -> zarr on the local disk at 96^3, 128^3 and 256^3, on 1 GPU
  and on all `--gpus` (`ensemble.py`); `memory`: the same at 96^3 and 128^3 with the
  store in /dev/shm, which takes the disk out (scaling of the GPUs alone).
- `atoms`: the solvated box tiled to 10,759,518 atoms at 512^3, cold and warm, on 1 GPU and
  on `--gpus` (`large_atoms.py --copies 6,7,7`), with the error of a block.
- `volume`: one volume against cryojax 0.6.0's spread renderer (3,3,5,5,9), AdK / solvated
  / tiled (`render.py`), and the first call on the tiled case (`render.py --first-call`).
- `fourier`: `FFTAtomRenderFn` against cryojax's nufftax route (`render_fourier.py`).

    python benchmarks/speed_table.py --gpus 2 --out table/
    python benchmarks/speed_table.py --gpus 2 --parts volume,fourier
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
PARTS = ("ensemble", "memory", "atoms", "volume", "fourier")
SHAPES = (96, 128, 256)


def commands(args) -> dict[str, list[list[str]]]:
    """The benchmark command lines of each part, with their JSON outputs in `args.out`."""
    gpus = f"1,{args.gpus}" if args.gpus > 1 else "1"
    frames = ",".join(str(n) for n in args.frames)
    out = args.out
    ensemble = [sys.executable, "ensemble.py", "--no-loop", "--no-verify", "--gpus", gpus]
    return {
        "ensemble": [ensemble + ["--shape", ",".join(map(str, SHAPES)), "--frames", frames,
                                 "--json", f"{out}/ensemble.json"]],
        "memory": [ensemble + ["--shape", "96,128", "--frames", ",".join(frames.split(",")[:2]),
                               "--workdir", args.memory_dir, "--json", f"{out}/memory.json"]],
        "atoms": [[sys.executable, "large_atoms.py", "--copies", "6,7,7", "--gpus", str(n),
                   "--json", f"{out}/atoms{n}.json"] for n in sorted({1, args.gpus})],
        "volume": [[sys.executable, "render.py", "--cases", "adk,solvated,tiled", "--methods",
                    "cryoensemble,(3,3,5,5,9)", "--repeats", "30", "--json", f"{out}/volume.json"],
                   [sys.executable, "render.py", "--cases", "tiled", "--first-call",
                    "--json", f"{out}/first.json"]],
        "fourier": [[sys.executable, "render_fourier.py", "--repeats", "20",
                     "--json", f"{out}/fourier.json"]],
    }


def run_parts(args) -> dict[str, float]:
    seconds = {}
    for part, lines in commands(args).items():
        if part not in args.parts:
            continue
        start = time.perf_counter()
        with open(f"{args.out}/{part}.log", "w") as log:
            for line in lines:
                print(f"# {part}: {' '.join(line[1:])}", file=log, flush=True)
                try:
                    code = subprocess.run(line, cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
                                          timeout=args.part_timeout).returncode
                except subprocess.TimeoutExpired:
                    code = "timeout"
                print(f"# exit {code}", file=log, flush=True)
        seconds[part] = time.perf_counter() - start
        print(f"# {part}: {seconds[part]:.0f} s (log {args.out}/{part}.log)", flush=True)
    return seconds


def _load(path: pathlib.Path):
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(value, spec=".0f", missing="-"):
    return missing if value is None else format(value, spec)


def table(out: pathlib.Path, gpus: int) -> str:
    rows = ["| row | measured | error | target | met |", "| --- | --- | --- | --- | --- |"]

    def row(name, measured, error, target, met):
        rows.append(f"| {name} | {measured} | {error} | {target} | "
                    f"{'-' if met is None else ('yes' if met else 'no')} |")

    targets = {96: 2500, 128: 2000, 256: 400}
    for part, where in (("ensemble", "local disk"), ("memory", "/dev/shm")):
        data = _load(out / f"{part}.json")
        if data is None:
            continue
        runs = {(r["shape"][0], r["gpus"]): r for r in data["runs"]}
        for edge in SHAPES:
            one, many = runs.get((edge, 1)), runs.get((edge, gpus))
            if one is None:
                continue
            error = f"{one['error']:.1e}"
            if part == "ensemble":
                busy = one.get("host_cores_busy") or {}
                row(f"ensemble {edge}^3, 1 GPU, {where}", f"{one['fps']:,.0f} /s (host cores: user "
                    f"{busy.get('user', 0):.1f}, system {busy.get('system', 0):.1f}, iowait "
                    f"{busy.get('iowait', 0):.1f})", error, f">= {targets[edge]:,} /s",
                    one["fps"] >= targets[edge])
            else:
                row(f"ensemble {edge}^3, 1 GPU, {where}", f"{one['fps']:,.0f} /s", error, "-", None)
            if many is not None and gpus > 1:
                ratio = many["fps"] / one["fps"]
                row(f"{gpus} GPUs vs 1, {edge}^3, {where}", f"{many['fps']:,.0f} /s = {ratio:.2f}x",
                    f"{many['error']:.1e}", ">= 1.9x", ratio >= 1.9)
    for n in sorted({1, gpus}):
        data = _load(out / f"atoms{n}.json")
        if data is None:
            continue
        runs = data["runs"]
        limit = {1: 3.0}.get(n, 2.0)
        for name in ("cold", "warm"):
            if name not in runs:
                continue
            r = runs[name]
            goal = 10.0 if name == "cold" else limit
            row(f"{r['n_atoms']:,} atoms {data['shape']}^3, {name}, {n} GPU{'s' * (n > 1)}",
                f"{r['seconds']:.2f} s (plan {r['plan_s']:.2f} s; peak device "
                f"{_fmt(r['peak_device_mib'] and r['peak_device_mib'] / 1024, '.2f')} GiB)",
                _fmt(r["error"], ".1e"), f"<= {goal:g} s", r["seconds"] <= goal)
    volume = _load(out / "volume.json")
    if volume is not None:
        by = {(r["case"], r["method"]): r for r in volume["results"]}
        for case, goal in (("adk", 1.5), ("solvated", 2.0), ("tiled", 3.0)):
            ours = by.get((case, "cryoensemble"))
            peer = next((r for (c, m), r in by.items() if c == case and "(3,3,5,5,9)" in m), None)
            if ours is None or peer is None:
                continue
            ratio = peer["median_ms"] / ours["median_ms"]
            row(f"one volume, {case}", f"{ours['median_ms']:.3f} vs {peer['median_ms']:.3f} ms = "
                f"{ratio:.2f}x", f"{_fmt(ours['rel_error'], '.1e')} (cryojax "
                f"{_fmt(peer['rel_error'], '.1e')})", f">= {goal}x", ratio >= goal)
    first = _load(out / "first.json")
    if first is not None:
        stages = first["first_call"]["tiled"]
        row("first call, tiled 1.14M atoms 256^3", f"{stages['first call']:.2f} s", "-",
            "<= 3 s", stages["first call"] <= 3.0)
    fourier = _load(out / "fourier.json")
    if fourier is not None:
        for b in sorted({r["b_factor"] for r in fourier["rows"]}):
            rs = {r["method"]: r for r in fourier["rows"] if r["b_factor"] == b}
            ours = next((r for m, r in rs.items() if m.startswith("fft default")), None)
            peer = rs.get("cryojax nufftax")
            if ours is None or peer is None:
                continue
            row(f"Fourier path AdK 96^3, B={b:g}", f"{ours['warm_s'] * 1e3:.2f} vs "
                f"{peer['warm_s'] * 1e3:.2f} ms", f"{_fmt(ours['error_vs_series'], '.1e')} "
                f"(nufftax {_fmt(peer['error_vs_series'], '.1e')})", "<= nufftax's time",
                ours["warm_s"] <= peer["warm_s"])
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of the multi-GPU rows")
    parser.add_argument("--frames", default="24000,12000,3000",
                        help="frames at 96^3, 128^3, 256^3")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--out", help="logs and JSON (default: a temporary directory)")
    parser.add_argument("--memory-dir", default="/dev/shm/cryoensemble-speed-table")
    parser.add_argument("--part-timeout", type=float, default=900.0, help="s per command")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    args.frames = [int(n) for n in args.frames.split(",")]
    args.out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="cryoensemble-table-"))
    os.makedirs(args.out, exist_ok=True)
    if not args.table_only:
        run_parts(args)
    print(table(pathlib.Path(args.out), args.gpus))


if __name__ == "__main__":
    main()
