"""What a local disk allows the store's write path, without rendering.

N processes each write tasks of 256 shard objects (`--objects`) of 266 kB (the size of a compressed 96^3
AdK volume) at the store's keys (`potential/c/<i>/0/0/0`) through the store's own
`write_files`, made durable three ways: each file fsynced with its folder (what the store
does before a conformation's marker), one `syncfs` per task, or not at all. Prints the
aggregate objects/s and GB/s and the processes' host-core seconds per object.

    python benchmarks/store_writes.py --dir /tmp/writes --processes 4,8
    python benchmarks/store_writes.py --processes 8 --bytes 2128000 --objects 32  # 8x larger
"""

import argparse
import ctypes
import multiprocessing
import os
import shutil
import time

import numpy as np

MODES = ("fsync", "syncfs", "none")


def _writer(root: str, mode: str, rank: int, tasks: int, size: int, objects: int) -> None:
    from cryoensemble.store._location import write_files

    libc = ctypes.CDLL(None, use_errno=True)
    payload = np.random.default_rng(rank).integers(0, 255, size, dtype=np.uint8).tobytes()
    for task in range(tasks):
        base = (rank * tasks + task) * objects
        files = {os.path.join(root, "potential", "c", str(i), "0", "0", "0"): payload
                 for i in range(base, base + objects)}
        write_files(files, durable=mode == "fsync")
        if mode == "syncfs":
            descriptor = os.open(root, os.O_RDONLY)
            libc.syncfs(descriptor)
            os.close(descriptor)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/cryoensemble-store-writes")
    parser.add_argument("--processes", default="4,8")
    parser.add_argument("--tasks", type=int, default=8, help="tasks of 256 objects per process")
    parser.add_argument("--bytes", type=int, default=266_000, help="bytes per object")
    parser.add_argument("--objects", type=int, default=256, help="objects per task")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    for n in (int(p) for p in args.processes.split(",")):
        for mode in args.modes.split(","):
            shutil.rmtree(args.dir, ignore_errors=True)
            os.makedirs(args.dir)
            os.sync()
            before, start = os.times(), time.perf_counter()
            workers = [multiprocessing.Process(target=_writer,
                                               args=(args.dir, mode, r, args.tasks, args.bytes, args.objects))
                       for r in range(n)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            wall, after = time.perf_counter() - start, os.times()
            volumes = n * args.tasks * args.objects
            print(f"{n} processes, {mode:6s}, {args.bytes:,} B objects: {volumes / wall:7.0f} "
                  f"objects/s, {volumes * args.bytes / wall / 1e9:.2f} GB/s; host-core ms per "
                  f"object: user {(after.children_user - before.children_user) / volumes * 1e3:.3f}, "
                  f"system {(after.children_system - before.children_system) / volumes * 1e3:.3f}",
                  flush=True)
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
