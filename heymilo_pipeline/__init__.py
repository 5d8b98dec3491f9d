"""HeyMilo workspace -> Parquet lake -> DuckDB warehouse, orchestrated by Dagster."""

import os

# Arrow's default allocator (mimalloc) keeps freed memory in per-thread heaps; with lake writes on a
# thread pool and loads on DuckDB's threads, a 20,000-candidate backfill peaked at ~630 MiB with it and
# ~360 MiB with the system allocator, and ran no slower (bench/ANALYSIS.md). Arrow reads the variable
# when it first allocates, so this works unless pyarrow was used before heymilo_pipeline was imported;
# a value set in the environment still wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
