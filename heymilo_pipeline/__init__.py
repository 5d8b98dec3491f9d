"""HeyMilo workspace -> Parquet lake -> DuckDB warehouse, orchestrated by Dagster."""

import ctypes
import os
import sys

# Arrow's default allocator (mimalloc) keeps freed memory in per-thread heaps; with lake writes on a
# thread pool and loads on DuckDB's threads, a 20,000-candidate backfill peaked at ~630 MiB with it and
# ~360 MiB with the system allocator, and ran no slower (bench/ANALYSIS.md). Arrow reads the variable
# when it first allocates, so this works unless pyarrow was used before heymilo_pipeline was imported;
# a value set in the environment still wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def _tune_malloc(arenas: int = 2, mmap_threshold: int = 128 * 1024) -> None:
    # Two settings of glibc's malloc, each measured on a results backfill (bench/ANALYSIS.md, section 9):
    # - Threads get their own arenas (up to 8 per core), each keeping its own high-water mark: with the results'
    #   writes on one thread, DuckDB's threads coming and going with each connection, and requests on the event
    #   loop, resident memory crept up with the backlog (41,000 results: 493 MiB with them, 416 MiB with two).
    # - A block above the mmap threshold is its own mapping, returned to the system when freed; below it, freed
    #   memory stays in the arena. glibc raises the threshold (up to 32 MiB) each time a larger block is freed, so
    #   the Parquet pages and Arrow buffers of a lake write, larger with a larger lake, stayed resident after it:
    #   four lake writes of 2,000 results kept 119 MiB with the dynamic threshold, 51 MiB with a fixed one.
    # The environment still wins (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_); elsewhere than glibc this does nothing.
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    if not os.environ.get("MALLOC_ARENA_MAX"):
        mallopt(ctypes.c_int(-8), ctypes.c_int(arenas))  # M_ARENA_MAX
    if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        mallopt(ctypes.c_int(-3), ctypes.c_int(mmap_threshold))  # M_MMAP_THRESHOLD (fixed: no longer raised)


_tune_malloc()
