"""``POST /v1/rerank``: Jina's rerank API, which also takes Cohere v1's fields and is the
route Together's SDK calls (the reply carries each one's keys: Together's ``object`` and
``completion_tokens``, Cohere's ``meta``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from crossrank.server.encoding import EncodeOptions
from crossrank.server.schemas import (
    MODEL_DESCRIPTION,
    NOT_BLANK,
    QUERY_DESCRIPTION,
    InstructedRequest,
    Meta,
    PositiveInt,
    Text,
    cohere_meta,
)
from crossrank.server.service import REQUEST_ID, ApiError, Ranked, RerankCall


class JinaRerankRequest(InstructedRequest):
    """Jina's fields and Cohere v1's; others are accepted and reported as ignored."""

    model: Text | None = Field(None, description=MODEL_DESCRIPTION)
    query: Text = Field(description=QUERY_DESCRIPTION, json_schema_extra=NOT_BLANK)
    documents: list[Text | dict[Text, Text]] = Field(
        description=(
            "Texts, or objects with a `text` field (Jina), or objects of string fields "
            "ranked on `rank_fields` (Cohere v1)."
        )
    )
    top_n: PositiveInt | None = Field(
        None, description="Return the best n; more than the documents given returns all."
    )
    return_documents: bool = Field(True, description="Echo each document in its result.")
    rank_fields: list[Text] | None = Field(
        None,
        min_length=1,
        description=(
            "Cohere v1: the fields of object documents to rank on, in order; each object "
            "is read as `field: value` lines. Default: the `text` field."
        ),
    )
    max_chunks_per_doc: PositiveInt | None = Field(
        None,
        description="Cohere v1: score only this many windows of a long document, the ones "
        "BM25 ranks best for the query (select-then-score).",
    )
    max_tokens_per_doc: PositiveInt | None = Field(
        None, description="Cohere: score only the first n tokens of each document."
    )


class JinaUsage(BaseModel):
    total_tokens: int = Field(description="Tokens the model read for this request.")
    prompt_tokens: int = Field(description="The same (all of them are input).")
    completion_tokens: int = Field(0, description="Always 0 (Together's usage has it).")


class JinaResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = Field(
        None, description="The document as sent (a text becomes `{text}`); absent unless asked."
    )


class JinaRerankResponse(BaseModel):
    id: str = Field(description="The request id (also the X-Request-ID header).")
    object: Literal["rerank"] = "rerank"
    model: str
    usage: JinaUsage
    results: list[JinaResult]
    meta: Meta = Field(description="Cohere v1's meta, for Cohere clients.")


def to_call(body: JinaRerankRequest) -> RerankCall:
    texts = [document_text(d, i, body.rank_fields) for i, d in enumerate(body.documents)]
    options = EncodeOptions(
        max_tokens_per_doc=body.max_tokens_per_doc,
        max_chunks_per_doc=body.max_chunks_per_doc,
        instruction=body.instruction,
    )
    return RerankCall(body.query, texts, body.top_n, options)


def reply(
    body: JinaRerankRequest, ranked: Ranked, model: str, ignored: list[str]
) -> JinaRerankResponse:
    results = [
        JinaResult(
            index=i,
            relevance_score=ranked.scores[i],
            document=as_object(body.documents[i]) if body.return_documents else None,
        )
        for i in ranked.order
    ]
    return JinaRerankResponse(
        id=REQUEST_ID.get(),
        model=model,
        usage=JinaUsage(total_tokens=ranked.tokens, prompt_tokens=ranked.tokens),
        results=results,
        meta=cohere_meta("1", ranked, ignored),
    )


def document_text(document: str | dict[str, str], index: int, rank_fields: list[str] | None) -> str:
    """The text to score for a Jina/Cohere v1 document."""
    if isinstance(document, str):
        return document
    fields = rank_fields or ["text"]
    for name in fields:
        if name not in document:
            hint = "" if rank_fields else " (or name the fields to rank on in rank_fields)"
            raise ApiError(
                422,
                "missing_field",
                f"document {index} has no {name!r} field{hint}",
                field=f"documents.{index}.{name}",
            )
    if len(fields) == 1:
        return document[fields[0]]
    # Several fields: one "name: value" line each, in rank_fields order (Cohere's format).
    return "\n".join(f"{name}: {document[name]}" for name in fields)


def as_object(document: str | dict[str, str]) -> dict[str, str]:
    return {"text": document} if isinstance(document, str) else document
