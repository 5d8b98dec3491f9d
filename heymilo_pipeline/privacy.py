"""Personal data: names, emails, and resume and recording links (signed URLs) of candidates.

``HEYMILO_PII`` decides what the pipeline stores of them, applied the same way to the raw records
and to the flattened table, before either is written (so the lake and DuckDB agree):

- ``keep`` (default): stored as the API returns them; recruiting-ops needs to know who is who.
- ``hash``: replaced by a keyed hash (HMAC-SHA256 with ``HEYMILO_PII_KEY``), so a candidate can be
  counted and joined across postings without being named. A plain hash of an email is reversible
  by guessing, hence the key.
- ``drop``: replaced by null.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any, Literal

import pyarrow as pa

PiiMode = Literal["keep", "hash", "drop"]

# (path in the API record, column in the candidates table)
PII_FIELDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("name",), "name"),
    (("email",), "email"),
    (("agent_summary", "resume", "resume_link"), "resume_link"),
    (("agent_summary", "web_interview", "audio_recording_link"), "web_interview_audio_recording_link"),
    (("agent_summary", "web_interview", "video_recording_link"), "web_interview_video_recording_link"),
)


class Scrubber:
    def __init__(self, mode: PiiMode, key: str | None = None) -> None:
        if mode == "hash" and not key:
            raise ValueError("HEYMILO_PII=hash needs HEYMILO_PII_KEY (a secret used to key the hash)")
        self.mode = mode
        self._key = (key or "").encode()

    def __repr__(self) -> str:  # never the key
        return f"Scrubber(mode={self.mode!r})"

    def value(self, value: Any) -> Any:
        if value is None or self.mode == "keep":
            return value
        if self.mode == "drop":
            return None
        digest = hmac.new(self._key, str(value).encode(), hashlib.sha256).hexdigest()
        return f"hmac:{digest[:32]}"

    def records(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Copies of raw API records with personal fields replaced (unknown fields untouched)."""
        if self.mode == "keep":
            return list(records)
        out = []
        for record in records:
            record = dict(record)
            for path, _ in PII_FIELDS:
                _replace(record, path, self.value)
            out.append(record)
        return out

    def table(self, table: pa.Table) -> pa.Table:
        if self.mode == "keep":
            return table
        for _, column in PII_FIELDS:
            index = table.schema.get_field_index(column)
            field = table.schema.field(index)
            values = [self.value(v) for v in table[column].to_pylist()]
            table = table.set_column(index, field, pa.array(values, field.type))
        return table


def _replace(record: dict[str, Any], path: tuple[str, ...], change: Any) -> None:
    """Replace record[path] in place, copying the nested dicts on the way so the caller's data stays as it was."""
    node = record
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            return
        node[key] = child = dict(child)
        node = child
    if path[-1] in node:
        node[path[-1]] = change(node[path[-1]])
