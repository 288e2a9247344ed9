"""Pipeline and stage input and output shapes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crm.fields import EXAMPLE_IDS, DecimalText, Probability
from cxkit.fields import InputModel, PatchModel
from cxkit.http.pagination import Page

DEFAULT_STAGES: list[dict[str, Any]] = [
    {"name": "Qualification", "probability": "0.1"},
    {"name": "Needs analysis", "probability": "0.2"},
    {"name": "Proposal", "probability": "0.5"},
    {"name": "Negotiation", "probability": "0.8"},
    {"name": "Closed won", "probability": "1.0", "is_won": True},
    {"name": "Closed lost", "probability": "0", "is_lost": True},
]
EXAMPLE = {"name": "Enterprise sales", "is_default": False, "stages": DEFAULT_STAGES}
READ_EXAMPLE = {
    "id": EXAMPLE_IDS["pipeline"],
    "name": "Sales pipeline",
    "is_default": True,
    "stages": [
        {"id": EXAMPLE_IDS["stage"], "position": i, "is_won": False, "is_lost": False, **stage}
        for i, stage in enumerate(DEFAULT_STAGES)
    ],
    "version": 1,
    "created_at": "2026-11-23T10:00:00Z",
    "updated_at": "2026-11-23T10:00:00Z",
}


class StageIn(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "not": {"required": ["is_won", "is_lost"], "properties": {"is_won": {"const": True}, "is_lost": {"const": True}}}
        }
    )

    id: uuid.UUID | None = Field(None, description="On update: the stage kept (renamed, moved); omit for a new stage.")
    name: str = Field(min_length=1, max_length=100)
    probability: Probability = Field(description="Chance a deal in this stage is won, 0..1 (weights the forecast).")
    is_won: bool = Field(False, strict=True)
    is_lost: bool = Field(False, strict=True)

    @model_validator(mode="after")
    def _closed_stage_probability(self) -> StageIn:
        if self.is_won and self.is_lost:
            raise ValueError("a stage cannot be both won and lost")
        if self.is_won and self.probability != 1:
            raise ValueError("a won stage has probability 1")
        if self.is_lost and self.probability != 0:
            raise ValueError("a lost stage has probability 0")
        return self


def _check_stages(stages: list[StageIn]) -> None:
    names = [s.name.strip().lower() for s in stages]
    if len(set(names)) != len(names):
        raise ValueError("stage names must be unique within a pipeline")
    ids = [s.id for s in stages if s.id is not None]
    if len(set(ids)) != len(ids):
        raise ValueError("a stage id appears twice")
    if sum(s.is_won for s in stages) != 1 or sum(s.is_lost for s in stages) != 1:
        raise ValueError("a pipeline has exactly one won stage and one lost stage")
    if not any(not s.is_won and not s.is_lost for s in stages):
        raise ValueError("a pipeline needs at least one open stage")


class PipelineCreate(InputModel):
    """Stages in order; deals move through the open ones and end in the won or lost stage."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    name: str = Field(min_length=1, max_length=200)
    is_default: bool = Field(
        False, strict=True, description="True: deals without a pipeline go here (the previous default stops being it)."
    )
    stages: list[StageIn] = Field(min_length=3, max_length=30)

    @model_validator(mode="after")
    def _valid_stages(self) -> PipelineCreate:
        _check_stages(self.stages)
        return self


class PipelineUpdate(PatchModel):
    """`stages` replaces the list: send kept stages with their `id`; a stage left out is
    removed (refused while deals are in it)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "Sales (EMEA)", "is_default": True}]})

    name: str | None = Field(None, min_length=1, max_length=200)
    is_default: bool | None = Field(
        None,
        strict=True,
        description="Only `true`: make another pipeline the default to change it.",
        json_schema_extra={"enum": [True]},
    )
    stages: list[StageIn] | None = Field(None, min_length=3, max_length=30)

    not_null = ("name", "stages", "is_default")

    @model_validator(mode="after")
    def _valid(self) -> PipelineUpdate:
        if self.is_default is False:
            raise ValueError("is_default can only be set to true; make another pipeline the default instead")
        if self.stages is not None:
            _check_stages(self.stages)
        return self


class StageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    position: int
    probability: DecimalText
    is_won: bool
    is_lost: bool


class PipelineRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [READ_EXAMPLE]})

    id: uuid.UUID
    name: str
    is_default: bool
    stages: list[StageRead]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, pipeline: Any, stages: list[Any]) -> PipelineRead:
        return cls(
            id=pipeline.id,
            name=pipeline.name,
            is_default=pipeline.is_default,
            stages=[StageRead.model_validate(s) for s in stages],
            version=pipeline.version,
            created_at=pipeline.created_at,
            updated_at=pipeline.updated_at,
        )


class PipelinePage(Page[PipelineRead]):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [READ_EXAMPLE], "next_cursor": None}]})
