"""Every client mistake gets a 4xx with a JSON body naming the problem (and the limit)."""

from __future__ import annotations

import logging
import re
import threading
import time

import httpx
import pytest

from .conftest import gated, metric, running

QUERY = "rerankers"


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] and body["error_type"]
    # Under every key a client reads: TEI's clients, Cohere's SDK, Jina-style clients.
    assert body["message"] == body["detail"] == body["error"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize("query", ["", "   \n", "\x1d", "\u3000\ufeff"])
@pytest.mark.parametrize(
    ("path", "field"),
    [("/v1/rerank", "documents"), ("/v2/rerank", "documents"), ("/rerank", "texts")],
)
def test_an_empty_query_is_a_400(server, path, field, query):
    body = error_of(httpx.post(f"{server}{path}", json={"query": query, field: ["a"]}), 400)
    assert body["field"] == "query" and body["error_type"] == "empty_query"


@pytest.mark.parametrize("query", ["", " \t", "\x1d", "\x85", "\ufeff", "\u3000"])
def test_the_schema_calls_blank_what_the_server_refuses(query):
    # The OpenAPI pattern is read as an ECMA regex by clients and schema-driven tests
    # (schemathesis found "\x1d": blank to Python's "\S", not to ECMA's). Without class
    # shorthands the pattern means the same in both, so Python's reading stands for both.
    from crossrank.server.service import NOT_BLANK_PATTERN, NOT_BLANK_TEXT

    assert not re.search(r"\\[sSwWdDbB]", NOT_BLANK_PATTERN)
    assert not NOT_BLANK_TEXT.search(query)
    assert NOT_BLANK_TEXT.search(query + "a")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"documents": ["a"]}, "query"),  # missing
        ({"query": QUERY, "documents": "a single string"}, "documents"),
        ({"query": QUERY, "documents": ["a", 7]}, "documents.1"),
        ({"query": QUERY, "documents": [{"text": 7}]}, "documents.0.text"),
        ({"query": QUERY, "documents": ["a"], "top_n": 0}, "top_n"),
        ({"query": QUERY, "documents": ["a"], "top_n": "3"}, "top_n"),  # no silent coercion
        ({"query": QUERY, "documents": ["a"], "return_documents": "yes"}, "return_documents"),
        ({"query": QUERY, "documents": ["a"], "max_chunks_per_doc": -1}, "max_chunks_per_doc"),
        ({"query": QUERY, "documents": ["a"], "top_k": "3"}, None),  # unknown: ignored
        ({"query": QUERY, "documents": ["a"], "model": 7}, "model"),
        ({"query": QUERY, "documents": [{"title": "no text"}]}, "documents.0.text"),
        ({"query": QUERY, "documents": [{"a": "x"}], "rank_fields": ["b"]}, "documents.0.b"),
    ],
)
def test_invalid_jina_and_cohere_v1_bodies_are_422_naming_the_field(server, body, field):
    response = httpx.post(f"{server}/v1/rerank", json=body)
    if field is None:  # a field crossrank does not know is accepted and reported
        assert response.status_code == 200, response.text
        assert response.headers["x-crossrank-ignored-fields"] == "top_k"
        return
    assert error_of(response, 422)["field"] == field


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v2/rerank", {"query": QUERY, "documents": [{"text": "a"}]}, "documents.0"),
        ("/v2/rerank", {"query": QUERY, "documents": ["a"], "max_tokens_per_doc": 0},
         "max_tokens_per_doc"),
        ("/rerank", {"query": QUERY, "texts": ["a"], "truncation_direction": "Up"},
         "truncation_direction"),
        ("/rerank", {"query": QUERY, "texts": ["a"], "documents": ["a"]}, "body"),
        ("/rerank", {"query": QUERY}, "body"),
        ("/rerank", {"query": QUERY, "documents": ["a"], "raw_scores": "no"}, "raw_scores"),
        ("/rerank", {"query": QUERY, "documents": [{"title": "x"}]}, "documents.0.text"),
        ("/score", {"text_1": "q"}, "text_2"),
        ("/score", {"text_1": "q", "queries": "q", "text_2": "d"}, "text_1"),
        ("/score", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, "text_2"),
        ("/score", {"text_1": "q", "text_2": []}, "text_2"),
        ("/v1/score", {"queries": "q", "documents": [3]}, "documents.0"),
        ("/rerank", {"query": QUERY, "texts": ["a"], "raw_scores": 1}, "raw_scores"),
        ("/rerank", {"query": 5, "texts": ["a"]}, "query"),
        ("/rerank", [1, 2], "body"),
    ],
)  # fmt: skip
def test_invalid_cohere_v2_tei_and_vllm_bodies_are_422_naming_the_field(server, path, body, field):
    assert error_of(httpx.post(f"{server}{path}", json=body), 422)["field"] == field


def test_the_rerank_route_says_which_two_bodies_it_takes(server):
    both = httpx.post(f"{server}/rerank", json={"query": QUERY, "texts": ["a"], "documents": []})
    assert "`texts` (TEI's rerank) or `documents`" in error_of(both, 422)["error"]


def test_malformed_json_and_wrong_routes_get_json_errors(server):
    broken = httpx.post(
        f"{server}/v1/rerank", content=b'{"query": ', headers={"content-type": "application/json"}
    )
    assert error_of(broken, 422)["error_type"] == "invalid_json"
    assert error_of(httpx.post(f"{server}/v1/rerank"), 422)["field"] == "body"
    assert error_of(httpx.get(f"{server}/nowhere"), 404)["error_type"] == "not_found"
    assert error_of(httpx.get(f"{server}/v1/rerank"), 405)["error_type"] == "method_not_allowed"


def test_limits_on_documents_tokens_and_body_size(reranker):
    with running(reranker, max_documents=3, max_request_tokens=100, max_body_bytes=2000) as url:
        many = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["a"] * 4})
        assert error_of(many, 413)["limit"] == 3
        tei = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": ["a"] * 4})
        assert error_of(tei, 413)["field"] == "texts"

        long = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["word " * 150]})
        body = error_of(long, 413)
        assert body["error_type"] == "too_many_tokens" and body["limit"] == 100

        big = {"query": QUERY, "documents": ["x" * 3000]}
        body = error_of(httpx.post(f"{url}/v2/rerank", json=big), 413)
        assert body["error_type"] == "body_too_large" and body["limit"] == 2000

        def chunks():  # no Content-Length: the limit holds while the body streams in
            yield b'{"query": "q", "documents": ["'
            for _ in range(10):
                yield b"y" * 500
            yield b'"]}'

        streamed = httpx.post(
            f"{url}/v2/rerank", content=chunks(), headers={"content-type": "application/json"}
        )
        assert error_of(streamed, 413)["error_type"] == "body_too_large"
        # Within every limit, the same server answers.
        ok = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["a", "b"]})
        assert ok.status_code == 200


def test_api_key_guards_every_route_but_health_and_never_reaches_the_log(reranker, caplog):
    key = "s3cret-key-do-not-log"
    caplog.set_level(logging.DEBUG)
    with running(reranker, api_key=key) as url:
        body = {"query": QUERY, "documents": ["a"]}
        assert httpx.get(f"{url}/health").status_code == 200
        for method, path in [
            ("POST", "/v1/rerank"),
            ("POST", "/v2/rerank"),
            ("GET", "/v1/models"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/docs"),
        ]:
            for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": key}]:
                response = httpx.request(method, f"{url}{path}", json=body, headers=headers)
                assert error_of(response, 401)["error_type"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{url}/v1/rerank", json=body, headers=good).status_code == 200
        tei = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": ["a"]}, headers=good)
        assert tei.status_code == 200
        schema = httpx.get(f"{url}/openapi.json", headers=good).json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert "401" in schema["paths"]["/v1/rerank"]["post"]["responses"]
    assert "/v1/rerank" in caplog.text  # requests were logged...
    assert key not in caplog.text  # ...without the key
    assert key not in repr(url.app.state.service.settings)


def test_a_full_queue_is_a_429_with_retry_after(reranker):
    slow, gate = gated(reranker)
    with running(slow, max_queue=2) as url:
        answers = {}

        def call(name):
            answers[name] = httpx.post(
                f"{url}/v2/rerank", json={"query": QUERY, "documents": ["a", "b"]}, timeout=30
            )

        first = threading.Thread(target=call, args=("first",))
        first.start()
        assert gate.entered.wait(10)  # the first request is inside the model
        second = threading.Thread(target=call, args=("second",))
        second.start()
        app = url.app
        wait_until(lambda: app.state.service.admitted == 2)
        full = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["c"]})
        body = error_of(full, 429)
        assert body["limit"] == 2 and full.headers["retry-after"] == "1"
        gate.opened.set()
        first.join(10)
        second.join(10)
        assert answers["first"].status_code == answers["second"].status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert 'crossrank_requests_total{route="/v2/rerank",status="429"} 1.0' in metrics


def test_a_client_that_disconnects_is_dropped_from_the_queue(reranker):
    slow, gate = gated(reranker)
    with running(slow) as url:
        blocker = threading.Thread(
            target=httpx.post,
            args=(f"{url}/v2/rerank",),
            kwargs={"json": {"query": QUERY, "documents": ["a"]}, "timeout": 30},
        )
        blocker.start()
        assert gate.entered.wait(10)
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up
            httpx.post(
                f"{url}/v2/rerank", json={"query": QUERY, "documents": ["b"] * 7}, timeout=0.5
            )
        app = url.app
        wait_until(lambda: app.state.service.batcher.queued_requests == 0)
        gate.opened.set()
        blocker.join(10)
        wait_until(lambda: app.state.service.admitted == 0)
        assert gate.calls == [1]  # the 7 inputs of the dropped request never reached the model
        metrics = httpx.get(f"{url}/metrics").text
        assert metric(metrics, "crossrank_requests_dropped_total") == 1
        assert 'status="499"' in metrics


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"query": "q\\ud800", "documents": ["a"]}', "query"),
        ('{"query": "q", "documents": ["a", "\\udfff"]}', "documents.1"),
        ('{"query": "q", "documents": [{"text": "a", "note": "\\ud800"}]}', "documents.0.note"),
        ('{"query": "q", "documents": ["a"], "\\ud800": 1}', "body"),  # an extra field's name
    ],
)
def test_text_that_is_not_unicode_is_a_422_not_a_500(server, body, field):
    response = httpx.post(
        f"{server}/v1/rerank", content=body.encode(), headers={"content-type": "application/json"}
    )
    body = error_of(response, 422)
    assert body["field"] == field and "not valid Unicode" in body["error"]


def test_a_body_that_is_not_json_says_so(server):
    response = httpx.post(
        f"{server}/v2/rerank", content=b"query=q", headers={"content-type": "text/plain"}
    )
    assert "JSON object" in error_of(response, 422)["error"]


def test_a_server_fault_is_a_500_with_the_request_id_and_the_server_goes_on(reranker, caplog):
    broken, gate = gated(reranker)
    gate.opened.set()
    gate.logits = lambda features: 1 / 0
    with running(broken) as url:
        response = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["a"]})
        body = error_of(response, 500)
        assert body["error_type"] == "internal_error" and "ZeroDivision" not in body["error"]
        assert body["request_id"] in caplog.text  # the log line to look for
        gate.logits = reranker.logits
        ok = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": ["a"]})
        assert ok.status_code == 200


def test_cors_is_off_unless_origins_are_named(server, reranker):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert (
        "access-control-allow-origin"
        not in httpx.options(f"{server}/v1/rerank", headers=preflight).headers
    )
    with running(reranker, cors_origins=("https://app.example",)) as url:
        allowed = httpx.options(f"{url}/v1/rerank", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
