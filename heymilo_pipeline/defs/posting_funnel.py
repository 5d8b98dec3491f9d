"""Your own asset on the pipeline's tables, the way Dagster teaches it (README, "Add your own asset"): a file in
this folder, the ``duckdb`` resource (dagster-duckdb's ``DuckDBResource``), and a dependency on ``candidates``.

It builds the DuckDB table ``posting_funnel``: per posting and UTC day of application, how far candidates got.
Materialize it after a load (Dagster UI: select it, Materialize); while a load writes, it waits its turn.
"""

import dagster as dg

from heymilo_pipeline.defs.keys import CANDIDATES_KEY
from heymilo_pipeline.defs.resources import HeyMiloDuckDB

FUNNEL = """
CREATE OR REPLACE TABLE posting_funnel AS
SELECT
    posting_id,
    created_date AS day,
    count(*) AS applied,
    count(*) FILTER (WHERE workflow_steps_started > 0) AS started,
    count(*) FILTER (WHERE interviewed_at IS NOT NULL) AS interviewed,
    count(*) FILTER (WHERE status = 'knocked_out') AS knocked_out,
    count(*) FILTER (WHERE shortlisted) AS shortlisted,
    round(avg(score), 1) AS avg_score
FROM candidates
GROUP BY posting_id, created_date
ORDER BY posting_id, day
"""


@dg.asset(
    deps=[CANDIDATES_KEY],
    group_name="marts",
    kinds={"duckdb"},
    description="Per posting and UTC day of application: how many applied, started, were interviewed, knocked out "
    "and shortlisted (DuckDB table posting_funnel). An example of an asset of your own; see README.",
)
def posting_funnel(duckdb: HeyMiloDuckDB) -> dg.MaterializeResult:
    with duckdb.get_connection() as conn:
        conn.execute(FUNNEL)
        (rows,) = conn.execute("SELECT count(*) FROM posting_funnel").fetchone()
    return dg.MaterializeResult(metadata={"dagster/row_count": rows, "dagster/table_name": "posting_funnel"})
