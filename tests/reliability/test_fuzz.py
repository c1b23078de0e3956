"""Schemathesis fuzzes every rerank route from the server's own OpenAPI schema.

Valid and invalid bodies (positive and negative generation), against a server without an
API key and one with a key where each request carries the key, none, a wrong one or a
malformed header. Every response must be documented, match its schema, never be a 5xx,
and come back within the timeout; afterwards the server must still answer /health.

The schema follows the tolerance rule: bodies may carry fields crossrank does not use
(``additionalProperties`` is open), so a body is only invalid for what it gets wrong in
the fields crossrank reads; the served model names are an enum, so a valid body names one.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.conftest import running

# Per server and generation mode; 2 servers x 2 modes x 300 = 1,200 generated requests.
EXAMPLES = 300
REQUIRED = 1000
KEY = "fuzz-key-0123456789"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]
# An invalid body gets a 4xx: schemathesis's default list, plus 413, the documented answer
# to an array over the schema's maxItems (the --max-documents limit).
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)
AUTH_HEADERS = {
    "valid": {"Authorization": f"Bearer {KEY}"},
    "none": {},
    "wrong": {"Authorization": "Bearer not-the-key"},
    "malformed": {"Authorization": KEY},  # no scheme
    "basic": {"Authorization": "Basic Zm9vOmJhcg=="},
}


# the routes whose documents may be objects ranked on `rank_fields` (Jina's, vLLM's, Infinity's)
OBJECT_DOCUMENT_PATHS = {"/v1/rerank", "/rerank", "/infinity/rerank", "/infinity/v1/rerank"}


def lacks_a_ranked_field(case: Any) -> bool:
    """A 422 the schema cannot state: a valid body (positive generation) whose object
    document has no field to rank on (`text`, or one named in `rank_fields`)."""
    body = case.body
    if case.path not in OBJECT_DOCUMENT_PATHS or "documents" not in body:
        return False
    fields = body.get("rank_fields") or ["text"]
    return any(isinstance(d, dict) and any(f not in d for f in fields) for d in body["documents"])


def unpaired_score_texts(case: Any) -> bool:
    """The other: vLLM's score pairs one text with many, or as many with as many."""
    if not case.path.endswith("/score"):
        return False
    first = case.body.get("text_1", case.body.get("queries"))
    second = case.body.get("text_2", case.body.get("documents"))
    count = [1 if isinstance(x, str) else len(x) for x in (first, second)]
    return count[0] != 1 and count[0] != count[1]


def rule_the_schema_cannot_state(case: Any) -> bool:
    return case.meta.generation.mode.is_positive and (
        lacks_a_ranked_field(case) or unpaired_score_texts(case)
    )


def fuzz(url: str, schema: Any, mode: GenerationMode, with_key: bool) -> dict[int, int]:
    """Send EXAMPLES generated requests; the count of responses by status."""
    statuses: dict[int, int] = {}
    # Mostly the right key, so that the bodies reach the routes; the rest must all be 401.
    auth = st.sampled_from(["valid"] * 3 + sorted(AUTH_HEADERS)) if with_key else st.just("none")

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        print_blob=True,  # a failure prints the decorator that replays it
        suppress_health_check=list(HealthCheck),
    )
    @given(case=schema.as_strategy(generation_mode=mode), auth=auth)
    def run(case: Any, auth: str) -> None:
        # The timeout is the "no hang" check: a request that waits 30 s fails the test.
        response = case.call(base_url=url, headers=AUTH_HEADERS[auth], timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if with_key and auth != "valid":
            assert response.status_code == 401, response.text
            assert response.json()["error_type"] == "unauthorized"
            return
        excluded = []
        if response.status_code == 422 and rule_the_schema_cannot_state(case):
            kind = "missing_field" if lacks_a_ranked_field(case) else "validation_error"
            assert response.json()["error_type"] == kind, response.text
            excluded = [positive_data_acceptance]
        case.validate_response(
            response, checks=CHECKS, excluded_checks=excluded, headers=AUTH_HEADERS[auth]
        )

    run()
    return statuses


@pytest.mark.parametrize("with_key", [False, True], ids=["open", "api-key"])
def test_fuzzed_requests_get_documented_answers_and_no_5xx(reranker, with_key):
    key = KEY if with_key else None
    with running(reranker, api_key=key, max_documents=50) as url:
        schema = schemathesis.openapi.from_dict(url.app.openapi(), config=CONFIG)
        schema = schema.include(tag="rerank")
        assert {op.ok().path for op in schema.get_all_operations()} == {
            "/v1/rerank",
            "/v2/rerank",
            "/rerank",
            "/score",
            "/v1/score",
            "/infinity/rerank",
            "/infinity/v1/rerank",
        }
        counts = [fuzz(url, schema, mode, with_key) for mode in GenerationMode]
        total = sum(sum(c.values()) for c in counts)
        print(f"\n{total} fuzzed requests ({'with' if with_key else 'without'} a key):", counts)
        assert total >= REQUIRED // 2  # two servers, so at least 1,000 in all
        assert all(status < 500 for c in counts for status in c)
        assert any(200 in c for c in counts)  # valid requests were answered, not all refused
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        service = url.app.state.service
        assert service.admitted == 0 and service.batcher.queued_requests == 0  # nothing leaked
