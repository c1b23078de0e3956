"""``POST /score`` and ``/v1/score``: vLLM's score API for cross-encoders.

``text_1`` and ``text_2`` (or their newer names ``queries`` and ``documents``) pair up as
vLLM pairs them: one text with one text, one with many, or many with as many.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field

from crossrank.server.schemas import (
    MODEL_DESCRIPTION,
    NOT_BLANK,
    Integer,
    Text,
    TolerantRequest,
)
from crossrank.server.service import REQUEST_ID, ApiError, Ranked, RerankCall

TEXTS = Text | Annotated[list[Text], Field(min_length=1)]
# A blank query is the service's 400; the schema states the rule, as for `query` elsewhere.
QueryText = Annotated[Text, Field(json_schema_extra=NOT_BLANK)]
QUERIES = QueryText | Annotated[list[QueryText], Field(min_length=1)]


def one_of(first: str, second: str) -> dict[str, Any]:
    """JSON Schema for "exactly one of two aliases"."""
    return {
        "anyOf": [{"required": [first]}, {"required": [second]}],
        "not": {"required": [first, second]},
    }


class ScoreRequest(
    TolerantRequest,
    json_schema_extra={"allOf": [one_of("text_1", "queries"), one_of("text_2", "documents")]},
):
    """vLLM's score fields; others are accepted and reported as ignored."""

    UNUSED: ClassVar[tuple[str, ...]] = ("truncate_prompt_tokens", "priority")

    model: Text | None = Field(None, description=MODEL_DESCRIPTION)
    # Not nullable: each is either sent with texts or not sent (the schema's allOf says
    # which pairs must be).
    text_1: QUERIES = Field(None, description="The query, or queries (alias: queries).")
    text_2: TEXTS = Field(None, description="The documents (alias: documents).")
    queries: QUERIES = Field(None, description="vLLM's newer name for text_1.")
    documents: TEXTS = Field(None, description="vLLM's newer name for text_2.")
    activation: bool | None = Field(
        None, description="false: logits instead of sigmoid scores (vLLM's flag)."
    )
    truncate_prompt_tokens: Integer | None = Field(None, description="Accepted, ignored.")
    priority: Integer | None = Field(None, description="Accepted, ignored.")


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class ScoreResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData] = Field(description="One score per pair, in input order.")
    usage: ScoreUsage


def texts_of(body: ScoreRequest, name: str, alias: str) -> tuple[str, list[str]]:
    """The field that was sent (under either name) and its texts as a list."""
    value = getattr(body, name) if name in body.model_fields_set else getattr(body, alias)
    used = name if name in body.model_fields_set else alias
    if name in body.model_fields_set and alias in body.model_fields_set:
        raise conflict(f"send {name} or {alias}, not both", name)
    if value is None:
        raise conflict(f"{name} (or {alias}) is required", name)
    return used, [value] if isinstance(value, str) else value


def to_call(body: ScoreRequest) -> RerankCall:
    first, queries = texts_of(body, "text_1", "queries")
    second, documents = texts_of(body, "text_2", "documents")
    if len(queries) == 1:  # one to one, or one to many
        return RerankCall(queries[0], documents, query_field=first, documents_field=second)
    if len(queries) != len(documents):
        raise conflict(
            f"{first} has {len(queries)} texts and {second} {len(documents)}: pairs need "
            f"one {first} text, or as many as {second} has",
            second,
        )
    return RerankCall(
        queries[0], documents, query_field=first, documents_field=second, queries=queries
    )


def conflict(message: str, field: str) -> ApiError:
    return ApiError(422, "validation_error", message, field=field)


def reply(body: ScoreRequest, ranked: Ranked, model: str, ignored: list[str]) -> ScoreResponse:
    values = ranked.logits if body.activation is False else ranked.scores
    return ScoreResponse(
        id=f"score-{REQUEST_ID.get()}",
        created=int(time.time()),
        model=model,
        data=[ScoreData(index=i, score=value) for i, value in enumerate(values)],
        usage=ScoreUsage(prompt_tokens=ranked.tokens, total_tokens=ranked.tokens),
    )
