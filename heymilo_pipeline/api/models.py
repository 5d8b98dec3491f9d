"""Pydantic v2 models of the HeyMilo Public API, written from its OpenAPI document (2.0.0).

Every model keeps fields it does not know (``extra="allow"``): the API adds fields over time and we
neither crash on them nor drop them silently; ``unknown_fields()`` returns them for the lake.
Timestamps stay what the API sends, epoch seconds as floats (fractions allowed); converting to
TIMESTAMPTZ happens when records become Arrow, not here.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

CANDIDATE_STATUSES = frozenset(
    {"pending", "in_progress", "evaluating", "completed", "shortlisted", "dismissed", "knocked_out"}
)


class APIModel(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=False, populate_by_name=True)

    def unknown_fields(self) -> dict[str, Any]:
        """Fields the API sent that this model does not declare (kept, never dropped)."""
        return dict(self.__pydantic_extra__ or {})


# --- candidates -------------------------------------------------------------------------------


class WorkflowStepStatus(APIModel):
    step_id: str
    order: int
    status: str
    started: bool
    completed: bool
    knocked_out: bool = False
    last_updated_at: float | None = None


class CandidateWorkflow(APIModel):
    steps: list[WorkflowStepStatus]
    all_complete: bool
    last_activity_at: float | None = None


class AgentResumeSummary(APIModel):
    resume_score: float | None = None
    is_eligible: bool | None = None
    resume_link: str | None = None


class AgentWebInterviewSummary(APIModel):
    score: float | None = None
    highlights: list[str] = Field(default_factory=list)
    audio_recording_link: str | None = None
    video_recording_link: str | None = None


class AgentSMSSummary(APIModel):
    is_eligible: bool | None = None
    criteria_passed: list[str] = Field(default_factory=list)
    criteria_failed: list[str] = Field(default_factory=list)
    messages_sent: int | None = None


class AgentFormSummary(APIModel):
    is_complete: bool | None = None
    is_eligible: bool | None = None
    questions_answered: int | None = None
    total_questions: int | None = None


class AgentSummary(APIModel):
    resume: AgentResumeSummary | None = None
    web_interview: AgentWebInterviewSummary | None = None
    sms: AgentSMSSummary | None = None
    form: AgentFormSummary | None = None


class CandidateResponse(APIModel):
    object: Literal["candidate"] = "candidate"
    interview_id: str
    candidate_id: str | None = None
    posting_id: str
    name: str
    email: str
    score: float | None = None
    status: str
    interview_url: str | None = None
    workflow: CandidateWorkflow | None = None
    agent_summary: AgentSummary | None = None
    shortlisted: bool = False
    dismissed: bool = False
    metadata: dict[str, str] | None = None
    data: dict[str, Any] | None = None
    interviewed_at: float | None = None
    created_at: float | None = None


# --- postings ---------------------------------------------------------------------------------


class WorkflowStep(APIModel):
    id: str | None = None
    type: str
    order: int
    config: dict[str, Any] = Field(default_factory=dict)


class PostingURLs(APIModel):
    candidate_url: str | None = None
    ingestion_url_key: str | None = None
    review_url: str | None = None


class PostingResponse(APIModel):
    object: Literal["posting"] = "posting"
    id: str
    company_id: str
    title: str
    name: str | None = None
    description: str
    language: str | None = "en"
    interviewer_name: str | None = None
    status: str
    finalized: bool
    archived: bool
    test_posting: bool
    workflow: list[WorkflowStep] = Field(default_factory=list)
    urls: PostingURLs | None = None
    deadline: float | None = None
    redirect_url: str | None = None
    scheduling_url: str | None = None
    max_retakes: int | None = None
    allow_sms_comms: bool | None = False
    instructions: str | None = None
    company_overview: str | None = None
    job_overview: str | None = None
    interview_process_overview: str | None = None
    company_overview_delivery_mode: str | None = None
    job_overview_delivery_mode: str | None = None
    interview_process_overview_delivery_mode: str | None = None
    phone_number_id: str | None = None
    sender_email_id: str | None = None
    email_template_group_id: str | None = None
    design_template_group_id: str | None = None
    retake_cooldown_days: float | None = None
    email_report_to_candidate: bool | None = False
    ats_metadata: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    created_at: float | None = None
    updated_at: float | None = None


class PostingSummary(APIModel):
    object: Literal["posting_summary"] = "posting_summary"
    id: str
    title: str
    name: str | None = None


# --- interview results (getInterviewData) -----------------------------------------------------


class TranscriptEntry(APIModel):
    speaker: str
    text: str | None = None  # null once HEYMILO_PII=drop has been applied
    timestamp: float | None = None
    timestamp_str: str | None = None


class ScorecardQuestion(APIModel):
    question_id: str
    question_text: str
    score: float | None = None  # 1-10; a number, so a fraction or an out-of-range value reaches the checks
    score_weight: float | None = 5
    evaluation_summary: str | None = None
    evaluation_criteria: str | None = None
    score_1_description: str | None = None
    score_5_description: str | None = None
    not_scored: bool = False
    rank: int | None = None
    transcript: list[TranscriptEntry] = Field(default_factory=list)


class WebInterviewResult(APIModel):
    interview_id: str | None = None
    match_score: float | None = None
    highlights: list[str] = Field(default_factory=list)
    lowlights: list[str] = Field(default_factory=list)
    scorecard: list[ScorecardQuestion] = Field(default_factory=list)
    speech_score: float | None = None
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    audio_recording_url: str | None = None
    video_recording_url: str | None = None
    tags: list[str] = Field(default_factory=list)


class ResumeScoreCriterion(APIModel):
    criteria_id: str
    criteria_text: str | None = None
    score: float | None = None
    confidence: float | None = None
    reasons: list[str] = Field(default_factory=list)


class ResumeEligibilityCriterion(APIModel):
    criteria_id: str
    criteria_text: str | None = None
    passed: bool | None = None
    confidence: float | None = None
    reasons: list[str] = Field(default_factory=list)


class ResumeResult(APIModel):
    interview_id: str | None = None
    overall_score: float | None = None
    is_eligible: bool | None = None
    score_criteria: list[ResumeScoreCriterion] = Field(default_factory=list)
    eligibility_criteria: list[ResumeEligibilityCriterion] = Field(default_factory=list)
    resume_url: str | None = None


class SMSCriterionResult(APIModel):
    criteria_id: str
    criteria_text: str | None = None
    passed: bool | None = None
    confidence: float | None = None
    is_dealbreaker: bool = False
    reasons: list[str] = Field(default_factory=list)


class SMSMessage(APIModel):
    role: str
    text: str | None = None
    timestamp: float | None = None


class SMSResult(APIModel):
    interview_id: str | None = None
    is_eligible: bool | None = None
    confidence: float | None = None
    criteria: list[SMSCriterionResult] = Field(default_factory=list)
    transcript: list[SMSMessage] = Field(default_factory=list)
    messages_sent: int | None = None
    messages_received: int | None = None


class FormQuestionResult(APIModel):
    question_id: str
    question_text: str | None = None
    question_type: str | None = None
    is_knockout: bool | None = None
    passed: bool | None = None
    candidate_answer: str | None = None
    expected_answer: str | None = None


class FormResult(APIModel):
    interview_id: str | None = None
    overall_status: str | None = None
    questions: list[FormQuestionResult] = Field(default_factory=list)


class CheatDetection(APIModel):
    overall_confidence: float | None = None
    overall_ranking: float | None = None  # 1-5
    enabled: bool | None = None
    threshold: float | None = None
    types: list[str] | None = None
    # The signals' payloads vary by detector and version (the spec calls some of them raw); kept as sent.
    web_interview: dict[str, Any] | None = None
    resume: dict[str, Any] | None = None


class InterviewDataResponse(APIModel):
    """A candidate's results across its workflow. Fields the spec requires are optional here on purpose: results
    are read one interview at a time, and a result missing a field is stored with a null the checks report,
    rather than failing its posting."""

    object: str | None = "interview_data"
    interview_id: str
    candidate_id: str | None = None
    posting_id: str | None = None
    name: str | None = None
    email: str | None = None
    score: float | None = None
    status: str | None = None
    workflow: CandidateWorkflow | None = None
    web_interview: WebInterviewResult | None = None
    resume: ResumeResult | None = None
    sms: SMSResult | None = None
    form: FormResult | None = None
    cheat_detection: CheatDetection | None = None
    metadata: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


# --- envelopes and errors ---------------------------------------------------------------------


class PaginationMeta(APIModel):
    has_more: bool
    total_count: int | None = None
    url: str | None = None


T = TypeVar("T")


class ListResponse(APIModel, Generic[T]):
    data: list[T]
    pagination: PaginationMeta


CandidateList = ListResponse[CandidateResponse]
PostingList = ListResponse[PostingResponse]
PostingSummaryList = ListResponse[PostingSummary]


class APIErrorDetail(APIModel):
    code: str
    message: str
    param: str | None = None


class APIError(APIModel):
    type: str
    code: str
    message: str
    param: str | None = None
    doc_url: str | None = None
    errors: list[APIErrorDetail] = Field(default_factory=list)


class APIErrorResponse(APIModel):
    error: APIError


class ValidationError(APIModel):
    loc: list[str | int]
    msg: str
    type: str


class HTTPValidationError(APIModel):
    detail: list[ValidationError] = Field(default_factory=list)
