"""``POST /v2/rerank``: Cohere's v2 rerank API."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from crossrank.server.encoding import EncodeOptions
from crossrank.server.schemas import (
    MODEL_DESCRIPTION,
    NOT_BLANK,
    QUERY_DESCRIPTION,
    DocumentText,
    InstructedRequest,
    Integer,
    Meta,
    PositiveInt,
    Text,
    cohere_meta,
)
from crossrank.server.service import REQUEST_ID, Ranked, RerankCall


class CohereV2RerankRequest(InstructedRequest):
    """Cohere v2's fields; others are accepted and reported as ignored."""

    UNUSED: ClassVar[tuple[str, ...]] = ("priority",)

    model: Text | None = Field(None, description=MODEL_DESCRIPTION)
    query: Text = Field(description=QUERY_DESCRIPTION, json_schema_extra=NOT_BLANK)
    documents: list[Text]
    top_n: PositiveInt | None = None
    return_documents: bool = Field(
        False, description="Echo each document as `{text}` (sent by older v2 clients)."
    )
    max_tokens_per_doc: PositiveInt | None = Field(
        None, description="Score only the first n tokens of each document."
    )
    priority: Integer | None = Field(
        None, description="Accepted and ignored: requests are served in arrival order."
    )


class CohereV2Result(BaseModel):
    index: int
    relevance_score: float
    document: DocumentText | None = Field(None, description="Only with return_documents.")


class CohereV2RerankResponse(BaseModel):
    id: str
    results: list[CohereV2Result]
    meta: Meta


def to_call(body: CohereV2RerankRequest) -> RerankCall:
    options = EncodeOptions(
        max_tokens_per_doc=body.max_tokens_per_doc, instruction=body.instruction
    )
    return RerankCall(body.query, body.documents, body.top_n, options)


def reply(
    body: CohereV2RerankRequest, ranked: Ranked, model: str, ignored: list[str]
) -> CohereV2RerankResponse:
    def document(i: int) -> DocumentText | None:
        return DocumentText(text=body.documents[i]) if body.return_documents else None

    return CohereV2RerankResponse(
        id=REQUEST_ID.get(),
        results=[
            CohereV2Result(index=i, relevance_score=ranked.scores[i], document=document(i))
            for i in ranked.order
        ],
        meta=cohere_meta("2", ranked, ignored),
    )
