"""Gateways pointed at a server started with no model name (`crossrank serve`, which calls
its model ``crossrank-default``), with only their base URL changed: they send the model
names their users type ("rerank-v3.5", a hub id), and a lone model answers them all.

LiteLLM's rerank providers, LangChain's Cohere reranker and the Cohere SDK, real and
unchanged from PyPI; every path gets ``Reranker.rerank``'s ranking.
"""

from __future__ import annotations

import os

import cohere
import pytest
from langchain_cohere import CohereRerank
from langchain_core.documents import Document

from crossrank.server.service import DEFAULT_MODEL_NAME

from .conftest import running, texts

# LiteLLM fetches a price list from GitHub at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm

QUERY = "how does a cross encoder rank the passages of a search"
DOCUMENTS = texts(9, seed=11)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def unnamed(reranker):
    """A server as `crossrank serve` with no --model starts it: one model, default name."""
    with running(reranker, model_name=DEFAULT_MODEL_NAME) as url:
        yield url


def expected(reranker, top_n: int | None = None) -> list[tuple[int, float]]:
    return [(r.index, r.relevance_score) for r in reranker.rerank(QUERY, DOCUMENTS, top_n=top_n)]


def same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=TOLERANCE)


# (LiteLLM model, the base URL its provider is given, relative to the server)
LITELLM_PROVIDERS = [
    ("cohere/rerank-english-v3.0", ""),  # Cohere v1: POST /v1/rerank
    ("cohere/rerank-v3.5", ""),  # Cohere v2: POST /v2/rerank
    ("jina_ai/jina-reranker-v2-base-multilingual", "/v1"),
    ("huggingface/BAAI/bge-reranker-base", ""),  # TEI: POST /rerank with texts
    ("infinity/mixedbread-ai/mxbai-rerank-large-v1", "/infinity"),
    ("hosted_vllm/BAAI/bge-reranker-v2-m3", ""),
    ("together_ai/Salesforce/Llama-Rank-V1", ""),
]


@pytest.mark.parametrize(
    ("model", "base"), LITELLM_PROVIDERS, ids=[m for m, _ in LITELLM_PROVIDERS]
)
def test_litellm_rerank_providers(unnamed, reranker, model, base):
    response = litellm.rerank(
        model=model,
        query=QUERY,
        documents=DOCUMENTS,
        top_n=4,
        api_base=f"{unnamed}{base}",
        api_key="unused",
        num_retries=0,
    )
    got = [(r["index"], r["relevance_score"]) for r in response.results]
    # TEI's API has no top_n: LiteLLM's huggingface provider gets every text back
    same_ranking(got[:4], expected(reranker, 4))
    if not model.startswith("huggingface/"):
        assert len(got) == 4


def test_litellm_infinity_gets_the_texts_back(unnamed, reranker):
    response = litellm.rerank(
        model="infinity/rerank",
        query=QUERY,
        documents=DOCUMENTS,
        return_documents=True,
        api_base=f"{unnamed}/infinity",
        api_key="unused",
    )
    assert [r["document"]["text"] for r in response.results] == [
        DOCUMENTS[i] for i, _ in expected(reranker)
    ]


def test_langchain_cohere_rerank_with_a_model_name(unnamed, reranker):
    rerank = CohereRerank(
        cohere_api_key="unused", base_url=unnamed, model="rerank-english-v3.0", top_n=3
    )
    ranked = rerank.compress_documents([Document(page_content=d) for d in DOCUMENTS], QUERY)
    got = [(DOCUMENTS.index(d.page_content), d.metadata["relevance_score"]) for d in ranked]
    same_ranking(got, expected(reranker, 3))


def test_cohere_sdk_with_a_hosted_model_name(unnamed, reranker):
    for client in (
        cohere.ClientV2(api_key="unused", base_url=unnamed),
        cohere.Client(api_key="unused", base_url=unnamed),
    ):
        response = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS, top_n=5)
        same_ranking(
            [(r.index, r.relevance_score) for r in response.results], expected(reranker, 5)
        )
        warnings = response.meta.warnings or []
        assert any("'rerank-v3.5' is not served here" in w for w in warnings), warnings
