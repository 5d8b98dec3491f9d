"""The Dagster definitions: partitions, resources, assets, checks, schedules and sensors."""
