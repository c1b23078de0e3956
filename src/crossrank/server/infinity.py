"""``POST /infinity/rerank``: Infinity's rerank API, for clients that parse its reply.

Infinity's ``/rerank`` takes the same body as vLLM's and Together's (``rerank_compat.py``)
but answers differently: each result's ``document`` is the text itself, not ``{"text":
...}``, and documents are left out unless asked for. Its clients (LiteLLM's ``infinity/``
provider, Infinity's own) send exactly what vLLM's do, so no field tells them apart on a
shared route; they get this one by a base URL ending in ``/infinity``.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field

from crossrank.server import rerank_compat
from crossrank.server.jina import document_text
from crossrank.server.service import REQUEST_ID, Ranked, RerankCall

PATHS = ("/infinity/rerank", "/infinity/v1/rerank")  # Infinity's paths, with --url-prefix /v1


class InfinityRerankRequest(rerank_compat.CompatRerankRequest):
    """Infinity's fields (vLLM's and Together's are accepted too, as on ``/rerank``)."""

    return_documents: bool = Field(False, description="Echo each document's text (Infinity).")


class InfinityResult(BaseModel):
    relevance_score: float
    index: int
    document: str | None = Field(None, description="The text scored; absent unless asked.")


class InfinityRerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    results: list[InfinityResult]
    model: str
    usage: rerank_compat.CompatUsage
    id: str
    created: int


def to_call(body: InfinityRerankRequest) -> RerankCall:
    return rerank_compat.to_call(body)


def reply(
    body: InfinityRerankRequest, ranked: Ranked, model: str, ignored: list[str]
) -> InfinityRerankResponse:
    values = ranked.logits if body.raw_scores else ranked.scores
    order = sorted(ranked.order, key=lambda i: -values[i])
    texts = [document_text(d, i, body.rank_fields) for i, d in enumerate(body.documents)]
    return InfinityRerankResponse(
        results=[
            InfinityResult(
                relevance_score=values[i],
                index=i,
                document=texts[i] if body.return_documents else None,
            )
            for i in order
        ],
        model=model,
        usage=rerank_compat.CompatUsage(prompt_tokens=ranked.tokens, total_tokens=ranked.tokens),
        id=REQUEST_ID.get(),
        created=int(time.time()),
    )
