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


def _cap_malloc_arenas(arenas: int = 2) -> None:
    # glibc gives threads their own malloc arenas (up to 8 per core), each keeping its own high-water mark: with
    # the results' writes on one thread, DuckDB's threads coming and going with each connection, and requests on
    # the event loop, a results backfill's resident memory crept up with the backlog: 41,000 results peaked at
    # 493 MiB with them and 416 MiB with two arenas, no slower (bench/ANALYSIS.md, section 9). MALLOC_ARENA_MAX in
    # the environment still wins; elsewhere than glibc this does nothing.
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(ctypes.c_int(-8), ctypes.c_int(arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc (musl has no mallopt arenas)
        return


_cap_malloc_arenas()
