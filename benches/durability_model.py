#!/usr/bin/env python3
"""What durability costs for many small files on this file system, without any network.

Writes 2,000 files of 64 KiB from 16 threads the way a download manager does (create NAME.part,
write, make it durable, rename to NAME), in a fresh directory per run, three ways:

  nosync        no sync at all (what curl, wget2 and aria2c do)
  fdatasync     an fdatasync per file before its rename (what haul did before group commit)
  syncfs_batch  the 16 threads only write; one committer thread takes whatever is ready,
                calls syncfs() once for the batch, then renames it (close to what haul
                does now: its group commit uses syncfs when several files wait)
  syncfs_named  syncfs_batch whose names are durable too, as haul promises for a file it
                reports finished: each round's syncfs also flushes the previous round's
                renames, and one more syncfs flushes the last round's (the other two modes
                never sync a directory, so a power cut may lose names they "finished")

Usage: python3 benches/durability_model.py [--runs 3] [--dir DIR]   (DIR defaults to target/)
Prints the wall time and system CPU of each run.
"""
import argparse
import ctypes
import os
import queue
import shutil
import tempfile
import threading
import time

FILES, SIZE, THREADS = 2000, 64 * 1024, 16
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def per_file(directory, data, sync, files=FILES, threads=THREADS):
    def work(first):
        for i in range(first, files, threads):
            path = f"{directory}/s{i}.bin"
            fd = os.open(path + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data)
            if sync:
                os.fdatasync(fd)
            os.close(fd)
            os.rename(path + ".part", path)
    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def syncfs_batch(directory, data, files=FILES, threads=THREADS, names_durable=False):
    ready = queue.Queue()

    def write(first):
        for i in range(first, files, threads):
            path = f"{directory}/s{i}.bin"
            fd = os.open(path + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data)
            os.close(fd)
            ready.put(path)

    def commit():
        dir_fd = os.open(directory, os.O_RDONLY)
        done = 0
        while done < files:
            batch = [ready.get()]
            while True:
                try:
                    batch.append(ready.get_nowait())
                except queue.Empty:
                    break
            if libc.syncfs(dir_fd) != 0:
                raise OSError(ctypes.get_errno(), "syncfs failed")
            for path in batch:
                os.rename(path + ".part", path)
            done += len(batch)
        # The next round's syncfs carries these renames; after the last round, one more.
        if names_durable and libc.syncfs(dir_fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
        os.close(dir_fd)

    committer = threading.Thread(target=commit)
    committer.start()
    writers = [threading.Thread(target=write, args=(k,)) for k in range(threads)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    committer.join()


def measure(mode, directory, files=FILES, size=SIZE, threads=THREADS):
    """Runs one model in `directory` (which exists); returns (wall, system CPU) seconds."""
    data = os.urandom(size)
    model = {
        "nosync": lambda: per_file(directory, data, False, files, threads),
        "fdatasync": lambda: per_file(directory, data, True, files, threads),
        "syncfs_batch": lambda: syncfs_batch(directory, data, files, threads),
        "syncfs_named": lambda: syncfs_batch(directory, data, files, threads, names_durable=True),
    }[mode]
    started, cpu = time.perf_counter(), os.times()
    model()
    return time.perf_counter() - started, os.times().system - cpu.system


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target"))
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="haul-durability-", dir=args.dir)
    data = os.urandom(SIZE)
    modes = {
        "nosync": lambda d: per_file(d, data, sync=False),
        "fdatasync": lambda d: per_file(d, data, sync=True),
        "syncfs_batch": lambda d: syncfs_batch(d, data),
        "syncfs_named": lambda d: syncfs_batch(d, data, names_durable=True),
    }
    try:
        for run in range(args.runs):
            for name, model in modes.items():
                directory = f"{base}/{name}-{run}"
                os.makedirs(directory)
                os.sync()
                started, cpu = time.perf_counter(), os.times()
                model(directory)
                wall, system = time.perf_counter() - started, os.times().system - cpu.system
                print(f"{name:13} run {run + 1}: {wall:.2f} s wall, {system:.2f} s system CPU")
    finally:
        # Removed only at the end: deleting thousands of files between runs makes ext4's inode
        # allocator the bottleneck for the next run (see compare.py).
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
