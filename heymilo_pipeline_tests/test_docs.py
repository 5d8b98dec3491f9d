"""The generated pages of docs/ must be what `python -m heymilo_pipeline.docs` writes from the declarations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from heymilo_pipeline import docs
from heymilo_pipeline.settings import Settings, variable
from heymilo_pipeline.tables import WAREHOUSE_TABLES

DOCS = Path(__file__).resolve().parent.parent / "docs"
README = DOCS.parent / "README.md"


@pytest.mark.parametrize("page", sorted(docs.PAGES))
def test_generated_pages_are_current(page: str) -> None:
    path = DOCS / page
    assert path.is_file(), f"{path} is missing; run `{docs.COMMAND}`"
    assert path.read_text(encoding="utf-8") == docs.PAGES[page](), (
        f"{path} is not current with the declarations; run `{docs.COMMAND}` and commit the result"
    )


def test_every_table_and_column_is_documented() -> None:
    text = docs.tables_page()
    assert docs.COMMAND in text.splitlines()[2]  # the note sits right under the title
    for table in WAREHOUSE_TABLES:
        assert f"## `{table.name}`" in text
        for column in table.columns:
            assert f"| `{column.name}` | {column.sql_type} |" in text, (table.name, column.name)


def test_every_setting_is_documented_under_its_one_name() -> None:
    text = docs.configuration_page()
    for name, field in Settings.model_fields.items():
        assert f"| `{variable(name)}` | `{name}` |" in text, name
        assert field.description and field.description in text, name
    assert "(docs/configuration.md)" in README.read_text(encoding="utf-8")


def test_command_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "docs"
    runner = CliRunner()
    assert runner.invoke(docs.main, ["--dir", str(out), "--check"]).exit_code == 1  # missing is not current
    written = runner.invoke(docs.main, ["--dir", str(out)])
    assert written.exit_code == 0, written.output
    for page, render in docs.PAGES.items():
        assert (out / page).read_text(encoding="utf-8") == render()
    assert runner.invoke(docs.main, ["--dir", str(out), "--check"]).exit_code == 0
    (out / "configuration.md").write_text(docs.configuration_page() + "edited by hand\n", encoding="utf-8")
    stale = runner.invoke(docs.main, ["--dir", str(out), "--check"])
    assert stale.exit_code == 1 and docs.COMMAND in stale.output and "configuration.md" in stale.output


def test_the_readme_example_is_the_file_that_runs() -> None:
    """README's "Add your own asset" shows heymilo_pipeline/defs/posting_funnel.py as it is (after its docstring)."""
    source = (DOCS.parent / "heymilo_pipeline" / "defs" / "posting_funnel.py").read_text(encoding="utf-8")
    code = source[source.index('"""', 3) + 3 :].strip()
    block = README.read_text(encoding="utf-8").split("<!-- posting_funnel.py", 1)[1]
    shown = block.split("```python\n", 1)[1].split("```", 1)[0].strip()
    assert shown == code


def test_every_relative_link_of_the_docs_resolves() -> None:
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
