"""``POST /rerank`` with a ``texts`` field: text-embeddings-inference's rerank API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from crossrank.server.encoding import EncodeOptions
from crossrank.server.schemas import (
    MODEL_DESCRIPTION,
    NOT_BLANK,
    QUERY_DESCRIPTION,
    InstructedRequest,
    Text,
)
from crossrank.server.service import Ranked, RerankCall


class TeiRerankRequest(InstructedRequest, json_schema_extra={"not": {"required": ["documents"]}}):
    """TEI's fields; others are accepted and reported as ignored (as TEI ignores them)."""

    model: Text | None = Field(None, description=MODEL_DESCRIPTION)
    query: Text = Field(description=QUERY_DESCRIPTION, json_schema_extra=NOT_BLANK)
    texts: list[Text]
    raw_scores: bool = Field(False, description="Return logits instead of sigmoid scores.")
    return_text: bool = False
    truncate: bool | None = Field(
        None,
        description=(
            "true: cut long texts to fit the model. false: refuse (413) texts that would be "
            "cut. Absent: the server's default (windows for 512-token models)."
        ),
    )
    truncation_direction: Literal["Right", "Left"] = Field(
        "Right", description="Which end of a text truncate=true keeps: Right keeps the start."
    )


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = Field(None, description="Only with return_text.")


def to_call(body: TeiRerankRequest) -> RerankCall:
    options = EncodeOptions(
        long_documents="truncate" if body.truncate else None,
        truncation_direction="left" if body.truncation_direction == "Left" else "right",
        instruction=body.instruction,
    )
    return RerankCall(
        body.query,
        body.texts,
        options=options,
        refuse_truncation=body.truncate is False,
        documents_field="texts",
    )


def reply(body: TeiRerankRequest, ranked: Ranked, model: str, ignored: list[str]) -> list[TeiRank]:
    values = ranked.logits if body.raw_scores else ranked.scores
    # Sorted by the score returned, which for raw scores can break sigmoid's ties.
    order = sorted(ranked.order, key=lambda i: -values[i])
    return [
        TeiRank(index=i, score=values[i], text=body.texts[i] if body.return_text else None)
        for i in order
    ]
