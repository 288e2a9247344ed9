"""Survey questions: their shapes, the defaults of NPS/CSAT/CES surveys, and how answers are
checked and scored. Used by the API (`POST /v1/responses`) and the respondent page alike."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, TypeAdapter

from cem.surveys.texts import DEFAULT_LANGUAGE, say
from cxkit.fields import InputModel, Integer, JsonInteger, NoNul, Text
from cxkit.http.problems import field_problem

Metric = Literal["nps", "csat", "ces"]
METRICS: tuple[str, ...] = ("nps", "csat", "ces")
METRIC_SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
# The default questions of an NPS, CSAT or CES survey made without any: (id, text key) for the
# score question, then the free-text one (texts in the survey's language, cem.surveys.texts).
_DEFAULTS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "nps": (("nps", "nps_question"), ("reason", "nps_reason")),
    "csat": (("csat", "csat_question"), ("improve", "csat_improve")),
    "ces": (("ces", "ces_question"), ("reason", "ces_reason")),
}


def default_questions(kind: str, language: str = DEFAULT_LANGUAGE) -> list[dict[str, Any]]:
    """The questions of an NPS, CSAT or CES survey made without any, in `language`."""
    (score_id, score_text), (text_id, text_key) = _DEFAULTS[kind]
    return [
        {"type": "rating", "id": score_id, "metric": kind, "text": say(language, score_text)},
        {"type": "text", "id": text_id, "text": say(language, text_key)},
    ]


def metric_labels(metric: str, language: str = DEFAULT_LANGUAGE) -> tuple[str, str]:
    """The labels of a metric's lowest and highest score, in `language`."""
    return say(language, f"{metric}_low"), say(language, f"{metric}_high")


QuestionId = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]


class _Question(InputModel):
    id: QuestionId | None = Field(
        None, description="Stable key of the question (answers refer to it); `q1`, `q2`... if left out."
    )
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), NoNul] = Field(
        description="The question as respondents read it."
    )
    help_text: Text | None = Field(None, max_length=500, description="A hint shown under the question.")
    required: bool | None = Field(
        None,
        strict=True,
        description="Must be answered. Default: true for the score question of an NPS/CSAT/CES survey, false otherwise.",
    )


class RatingQuestion(_Question):
    type: Literal["rating"]
    scale_min: Annotated[int, Field(ge=0, le=10), JsonInteger] | None = Field(
        None, description="Lowest score (default 1; a metric's own scale for nps/csat/ces)."
    )
    scale_max: Annotated[int, Field(ge=1, le=10), JsonInteger] | None = Field(
        None, description="Highest score (default 5; a metric's own scale for nps/csat/ces)."
    )
    min_label: Text | None = Field(None, max_length=100, description="Label of the lowest score, e.g. `Very difficult`.")
    max_label: Text | None = Field(None, max_length=100, description="Label of the highest score, e.g. `Very easy`.")
    metric: Metric | None = Field(
        None,
        description="The score this question measures: nps (0-10), csat (1-5) or ces (1-7, 1 = very difficult, "
        "7 = very easy). At most one per survey; analytics read it.",
    )


class TextQuestion(_Question):
    type: Literal["text"]
    max_length: Integer = Field(2000, ge=1, le=5000, description="Longest answer accepted.")


ChoiceOption = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]


class SingleChoiceQuestion(_Question):
    type: Literal["single_choice"]
    options: list[ChoiceOption] = Field(min_length=2, max_length=30, description="The choices, in display order.")


class MultiChoiceQuestion(_Question):
    type: Literal["multi_choice"]
    options: list[ChoiceOption] = Field(min_length=2, max_length=30, description="The choices, in display order.")


Question = Annotated[
    RatingQuestion | TextQuestion | SingleChoiceQuestion | MultiChoiceQuestion,
    Field(discriminator="type"),
]


def _loc(i: int, name: str | None = None) -> list[str | int]:
    loc: list[str | int] = ["body", "questions", i]
    return [*loc, name] if name else loc


def normalize_questions(
    kind: str, questions: list[Any] | None, language: str = DEFAULT_LANGUAGE
) -> tuple[list[dict[str, Any]], str | None]:
    """Questions as stored (every default filled in, in the survey's `language`) and the metric
    the survey measures.

    NPS/CSAT/CES surveys have exactly one score question on the metric's scale, required; any other
    questions may come with it. Custom surveys have any questions, at most one of them a metric."""
    if not questions:
        if kind == "custom":
            raise field_problem(["body", "questions"], "a custom survey needs at least one question")
        questions = [_parse(q) for q in default_questions(kind, language)]
    given_ids = {q.id for q in questions if q.id}
    ids: list[str] = []
    counter = 0
    for i, q in enumerate(questions):
        qid = q.id
        if qid is None:
            counter += 1
            while f"q{counter}" in given_ids or f"q{counter}" in ids:
                counter += 1
            qid = f"q{counter}"
        elif qid in ids:
            raise field_problem(_loc(i, "id"), f"question id {qid!r} is used twice")
        ids.append(qid)

    ratings = [i for i, q in enumerate(questions) if isinstance(q, RatingQuestion)]
    tagged = [i for i in ratings if questions[i].metric is not None]
    metric_index: int | None = None
    if kind in METRICS:
        wrong = [i for i in tagged if questions[i].metric != kind]
        if wrong:
            raise field_problem(_loc(wrong[0], "metric"), f"a {kind} survey measures {kind} only")
        if len(tagged) > 1:
            raise field_problem(_loc(tagged[1], "metric"), f"a {kind} survey has one {kind} question")
        if tagged:
            metric_index = tagged[0]
        elif len(ratings) == 1:
            metric_index = ratings[0]
        else:
            raise field_problem(
                ["body", "questions"],
                f"a {kind} survey needs one rating question with metric {kind!r} on the {kind} scale "
                f"{METRIC_SCALES[kind][0]}-{METRIC_SCALES[kind][1]}",
            )
    elif tagged:
        if len(tagged) > 1:
            raise field_problem(_loc(tagged[1], "metric"), "a survey measures at most one metric")
        metric_index = tagged[0]

    stored: list[dict[str, Any]] = []
    metric: str | None = None
    for i, (q, qid) in enumerate(zip(questions, ids, strict=True)):
        base = {"id": qid, "type": q.type, "text": q.text, "help_text": q.help_text}
        if isinstance(q, RatingQuestion):
            if i == metric_index:
                metric = kind if kind in METRICS else q.metric
                assert metric is not None
                low, high = METRIC_SCALES[metric]
                if (q.scale_min is not None and q.scale_min != low) or (q.scale_max is not None and q.scale_max != high):
                    raise field_problem(_loc(i, "scale_min"), f"{metric} is measured on {low}-{high}")
                if kind in METRICS and q.required is False:
                    raise field_problem(_loc(i, "required"), f"the {kind} question of a {kind} survey is required")
                min_label, max_label = metric_labels(metric, language)
                stored.append(
                    {
                        **base,
                        "required": True if q.required is None and kind in METRICS else bool(q.required),
                        "scale_min": low,
                        "scale_max": high,
                        "min_label": q.min_label or min_label,
                        "max_label": q.max_label or max_label,
                        "metric": metric,
                    }
                )
                continue
            low = 1 if q.scale_min is None else q.scale_min
            high = 5 if q.scale_max is None else q.scale_max
            if low >= high:
                raise field_problem(_loc(i, "scale_max"), "scale_max must be greater than scale_min")
            stored.append(
                {
                    **base,
                    "required": bool(q.required),
                    "scale_min": low,
                    "scale_max": high,
                    "min_label": q.min_label,
                    "max_label": q.max_label,
                    "metric": None,
                }
            )
        elif isinstance(q, TextQuestion):
            stored.append({**base, "required": bool(q.required), "max_length": q.max_length})
        else:
            _check_options_differ(i, q.options)
            stored.append({**base, "required": bool(q.required), "options": list(q.options)})
    return stored, metric


def _option_key(option: str) -> str:
    """What an option is told apart by: its text with any line breaks as LF (as answers pick it,
    `one_line_break`), compared caselessly in one Unicode form (Unicode's canonical caseless match)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", one_line_break(option)).casefold())


def _check_options_differ(i: int, options: list[str]) -> None:
    """422 naming the first option that is another one again but for case, line breaks or Unicode
    form: a respondent could not tell them apart, and an answer could never pick the second."""
    seen: dict[str, int] = {}
    for j, option in enumerate(options):
        first = seen.setdefault(_option_key(option), j)
        if first != j:
            raise field_problem(
                _loc(i, "options"),
                f"options must be different from each other: {option!r} is the same as {options[first]!r} "
                "(case, line breaks and Unicode form aside)",
            )


_QUESTION = TypeAdapter(Question)


def _parse(raw: dict[str, Any]) -> Any:
    return _QUESTION.validate_python(raw)


# --- answers ---------------------------------------------------------------------------------


def category(metric: str, score: int) -> str:
    """nps: promoter (9-10) / passive (7-8) / detractor (0-6); csat: positive (4-5) / neutral (3) /
    negative (1-2); ces: positive (5-7, easy) / neutral (3-4) / negative (1-2, difficult)."""
    if metric == "nps":
        return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
    if metric == "csat":
        return "positive" if score >= 4 else "neutral" if score == 3 else "negative"
    return "positive" if score >= 5 else "neutral" if score >= 3 else "negative"


def needs_followup(metric: str, score: int) -> bool:
    """Detractor NPS (0-6), CSAT 1-2, CES 1-2."""
    return category(metric, score) in ("detractor", "negative")


@dataclass
class MetricAnswer:
    metric: str
    question_id: str
    score: int | None
    scale_min: int
    scale_max: int

    @property
    def category(self) -> str | None:
        return None if self.score is None else category(self.metric, self.score)


@dataclass
class CheckedAnswers:
    """Answers ready to store, or the problem with each question that was answered badly."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    metric: MetricAnswer | None = None
    comment: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


# A score as a form or a link writes it: ASCII digits only (`str.isdigit()` also holds for "²",
# which `int()` refuses, and for other scripts' digits), at most three (every scale is 0-10).
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,3}")


def whole_number(text: str) -> int | None:
    """The integer in a form field or a query parameter (`-7`, ` 9 `), or None when it holds
    anything else, a number of more than three digits included."""
    match = _WHOLE_NUMBER.fullmatch(text.strip())
    return int(match.group()) if match else None


def one_line_break(text: str) -> str:
    """`text` with each CRLF or lone CR as LF. A browser posts every line break of a form (a
    textarea's, or one inside an option's value) as CRLF but counts it as one character against
    `maxlength`; answers store LF, whichever way they came."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)


def check_answers(
    questions: list[dict[str, Any]], raw: dict[str, Any], *, from_form: bool, language: str = DEFAULT_LANGUAGE
) -> CheckedAnswers:
    """Validate `raw` ({question id: value}) against the questions. Form values are strings (and
    lists of strings for multi choice); API values are JSON: an integer for a rating, a string for
    text and single choice, a list of strings for multi choice, null or absent when skipped. In
    either, a line break (CRLF, CR or LF) is one LF, in the text kept and in the length checked,
    and a choice matches its option whichever line breaks it came with. The messages are in
    `language` (the respondent page's; the API's stay English)."""
    result = CheckedAnswers()
    known = {q["id"] for q in questions}
    for qid in raw:
        if qid not in known:
            result.errors[str(qid)[:40]] = say(language, "no_such_question")
    for q in questions:
        value = raw.get(q["id"])
        stored: Any = None
        if _is_blank(value):
            if q["required"]:
                result.errors[q["id"]] = say(language, "answer_required")
        else:
            stored, problem = _check_one(q, value, from_form, language)
            if problem:
                result.errors[q["id"]] = problem
                stored = None
        answer: dict[str, Any] = {"question_id": q["id"], "type": q["type"], "text": q["text"], "value": stored}
        if q["type"] == "rating":
            answer["scale_min"], answer["scale_max"] = q["scale_min"], q["scale_max"]
            if q.get("metric"):
                result.metric = MetricAnswer(q["metric"], q["id"], stored, q["scale_min"], q["scale_max"])
        elif q["type"] == "text" and stored is not None and result.comment is None:
            result.comment = stored
        result.answers.append(answer)
    return result


def comment_of(answers: list[dict[str, Any]]) -> str | None:
    """A stored response's comment: its first text answer that holds words (as `check_answers`
    picks it)."""
    return next((a["value"] for a in answers if a.get("type") == "text" and a.get("value") is not None), None)


def without_free_text(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored answers with every text answer blanked (ratings and choices stay): what an erased
    customer's answers keep."""
    return [{**a, "value": None} if a.get("type") == "text" else a for a in answers]


def _check_one(q: dict[str, Any], value: Any, from_form: bool, language: str) -> tuple[Any, str | None]:
    kind = q["type"]
    if kind == "rating":
        score: int | None = None
        if from_form and isinstance(value, str):
            score = whole_number(value)
        elif not from_form and isinstance(value, int) and not isinstance(value, bool):
            score = value
        if score is None:
            return None, say(language, "whole_number")
        if not q["scale_min"] <= score <= q["scale_max"]:
            return None, say(language, "number_range", low=q["scale_min"], high=q["scale_max"])
        return score, None
    if kind == "text":
        if not isinstance(value, str):
            return None, say(language, "text_expected")
        text = one_line_break(value).strip()
        if "\x00" in text:
            return None, say(language, "bad_characters")
        if len(text) > q["max_length"]:
            return None, say(language, "too_long", limit=q["max_length"], length=len(text))
        return text, None
    # An option as the survey has it, by the value posted (its line breaks as LF on both sides).
    options: dict[str, str] = {}
    for option in q["options"]:
        options.setdefault(one_line_break(option), option)
    if kind == "single_choice":
        if isinstance(value, list) and from_form and len(value) == 1:
            value = value[0]
        picked = options.get(one_line_break(value)) if isinstance(value, str) else None
        if picked is None:
            return None, say(language, "pick_one")
        return picked, None
    if not isinstance(value, list):
        if not from_form:
            return None, say(language, "list_expected")
        value = [value]
    if not all(isinstance(v, str) for v in value):
        return None, say(language, "pick_among")
    chosen = [options.get(one_line_break(v)) for v in value]
    if any(c is None for c in chosen):
        return None, say(language, "pick_among")
    if len(set(chosen)) != len(chosen):
        return None, say(language, "pick_once")
    return [o for o in q["options"] if o in chosen], None
