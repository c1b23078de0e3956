"""Official, unchanged clients from PyPI, and raw requests in the shapes each service
documents, pointed only at a crossrank server: rankings equal ``Reranker.rerank``.

Each client is given the server's URL and, where it sends a model name, the served one
(test_gateways.py sends others). Nothing else about any client is changed.
"""

from __future__ import annotations

import math

import cohere
import httpx
import pytest
from haystack import Document as HaystackDocument
from haystack.utils import Secret
from haystack_integrations.components.rankers.cohere import CohereRanker
from haystack_integrations.components.rankers.jina import JinaRanker
from langchain_cohere import CohereRerank as LangChainCohereRerank
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.cohere_rerank import CohereRerank as LlamaCohereRerank
from llama_index.postprocessor.jinaai_rerank import JinaRerank
from llama_index.postprocessor.tei_rerank import TextEmbeddingInference
from together import Together

from crossrank import Reranker

from .conftest import texts

QUERY = "which passage explains how a cross encoder ranks search results"
DOCUMENTS = texts(9, seed=7)
TOLERANCE = 1e-4


def expected(reranker: Reranker, top_n: int | None = None) -> list[tuple[int, float]]:
    return [(r.index, r.relevance_score) for r in reranker.rerank(QUERY, DOCUMENTS, top_n=top_n)]


def same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=TOLERANCE)


def nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(DOCUMENTS)]


def node_ranking(ranked: list[NodeWithScore]) -> list[tuple[int, float]]:
    return [(int(n.node.node_id), n.score) for n in ranked]


# ---------------------------------------------------------------- SDKs and frameworks


def test_cohere_sdk_v1(server, reranker):
    client = cohere.Client(api_key="unused", base_url=server)
    response = client.rerank(query=QUERY, documents=DOCUMENTS, top_n=4, max_chunks_per_doc=10)
    same_ranking([(r.index, r.relevance_score) for r in response.results], expected(reranker, 4))
    tokens = sum(len(f) for f in reranker.encoder.encode(QUERY, DOCUMENTS))
    assert response.meta.tokens.input_tokens == tokens
    assert response.meta.billed_units.search_units == 1  # 9 documents: one unit of 100


def test_cohere_sdk_v2(server, reranker):
    client = cohere.ClientV2(api_key="unused", base_url=server)
    response = client.rerank(model="tiny", query=QUERY, documents=DOCUMENTS, priority=5)
    same_ranking([(r.index, r.relevance_score) for r in response.results], expected(reranker))
    assert response.meta.warnings == ["ignored (not used by crossrank): priority"]
    assert all(getattr(r, "document", None) is None for r in response.results)


def test_langchain_cohere_reranker(server, reranker):
    rerank = LangChainCohereRerank(cohere_api_key="unused", base_url=server, model="tiny", top_n=3)
    results = rerank.rerank(DOCUMENTS, QUERY)
    same_ranking([(r["index"], r["relevance_score"]) for r in results], expected(reranker, 3))
    compressed = rerank.compress_documents([Document(page_content=d) for d in DOCUMENTS], QUERY)
    assert [d.page_content for d in compressed] == [DOCUMENTS[i] for i, _ in expected(reranker, 3)]


def test_llama_index_jina_reranker(server, reranker):
    rerank = JinaRerank(base_url=f"{server}/v1", api_key="unused", model="tiny", top_n=4)
    ranked = rerank.postprocess_nodes(nodes(), query_bundle=QueryBundle(QUERY))
    same_ranking(node_ranking(ranked), expected(reranker, 4))


def test_llama_index_cohere_reranker(server, reranker):
    rerank = LlamaCohereRerank(base_url=server, api_key="unused", model="tiny", top_n=4)
    ranked = rerank.postprocess_nodes(nodes(), query_bundle=QueryBundle(QUERY))
    same_ranking(node_ranking(ranked), expected(reranker, 4))


def test_llama_index_tei_reranker(server, reranker):
    rerank = TextEmbeddingInference(base_url=server, top_n=4)  # sends no model: the first
    ranked = rerank.postprocess_nodes(nodes(), query_bundle=QueryBundle(QUERY))
    same_ranking(node_ranking(ranked), expected(reranker, 4))


def test_together_sdk(server, reranker):
    client = Together(api_key="unused", base_url=server)
    documents = [{"title": f"passage {i}", "text": d} for i, d in enumerate(DOCUMENTS)]
    response = client.rerank.create(
        model="tiny",
        query=QUERY,
        documents=documents,
        top_n=3,
        return_documents=True,
        rank_fields=["title", "text"],
    )
    as_text = [f"title: {d['title']}\ntext: {d['text']}" for d in documents]
    want = [(r.index, r.relevance_score) for r in reranker.rerank(QUERY, as_text, top_n=3)]
    same_ranking([(r.index, r.relevance_score) for r in response.results], want)
    assert response.object == "rerank" and response.model == "tiny"
    assert response.usage.prompt_tokens == response.usage.total_tokens > 0
    assert response.usage.completion_tokens == 0


def haystack_ranking(ranker) -> list[tuple[int, float]]:
    documents = [HaystackDocument(content=d) for d in DOCUMENTS]
    ranked = ranker.run(query=QUERY, documents=documents)["documents"]
    return [(DOCUMENTS.index(d.content), d.score) for d in ranked]


def test_haystack_cohere_ranker(server, reranker):
    ranker = CohereRanker(
        model="tiny", top_k=4, api_key=Secret.from_token("unused"), api_base_url=server
    )
    ranker.warm_up()
    same_ranking(haystack_ranking(ranker), expected(reranker, 4))


def test_haystack_jina_ranker(server, reranker):
    ranker = JinaRanker(
        model="tiny", top_k=4, api_key=Secret.from_token("unused"), base_url=f"{server}/v1/rerank"
    )
    same_ranking(haystack_ranking(ranker), expected(reranker, 4))


# ---------------------------------------------------------------- documented raw shapes


def test_tei_rerank_shape_and_compute_tokens_header(server, reranker):
    body = {
        "query": QUERY,
        "texts": DOCUMENTS,
        "raw_scores": False,
        "return_text": True,
        "truncate": False,
        "truncation_direction": "Right",
    }
    response = httpx.post(f"{server}/rerank", json=body)
    ranks = response.json()
    assert isinstance(ranks, list) and set(ranks[0]) == {"index", "score", "text"}
    same_ranking([(r["index"], r["score"]) for r in ranks], expected(reranker))
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in ranks)
    tokens = sum(len(f) for f in reranker.encoder.encode(QUERY, DOCUMENTS))
    assert response.headers["x-compute-tokens"] == str(tokens)
    assert "x-crossrank-ignored-fields" not in response.headers


def test_tei_ignores_fields_it_does_not_know_as_tei_does(server, reranker):
    body = {"query": QUERY, "texts": DOCUMENTS, "top_n": 2, "model": "tiny"}
    response = httpx.post(f"{server}/rerank", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-crossrank-ignored-fields"] == "top_n"
    same_ranking([(r["index"], r["score"]) for r in response.json()], expected(reranker))
    assert all("text" not in r for r in response.json())  # left out, never null


def test_tei_left_truncation_keeps_the_end_of_a_long_text(server, reranker, tiny_checkpoint):
    long_text = "alpha " * 600 + "omega " * 20
    body = {"query": QUERY, "texts": [long_text], "truncate": True, "raw_scores": True}
    right = httpx.post(f"{server}/rerank", json=body).json()[0]["score"]
    left = httpx.post(f"{server}/rerank", json={**body, "truncation_direction": "Left"})
    truncating = Reranker.from_pretrained(tiny_checkpoint, device="cpu", long_documents="truncate")
    assert right == pytest.approx(truncating.score(QUERY, [long_text], raw=True)[0], abs=1e-5)
    budget = truncating.max_length - truncating.encoder.num_special
    budget -= len(truncating.encoder.tokenizer.encode(QUERY, add_special_tokens=False))
    tail = " ".join(long_text.split()[-budget:])  # one token per word here
    assert left.json()[0]["score"] == pytest.approx(
        truncating.score(QUERY, [tail], raw=True)[0], abs=1e-5
    )


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank"])
def test_vllm_rerank_shape(server, reranker, path):
    body = {"model": "tiny", "query": QUERY, "documents": DOCUMENTS, "top_n": 3}
    reply = httpx.post(f"{server}{path}", json=body).json()
    same_ranking(
        [(r["index"], r["relevance_score"]) for r in reply["results"]], expected(reranker, 3)
    )
    assert reply["id"] and reply["model"] == "tiny"
    assert reply["usage"]["total_tokens"] > 0
    assert [r["document"]["text"] for r in reply["results"]] == [
        DOCUMENTS[r["index"]] for r in reply["results"]
    ]


def pairs_scores(reranker: Reranker, pairs: list[tuple[str, str]]) -> list[float]:
    return reranker.score_pairs(pairs)


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
def test_vllm_score_one_to_one_one_to_many_and_many_to_many(server, reranker, path):
    url = f"{server}{path}"
    one = httpx.post(url, json={"model": "tiny", "text_1": QUERY, "text_2": DOCUMENTS[0]}).json()
    assert one["object"] == "list" and one["model"] == "tiny"
    assert [d["object"] for d in one["data"]] == ["score"]
    assert one["data"][0]["score"] == pytest.approx(
        reranker.score(QUERY, DOCUMENTS[:1])[0], abs=TOLERANCE
    )
    assert one["usage"]["prompt_tokens"] == one["usage"]["total_tokens"] > 0

    many = httpx.post(url, json={"text_1": QUERY, "text_2": DOCUMENTS}).json()
    assert [d["index"] for d in many["data"]] == list(range(len(DOCUMENTS)))  # input order
    assert [d["score"] for d in many["data"]] == pytest.approx(
        reranker.score(QUERY, DOCUMENTS), abs=TOLERANCE
    )
    assert (
        many["data"]
        == httpx.post(url, json={"text_1": [QUERY], "text_2": DOCUMENTS}).json()["data"]
    )

    queries = [f"{QUERY} {i}" if i % 2 else "another query" for i in range(len(DOCUMENTS))]
    pairwise = httpx.post(url, json={"queries": queries, "documents": DOCUMENTS}).json()
    assert [d["score"] for d in pairwise["data"]] == pytest.approx(
        pairs_scores(reranker, list(zip(queries, DOCUMENTS, strict=True))), abs=TOLERANCE
    )
    raw = httpx.post(url, json={"text_1": QUERY, "text_2": DOCUMENTS, "activation": False})
    assert [d["score"] for d in raw.json()["data"]] == pytest.approx(
        reranker.score(QUERY, DOCUMENTS, raw=True), abs=TOLERANCE
    )


def test_infinity_rerank_shape(server, reranker):
    body = {
        "query": QUERY,
        "documents": DOCUMENTS,
        "return_documents": False,
        "raw_scores": False,
        "model": "tiny",
        "top_n": 5,
    }
    reply = httpx.post(f"{server}/rerank", json=body).json()
    assert reply["object"] == "rerank"
    same_ranking(
        [(r["index"], r["relevance_score"]) for r in reply["results"]], expected(reranker, 5)
    )
    assert all("document" not in r for r in reply["results"])  # left out, never null
    assert reply["usage"]["prompt_tokens"] == reply["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_together_rerank_shape_with_rank_fields(server, reranker, path):
    documents = [{"title": f"passage {i}", "text": d} for i, d in enumerate(DOCUMENTS)]
    body = {
        "model": "tiny",
        "query": QUERY,
        "documents": documents,
        "top_n": 3,
        "return_documents": True,
        "rank_fields": ["title", "text"],
    }
    reply = httpx.post(f"{server}{path}", json=body).json()
    as_text = [f"title: {d['title']}\ntext: {d['text']}" for d in documents]
    want = [(r.index, r.relevance_score) for r in reranker.rerank(QUERY, as_text, top_n=3)]
    same_ranking([(r["index"], r["relevance_score"]) for r in reply["results"]], want)
    assert [r["document"] for r in reply["results"]] == [documents[i] for i, _ in want]


# ---------------------------------------------------------------- the tolerance rule


def test_cohere_v2_accepts_return_documents_as_cohere_does(server, reranker):
    body = {"model": "tiny", "query": QUERY, "documents": DOCUMENTS, "return_documents": True}
    reply = httpx.post(f"{server}/v2/rerank", json=body).json()
    same_ranking([(r["index"], r["relevance_score"]) for r in reply["results"]], expected(reranker))
    assert [r["document"]["text"] for r in reply["results"]] == [
        DOCUMENTS[i] for i, _ in expected(reranker)
    ]
    assert reply["meta"]["billed_units"] == {"search_units": 1}
    assert "warnings" not in reply["meta"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/rerank", {"query": QUERY, "documents": DOCUMENTS}),
        ("/v2/rerank", {"query": QUERY, "documents": DOCUMENTS}),
        ("/rerank", {"query": QUERY, "texts": DOCUMENTS}),
        ("/rerank", {"query": QUERY, "documents": DOCUMENTS}),
        ("/score", {"text_1": QUERY, "text_2": DOCUMENTS}),
    ],
)
def test_unused_fields_are_accepted_and_reported_on_every_route(server, path, body):
    extra = {"stream": True, "user": {"id": 1}, "temperature": "high", "a,b\n\U0001f600": 0}
    response = httpx.post(f"{server}{path}", json={**body, **extra})
    assert response.status_code == 200, response.text
    reported = response.headers["x-crossrank-ignored-fields"]
    assert reported == "stream, user, temperature, a%2Cb%0A%F0%9F%98%80"
    if path in ("/v1/rerank", "/v2/rerank"):  # Cohere's meta.warnings too
        assert response.json()["meta"]["warnings"] == [
            f"ignored (not used by crossrank): {reported}"
        ]


def test_a_thousand_extra_fields_make_a_short_header(server):
    body = {"query": QUERY, "documents": ["a"], **{f"field{i}": i for i in range(1000)}}
    response = httpx.post(f"{server}/v2/rerank", json=body)
    assert response.status_code == 200
    assert response.headers["x-crossrank-ignored-fields"].endswith("field19, ... (980 more)")


def test_search_units_count_inputs_by_the_hundred(server, reranker):
    documents = texts(150, seed=3, longest=5)
    reply = httpx.post(f"{server}/v2/rerank", json={"query": QUERY, "documents": documents})
    assert reply.json()["meta"]["billed_units"]["search_units"] == math.ceil(150 / 100)
