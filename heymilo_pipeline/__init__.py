"""HeyMilo workspace -> Parquet lake -> DuckDB warehouse, orchestrated by Dagster."""
