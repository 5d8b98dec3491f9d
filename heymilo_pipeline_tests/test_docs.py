"""docs/tables.md must be what `python -m heymilo_pipeline.docs` writes from the column declarations."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from heymilo_pipeline import docs
from heymilo_pipeline.settings import ENVIRONMENT, Settings
from heymilo_pipeline.tables import WAREHOUSE_TABLES

TABLES_MD = Path(__file__).resolve().parent.parent / "docs" / "tables.md"
README = Path(__file__).resolve().parent.parent / "README.md"


def test_tables_md_is_current() -> None:
    assert TABLES_MD.is_file(), f"{TABLES_MD} is missing; run `{docs.COMMAND}`"
    assert TABLES_MD.read_text(encoding="utf-8") == docs.render(), (
        f"{TABLES_MD} is not current with the column declarations; run `{docs.COMMAND}` and commit the result"
    )


def test_every_table_and_column_is_documented() -> None:
    text = docs.render()
    assert docs.COMMAND in text.splitlines()[2]  # the note sits right under the title
    for table in WAREHOUSE_TABLES:
        assert f"## `{table.name}`" in text
        for column in table.columns:
            assert f"| `{column.name}` | {column.sql_type} |" in text, (table.name, column.name)


def test_command_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "tables.md"
    runner = CliRunner()
    assert runner.invoke(docs.main, ["--out", str(out), "--check"]).exit_code == 1  # missing is not current
    written = runner.invoke(docs.main, ["--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text(encoding="utf-8") == docs.render()
    assert runner.invoke(docs.main, ["--out", str(out), "--check"]).exit_code == 0
    out.write_text(docs.render() + "edited by hand\n", encoding="utf-8")
    stale = runner.invoke(docs.main, ["--out", str(out), "--check"])
    assert stale.exit_code == 1 and docs.COMMAND in stale.output


def test_readme_lists_every_setting_with_its_default() -> None:
    section = README.read_text(encoding="utf-8").split("### Configuration", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, str | None] = {}
    for row in section.splitlines():
        if not row.startswith("| `HEYMILO_"):
            continue
        names, defaults = (cell.strip() for cell in row.strip("|").split("|")[:2])
        variables, values = re.findall(r"`(HEYMILO_\w+)`", names), re.findall(r"`([^`]*)`", defaults)
        for i, variable in enumerate(variables):
            documented[variable] = values[i] if i < len(values) else None  # "(required)", "(empty)", "(none)"
    assert set(documented) == set(ENVIRONMENT), set(documented) ^ set(ENVIRONMENT)
    for variable, shown in documented.items():
        default = Settings.model_fields[ENVIRONMENT[variable]].default
        if shown is None:
            assert default in (None, ()), variable
        elif isinstance(default, bool):
            assert shown == str(default).lower(), variable
        elif isinstance(default, int | float):
            assert float(shown) == default, variable
        else:
            assert shown == str(default), variable
