"""``POST /rerank`` with a ``documents`` field: the Cohere-style body that vLLM, Infinity
and Together accept on their ``/rerank`` (and ``/v1/rerank``) routes, answered in vLLM's
and Together's shape (``document`` as ``{"text": ...}``; Infinity's shape, with the text
itself, is ``infinity.py``'s route).

Told apart from TEI's body (``tei.py``) by its fields: TEI sends ``texts``.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from crossrank.server.encoding import EncodeOptions
from crossrank.server.jina import as_object, document_text
from crossrank.server.schemas import (
    MODEL_DESCRIPTION,
    NOT_BLANK,
    QUERY_DESCRIPTION,
    InstructedRequest,
    Integer,
    PositiveInt,
    Text,
)
from crossrank.server.service import REQUEST_ID, Ranked, RerankCall


class CompatRerankRequest(InstructedRequest, json_schema_extra={"not": {"required": ["texts"]}}):
    """vLLM's, Infinity's and Together's rerank fields; others are reported as ignored."""

    # vLLM fields that would change how inputs are cut or queued; not used here.
    UNUSED: ClassVar[tuple[str, ...]] = ("truncate_prompt_tokens", "priority")

    model: Text | None = Field(None, description=MODEL_DESCRIPTION)
    query: Text = Field(description=QUERY_DESCRIPTION, json_schema_extra=NOT_BLANK)
    documents: list[Text | dict[Text, Text]] = Field(
        description="Texts, or objects ranked on their `text` field or on `rank_fields`."
    )
    top_n: PositiveInt | None = Field(
        None, description="Return the best n; more than the documents given returns all."
    )
    return_documents: bool = Field(
        True, description="Echo each document (vLLM always does; Infinity when asked)."
    )
    raw_scores: bool = Field(False, description="Infinity: logits instead of sigmoid scores.")
    rank_fields: list[Text] | None = Field(
        None, min_length=1, description="Together: the fields of object documents to rank on."
    )
    truncate_prompt_tokens: Integer | None = Field(None, description="vLLM: accepted, ignored.")
    priority: Integer | None = Field(None, description="vLLM: accepted, ignored.")


class CompatUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CompatResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = Field(
        None, description="The document as sent (a text becomes `{text}`); absent unless asked."
    )


class CompatRerankResponse(BaseModel):
    id: str
    object: Literal["rerank"] = "rerank"
    model: str
    created: int
    usage: CompatUsage
    results: list[CompatResult]


def to_call(body: CompatRerankRequest) -> RerankCall:
    texts = [document_text(d, i, body.rank_fields) for i, d in enumerate(body.documents)]
    return RerankCall(body.query, texts, body.top_n, EncodeOptions(instruction=body.instruction))


def reply(
    body: CompatRerankRequest, ranked: Ranked, model: str, ignored: list[str]
) -> CompatRerankResponse:
    values = ranked.logits if body.raw_scores else ranked.scores
    order = sorted(ranked.order, key=lambda i: -values[i])
    return CompatRerankResponse(
        id=REQUEST_ID.get(),
        model=model,
        created=int(time.time()),
        usage=CompatUsage(prompt_tokens=ranked.tokens, total_tokens=ranked.tokens),
        results=[
            CompatResult(
                index=i,
                relevance_score=values[i],
                document=as_object(body.documents[i]) if body.return_documents else None,
            )
            for i in order
        ],
    )
