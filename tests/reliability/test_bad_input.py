"""The bad-input matrix: each input gets its documented 4xx, or a correct answer where it is
legal, and the server stays healthy after every one."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from server.conftest import running

QUERY = "what is a reranker"
JSON = {"content-type": "application/json"}


def call(url: str, path: str, body: object = None, content: bytes | None = None, **kw):
    if content is None:
        return httpx.post(f"{url}{path}", json=body, timeout=60, **kw)
    return httpx.post(f"{url}{path}", content=content, headers=JSON, timeout=60, **kw)


def refused(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["error_type"] == error_type
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.fixture(autouse=True)
def stays_healthy(server):
    yield
    assert httpx.get(f"{server}/health", timeout=10).json()["status"] == "ok"
    service = server.app.state.service
    assert service.admitted == 0 and service.batcher.queued_requests == 0


ROUTES = [
    ("/v1/rerank", "documents"),
    ("/v2/rerank", "documents"),
    ("/rerank", "texts"),  # TEI's body
    ("/rerank", "documents"),  # the Cohere-style body of vLLM, Infinity and Together
]


@pytest.mark.parametrize(("path", "field"), ROUTES)
@pytest.mark.parametrize("query", ["", " ", "\n\t\u3000"])
def test_empty_query(server, path, field, query):
    body = refused(call(server, path, {"query": query, field: ["a"]}), 400, "empty_query")
    assert body["field"] == "query"


@pytest.mark.parametrize(("path", "field"), ROUTES)
def test_empty_and_whitespace_documents_are_scored(server, path, field):
    documents = ["", " ", "\n\t", "a reranker reorders results"]
    response = call(server, path, {"query": QUERY, field: documents})
    assert response.status_code == 200, response.text
    reply = response.json()
    results = reply if isinstance(reply, list) else reply["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]  # one score each
    assert call(server, path, {"query": QUERY, field: []}).status_code == 200


@pytest.mark.parametrize(("path", "field"), ROUTES)
def test_ten_thousand_documents(server, path, field):
    body = refused(
        call(server, path, {"query": QUERY, field: ["passage"] * 10_000}),
        413,
        "too_many_documents",
    )
    assert body["limit"] == 1000 and body["field"] == field


def test_one_ten_megabyte_document_is_refused_before_tokenizing(server):
    started = time.perf_counter()
    document = "rerank " * (10 * 1024 * 1024 // 7)
    body = refused(
        call(server, "/v2/rerank", {"query": QUERY, "documents": [document]}),
        413,
        "too_many_characters",
    )
    assert body["limit"] == 4 * 1024 * 1024
    # Tokenizing 10 MB takes seconds of CPU and about a gigabyte; refusing it does not.
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize(
    "content",
    [
        b'{"query": "\xff\xfe", "documents": ["a"]}',  # not UTF-8
        b'{"query": "q", "documents": ["\xc3\x28"]}',  # a broken two-byte sequence
        b'{"query": "q", "documents": ["a\x01b"]}',  # a raw control character in a string
        b'{"query": "q", "documents": ["a"]',  # cut short
        b"\x00\x00\x00",
    ],
)
def test_bytes_that_are_not_json_text(server, content):
    refused(call(server, "/v1/rerank", content=content), 422, "invalid_json")


def test_escaped_control_characters_are_legal_text(server):
    documents = ["\u0000", "a\u0007b\u001b[31m", "\u200b\u2028\ufeff", "\U0001f600 emoji"]
    response = call(server, "/v2/rerank", {"query": "q\u0000\u0001", "documents": documents})
    assert response.status_code == 200, response.text
    assert sorted(r["index"] for r in response.json()["results"]) == [0, 1, 2, 3]


def test_lone_surrogates_are_refused(server):
    refused(
        call(server, "/v2/rerank", content=b'{"query": "\\ud800", "documents": ["a"]}'),
        422,
        "validation_error",
    )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/rerank", {"query": 5, "documents": ["a"]}),
        ("/v1/rerank", {"query": None, "documents": ["a"]}),
        ("/v1/rerank", {"query": ["q"], "documents": ["a"]}),
        ("/v1/rerank", {"query": QUERY, "documents": {"a": "b"}}),
        ("/v1/rerank", {"query": QUERY, "documents": [["a"]]}),
        ("/v1/rerank", {"query": QUERY, "documents": [{"text": {"nested": "x"}}]}),
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "top_n": 1.5}),
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "top_n": True}),
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "rank_fields": "text"}),
        ("/v2/rerank", {"query": QUERY, "documents": [1, 2]}),
        ("/v2/rerank", {"query": QUERY, "documents": ["a"], "priority": "high"}),
        ("/rerank", {"query": QUERY, "texts": ["a"], "truncate": "yes"}),
        ("/rerank", {"query": QUERY, "texts": None}),
        ("/rerank", None),
        ("/rerank", "just a string"),
        ("/rerank", [QUERY, ["a"]]),
    ],
)
def test_wrong_json_types(server, path, body):
    refused(call(server, path, body), 422, "validation_error")


@pytest.mark.parametrize("top_n", [0, -1, -(2**63)])
@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_top_n_below_one(server, path, top_n):
    body = {"query": QUERY, "documents": ["a", "b"], "top_n": top_n}
    assert refused(call(server, path, body), 422, "validation_error")["field"] == "top_n"


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_top_n_past_the_documents_returns_them_all(server, path):
    response = call(server, path, {"query": QUERY, "documents": ["a", "b", "c"], "top_n": 10**9})
    assert response.status_code == 200
    assert sorted(r["index"] for r in response.json()["results"]) == [0, 1, 2]


@pytest.mark.parametrize(("path", "field"), ROUTES)
def test_a_lone_model_answers_any_model_name_and_says_so(server, path, field):
    body = {"query": QUERY, field: ["a", "b"], "model": "no-such-model/v9", "stream": False}
    response = call(server, path, body)
    assert response.status_code == 200, response.text
    assert response.headers["x-crossrank-ignored-fields"] == "model, stream"
    reply = response.json()
    if field == "documents" and path != "/v2/rerank":  # TEI's and Cohere v2's have no model
        assert reply["model"] == "tiny"
    if "meta" in reply:
        assert any("'no-such-model/v9' is not served here" in w for w in reply["meta"]["warnings"])


@pytest.mark.parametrize(("path", "field"), ROUTES)
def test_strict_model_names_make_an_unknown_name_a_404(reranker, path, field):
    body = {"query": QUERY, field: ["a"], "model": "no-such-model/v9"}
    with running(
        reranker, strict_model_names=True, model_aliases=(("rerank-v3.5", "tiny"),)
    ) as url:
        error = refused(call(url, path, body), 404, "model_not_found")
        assert error["field"] == "model" and "'tiny', 'rerank-v3.5'" in error["error"]
        alias = call(url, path, {**body, "model": "rerank-v3.5"})
        assert alias.status_code == 200 and "x-crossrank-ignored-fields" not in alias.headers


@pytest.mark.parametrize(("path", "field"), ROUTES)
def test_fields_crossrank_does_not_use_are_accepted_whatever_their_type(server, path, field):
    body = {"query": QUERY, field: ["a", "b"], "stream": None, "nested": {"x": [1, {"y": 2}]}}
    response = call(server, path, {**body, "": "empty name", "x" * 5000: "long name"})
    assert response.status_code == 200, response.text
    header = response.headers["x-crossrank-ignored-fields"]
    assert header == 'stream, nested, "", ' + "x" * 64 + "..."


@pytest.mark.parametrize(
    ("body", "status", "error_type", "field"),
    [
        ({"text_1": " ", "text_2": ["a"]}, 400, "empty_query", "text_1"),
        ({"queries": ["q", "\t"], "documents": ["a", "b"]}, 400, "empty_query", "queries.1"),
        ({"text_1": "q", "text_2": ["passage"] * 10_000}, 413, "too_many_documents", "text_2"),
        ({"text_1": "q", "text_2": None}, 422, "validation_error", "text_2"),
        ({"text_1": ["q"] * 3, "text_2": "d"}, 422, "validation_error", "text_2"),
        ({"text_1": {"q": 1}, "text_2": "d"}, 422, "validation_error", "text_1"),
        ({"text_1": "q", "text_2": "d", "activation": "no"}, 422, "validation_error", "activation"),
    ],
)
def test_vllm_score_bad_input(server, body, status, error_type, field):
    assert refused(call(server, "/score", body), status, error_type)["field"] == field


KEY = "k3y-for-the-matrix"


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"Bearer",
        b"Bearer =",
        b"Bearer  " + b"x" * 8000,  # long
        KEY.encode(),  # no scheme
        b"Basic " + KEY.encode(),
        b"Token " + KEY.encode(),
        b"Bearer " + KEY.encode() + b"x",  # a longer key
        b"Bearer " + KEY[:-1].encode(),  # a prefix of the key
        b"Bearer " + KEY.encode() + b"\xff",  # not ASCII
        b"Bearer \xe2\x82\xac" + KEY.encode(),
        b"Bearer," + KEY.encode(),
    ],
)
def test_malformed_authorization_headers_are_401(reranker, header, caplog):
    caplog.set_level(logging.DEBUG)
    with running(reranker, api_key=KEY) as url:
        body = {"query": QUERY, "documents": ["a"]}
        headers = [(b"authorization", header)] if header else []
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post("/v1/rerank", json=body, headers=headers)
            refused(response, 401, "unauthorized")
            ok = client.post("/v1/rerank", json=body, headers={"authorization": f"bearer {KEY}"})
            assert ok.status_code == 200  # the scheme is case-insensitive (RFC 7235)
            assert client.get("/health").status_code == 200
    assert "/v1/rerank" in caplog.text  # the requests were logged, without the key
    assert KEY not in caplog.text and KEY[:-1] not in caplog.text
