"""Each API dialect through its own client, against ``Reranker.rerank`` on the same inputs."""

from __future__ import annotations

import cohere
import httpx
import pytest

from crossrank import Reranker
from crossrank.engine.conventions import sigmoid
from crossrank.server.service import NOT_BLANK_PATTERN

from .conftest import running, texts

QUERY = "how does a neural reranker score passages"
DOCUMENTS = [*texts(12, seed=1), "search " * 700]  # the last is longer than 512 tokens


def expected(reranker: Reranker, documents: list[str], top_n: int | None = None):
    return [(r.index, r.relevance_score) for r in reranker.rerank(QUERY, documents, top_n=top_n)]


def test_cohere_v1_sdk_gets_the_scores_of_reranker_rerank(server, reranker):
    client = cohere.Client(api_key="unused", base_url=server)
    response = client.rerank(query=QUERY, documents=DOCUMENTS, top_n=5, return_documents=True)
    assert [(r.index, r.relevance_score) for r in response.results] == expected(
        reranker, DOCUMENTS, 5
    )
    assert [r.document.text for r in response.results] == [
        DOCUMENTS[r.index] for r in response.results
    ]
    assert response.id and response.meta.api_version.version == "1"


def test_cohere_v1_rank_fields_read_object_documents_as_field_lines(server, reranker):
    documents = [
        {"title": "Rerankers", "body": "a cross encoder reads query and passage together"},
        {"title": "Cats", "body": "cats sleep most of the day"},
    ]
    client = cohere.Client(api_key="unused", base_url=server)
    response = client.rerank(query=QUERY, documents=documents, rank_fields=["title", "body"])
    as_text = [f"title: {d['title']}\nbody: {d['body']}" for d in documents]
    assert [(r.index, r.relevance_score) for r in response.results] == expected(reranker, as_text)
    # Documents come back as sent, every field kept.
    assert (
        response.results[0].document.model_dump(exclude_none=True)
        == documents[response.results[0].index]
    )


def test_cohere_v2_sdk_gets_the_scores_of_reranker_rerank(server, reranker):
    client = cohere.ClientV2(api_key="unused", base_url=server)
    # The model field names a served model (an unknown name is a 404, see test_models).
    response = client.rerank(model="tiny", query=QUERY, documents=DOCUMENTS, top_n=3)
    assert [(r.index, r.relevance_score) for r in response.results] == expected(
        reranker, DOCUMENTS, 3
    )
    assert response.meta.api_version.version == "2"


def test_jina_shape_with_text_objects_usage_and_all_results_past_top_n(server, reranker):
    documents = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, DOCUMENTS[2]]
    body = {"model": "tiny", "query": QUERY, "documents": documents}
    reply = httpx.post(f"{server}/v1/rerank", json={**body, "top_n": 10}).json()
    plain = [DOCUMENTS[0], DOCUMENTS[1], DOCUMENTS[2]]
    assert [(r["index"], r["relevance_score"]) for r in reply["results"]] == expected(
        reranker, plain
    )
    assert [r["document"] for r in reply["results"]] == [
        {"text": plain[r["index"]]} for r in reply["results"]
    ]
    assert reply["model"] == "tiny"
    features = reranker.encoder.encode(QUERY, plain)
    assert reply["usage"]["total_tokens"] == sum(len(f) for f in features)
    assert reply["usage"]["prompt_tokens"] == reply["usage"]["total_tokens"]
    assert reply["meta"]["tokens"]["input_tokens"] == reply["usage"]["total_tokens"]

    bare = httpx.post(f"{server}/v1/rerank", json={**body, "return_documents": False}).json()
    assert all("document" not in r for r in bare["results"])


def test_tei_shape_sorted_by_score_with_raw_scores_and_text(server, reranker):
    reply = httpx.post(
        f"{server}/rerank",
        json={"query": QUERY, "texts": DOCUMENTS[:6], "raw_scores": True, "return_text": True},
    ).json()
    logits = reranker.score(QUERY, DOCUMENTS[:6], raw=True)
    assert [r["score"] for r in reply] == sorted(logits, reverse=True)
    assert all(r["score"] == logits[r["index"]] for r in reply)
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in reply)

    plain = httpx.post(f"{server}/rerank", json={"query": QUERY, "texts": DOCUMENTS[:6]}).json()
    assert [(r["index"], r["score"]) for r in plain] == expected(reranker, DOCUMENTS[:6])
    assert all("text" not in r for r in plain)


def test_tei_truncate_true_truncates_and_false_refuses_to(server, reranker, tiny_checkpoint):
    long_text = DOCUMENTS[-1]
    body = {"query": QUERY, "texts": [long_text, "short"], "raw_scores": True}
    truncating = Reranker.from_pretrained(tiny_checkpoint, device="cpu", long_documents="truncate")
    reply = httpx.post(f"{server}/rerank", json={**body, "truncate": True}).json()
    assert {r["index"]: r["score"] for r in reply} == dict(
        enumerate(truncating.score(QUERY, [long_text, "short"], raw=True))
    )
    # This model reads long documents in windows by default: nothing is cut, so false is fine.
    assert httpx.post(f"{server}/rerank", json={**body, "truncate": False}).status_code == 200

    with running(truncating) as url:
        refused = httpx.post(f"{url}/rerank", json={**body, "truncate": False})
        assert refused.status_code == 413
        assert refused.json()["field"] == "texts.0"
        assert refused.json()["limit"] == truncating.max_length
        assert httpx.post(f"{url}/rerank", json=body).status_code == 200


def test_long_documents_report_how_they_were_cut(server, reranker):
    reply = httpx.post(
        f"{server}/v2/rerank",
        json={"query": QUERY, "documents": [DOCUMENTS[-1], "short"], "max_tokens_per_doc": 8},
    ).json()
    # Only the first 8 document tokens: the same as the reranker on the first 8 words.
    assert {r["index"]: r["relevance_score"] for r in reply["results"]}[0] == pytest.approx(
        reranker.score(QUERY, ["search " * 8])[0], abs=1e-6
    )
    assert "1 documents were not read in full (indices 0)" in reply["meta"]["warnings"]

    one_window = httpx.post(
        f"{server}/v1/rerank",
        json={"query": QUERY, "documents": [DOCUMENTS[-1]], "max_chunks_per_doc": 1},
    ).json()
    first = reranker.encoder.encode(QUERY, [DOCUMENTS[-1]])[0]
    assert one_window["usage"]["total_tokens"] == len(first)
    assert one_window["results"][0]["relevance_score"] == sigmoid(reranker.logits([first])[0])


def test_empty_documents_give_empty_results(server):
    reply = httpx.post(f"{server}/v2/rerank", json={"query": QUERY, "documents": []})
    assert reply.status_code == 200
    assert reply.json()["results"] == []


def test_health_models_docs_and_request_ids(server):
    assert httpx.get(f"{server}/health").json() == {
        "status": "ok",
        "model": "tiny",
        "models": ["tiny"],
    }
    card = httpx.get(f"{server}/v1/models").json()["data"][0]
    assert card["id"] == "tiny" and card["max_length"] == 512
    assert httpx.get(f"{server}/docs").status_code == 200
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {
        "/v1/rerank",
        "/v2/rerank",
        "/rerank",
        "/score",
        "/v1/score",
        "/health",
        "/metrics",
    } <= set(schema["paths"])
    own = httpx.get(f"{server}/health", headers={"X-Request-ID": "trace-42"})
    assert own.headers["x-request-id"] == "trace-42"
    forged = httpx.get(f"{server}/health", headers={"X-Request-ID": "a b\tc"})
    assert forged.headers["x-request-id"] != "a b\tc"


def test_whole_number_floats_count_as_integers_as_in_json_schema(server, reranker):
    reply = httpx.post(
        f"{server}/v1/rerank",
        json={
            "query": QUERY,
            "documents": DOCUMENTS[:4],
            "top_n": 2.0,
            "max_tokens_per_doc": 500.0,
        },
    )
    assert [(r["index"], r["relevance_score"]) for r in reply.json()["results"]] == expected(
        reranker, DOCUMENTS[:4], 2
    )


def test_the_schema_states_this_servers_limits(reranker):
    strict = {"strict_model_names": True, "model_aliases": (("rerank-v3.5", "tiny"),)}
    with running(reranker, max_documents=7, **strict) as url:
        schemas = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
    with running(reranker) as url:  # a lone model answering any name
        lenient = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
    assert schemas["JinaRerankRequest"]["properties"]["documents"]["maxItems"] == 7
    assert schemas["TeiRerankRequest"]["properties"]["texts"]["maxItems"] == 7
    assert schemas["CohereV2RerankRequest"]["properties"]["query"]["pattern"] == NOT_BLANK_PATTERN
    names = ["JinaRerankRequest", "CohereV2RerankRequest", "TeiRerankRequest", "ScoreRequest"]
    for name in [*names, "InfinityRerankRequest"]:
        # The tolerance rule: fields crossrank does not use may be sent; the model is named.
        assert schemas[name]["additionalProperties"] is True
        model = schemas[name]["properties"]["model"]["anyOf"]
        assert model[0] == {"enum": ["tiny", "rerank-v3.5"]}
        assert {"type": "string"} in [
            {"type": t.get("type")} for t in lenient[name]["properties"]["model"]["anyOf"]
        ]
        assert "enum" not in str(lenient[name]["properties"]["model"])
