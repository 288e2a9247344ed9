"""Batch writes (`POST .../batch`): each item is validated on its own, so a bad item gets a
problem in its result and the others go on; an item's problem is shaped as the problem+json
answer a single write of it would have given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator, model_validator

from cxkit.fields import InputModel
from cxkit.http.problems import PROBLEM_TYPE_BASE, Conflict, Unprocessable

BATCH_MAX = 1000


@dataclass(frozen=True, slots=True)
class InvalidItem:
    """An item of a batch that failed validation: its field errors (locations inside the item)."""

    errors: list[dict[str, Any]]


def _item_or_errors(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError as exc:
        return InvalidItem([{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()])


def each_item(model: type[BaseModel]) -> Any:
    """`list[each_item(Model)]`: the items validate one by one; an invalid one becomes an
    `InvalidItem` instead of failing the whole body (the OpenAPI schema stays `Model`'s)."""
    return Annotated[model, WrapValidator(_item_or_errors)]


class BatchBody(InputModel):
    """Base of a batch's body, whose `items` are `list[each_item(Model)]` (Model an InputModel):
    a NUL character in an item is that item's problem (422 at its field), as any other invalid
    value of it is, and the others go ahead. InputModel refuses a NUL anywhere in a body before
    its fields are validated, which here would refuse the whole batch; the items are left to
    refuse their own, the rest of the body is checked as any body is."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            super()._refuse_nul({key: value for key, value in data.items() if key != "items"})
            return data
        return super()._refuse_nul(data)


class BatchItemProblem(BaseModel):
    """Why an item was not applied: the problem (RFC 9457) a single write of it would have answered."""

    type: str = Field(description="As in a problem+json answer: `.../problems/conflict` or `.../problems/unprocessable`.")
    status: int = Field(description="409 for a conflict (a key taken or repeated in the batch), 422 for invalid input.")
    title: str
    detail: str
    errors: list[dict[str, Any]] = Field(default_factory=list, description="Field problems, `loc` inside the item.")


def item_problem(status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An item's problem, shaped (type, title) as the answer of a single write would be."""
    kind = {409: Conflict, 422: Unprocessable}[status]
    return {
        "type": PROBLEM_TYPE_BASE + kind.slug,
        "status": status,
        "title": kind.title,
        "detail": detail,
        "errors": errors or [],
    }


def invalid_item_problem(item: InvalidItem) -> dict[str, Any]:
    return item_problem(422, "the item is not valid", item.errors)
