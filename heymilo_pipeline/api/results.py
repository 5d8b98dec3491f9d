"""What one getInterviewData answer means: the interview's results, "not ready yet", or "gone".

The spec says the endpoint "returns status 'not_ready' if the candidate has not finished" without saying where
that status appears. Every place the spec's shapes allow is read as such: ``data.status``, ``meta.status``, a
top-level ``status``, or an error body whose code or type says so. An answer of any other shape is not stored:
it counts as not ready, with a note saying what was unexpected (the caller logs it as a warning), and the
interview is asked again on a later run. A crash here would stop every other interview of the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pydantic

from heymilo_pipeline.api.models import InterviewDataResponse

NOT_READY = "not_ready"
Outcome = Literal["ready", "not_ready", "gone"]


@dataclass(frozen=True)
class InterviewAnswer:
    """One interview's answer. ``raw`` is ``data`` exactly as sent (ready only); ``note`` says why there are no
    results, and ``unexpected`` whether the answer had a shape the spec does not describe."""

    interview_id: str
    outcome: Outcome
    raw: dict[str, Any] | None = None
    note: str | None = None
    unexpected: bool = False

    @property
    def ready(self) -> bool:
        return self.outcome == "ready"


def _says_not_ready(value: Any) -> bool:
    """Whether ``value`` says not ready, however spelled: not_ready, NOT_READY, not-ready, interview_not_ready."""
    return isinstance(value, str) and NOT_READY in value.strip().lower().replace("-", "_").replace(" ", "_")


def not_ready_marker(body: Any) -> str | None:
    """Where ``body`` says "not ready", or None."""
    if not isinstance(body, dict):
        return None
    data, meta, error = body.get("data"), body.get("meta"), body.get("error")
    if isinstance(data, dict) and _says_not_ready(data.get("status")):
        return "data.status"
    if isinstance(meta, dict) and _says_not_ready(meta.get("status")):
        return "meta.status"
    if _says_not_ready(body.get("status")):
        return "status"
    if isinstance(error, dict) and any(_says_not_ready(error.get(k)) for k in ("code", "type", "status")):
        return "error"
    return None


def classify(interview_id: str, body: Any) -> InterviewAnswer:
    """The meaning of a 2xx answer ``body`` to getInterviewData for ``interview_id``."""
    marker = not_ready_marker(body)
    if marker is not None:
        return InterviewAnswer(interview_id, "not_ready", note=f"not ready ({marker})")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        shape = type(data).__name__ if isinstance(body, dict) else f"a JSON {type(body).__name__}"
        return _unexpected(interview_id, f"no results object in the answer (data is {shape})")
    try:
        InterviewDataResponse.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return _unexpected(interview_id, f"results not in the documented shape at {where}: {first['msg']}")
    answered = str(data["interview_id"])
    if answered.upper() != interview_id.upper():
        return _unexpected(interview_id, f"the answer is for interview {answered}, not {interview_id}")
    return InterviewAnswer(interview_id, "ready", raw=data)


def _unexpected(interview_id: str, why: str) -> InterviewAnswer:
    note = f"{why}; counted as not ready and asked again on a later run"
    return InterviewAnswer(interview_id, "not_ready", note=note, unexpected=True)
