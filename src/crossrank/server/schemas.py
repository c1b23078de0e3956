"""Request and response bodies of each API dialect (Jina/Cohere v1, Cohere v2, TEI).

Requests are strict (no "5" for 5, no "true" for true) and reject unknown fields, so
nothing a client sends is silently reinterpreted or ignored; the error names the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from crossrank.server.service import NOT_BLANK_PATTERN


def whole_number(value: object) -> object:
    # JSON Schema counts 3.0 as an integer, and so do some JSON encoders; strict pydantic
    # would not. Strings stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(whole_number)]
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(whole_number)]


def encodable(text: str) -> str:
    # JSON can carry lone surrogates ("\\ud800") that no tokenizer or UTF-8 response can.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"not valid Unicode text (a lone surrogate at {error.start})") from None
    return text


Text = Annotated[str, AfterValidator(encodable)]

# A blank query is refused with a 400 (not pydantic's 422) by the service; the schema
# still says so, so that clients and schema-driven tests know.
QUERY_DESCRIPTION = "The search query; a blank one is refused (400)."
NOT_BLANK = {"pattern": NOT_BLANK_PATTERN}


class StrictRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# ---------------------------------------------------------------- Jina and Cohere v1


class JinaRerankRequest(StrictRequest):
    """``POST /v1/rerank``: Jina's rerank API, which also takes Cohere v1's fields."""

    model: Text | None = Field(
        None, description="Accepted for compatibility; the server serves one model."
    )
    query: Text = Field(description=QUERY_DESCRIPTION, json_schema_extra=NOT_BLANK)
    documents: list[Text | dict[Text, Text]] = Field(
        description=(
            "Texts, or objects with a `text` field (Jina), or objects of string fields "
            "ranked on `rank_fields` (Cohere v1)."
        )
    )
    top_n: PositiveInt | None = Field(
        None, description="Return the best n; more than the documents given returns all."
    )
    return_documents: bool = Field(True, description="Echo each document in its result.")
    rank_fields: list[Text] | None = Field(
        None,
        min_length=1,
        description=(
            "Cohere v1: the fields of object documents to rank on, in order; each object "
            "is read as `field: value` lines. Default: the `text` field."
        ),
    )
    max_chunks_per_doc: PositiveInt | None = Field(
        None, description="Cohere v1: score at most this many windows of a long document."
    )
    max_tokens_per_doc: PositiveInt | None = Field(
        None, description="Cohere: score only the first n tokens of each document."
    )


class Usage(BaseModel):
    total_tokens: int = Field(description="Tokens the model read for this request.")


class ApiVersion(BaseModel):
    version: str


class MetaTokens(BaseModel):
    input_tokens: int


class Meta(BaseModel):
    """Cohere's ``meta`` object."""

    api_version: ApiVersion
    tokens: MetaTokens
    warnings: list[str] | None = None


class JinaResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, str] | None = Field(
        None, description="The document as sent (a text becomes `{text}`); absent unless asked."
    )


class JinaRerankResponse(BaseModel):
    id: str = Field(description="The request id (also the X-Request-ID header).")
    model: str
    usage: Usage
    results: list[JinaResult]
    meta: Meta


# ---------------------------------------------------------------- Cohere v2


class CohereV2RerankRequest(StrictRequest):
    """``POST /v2/rerank``: Cohere's v2 rerank API."""

    model: Text | None = Field(
        None, description="Accepted for compatibility; the server serves one model."
    )
    query: Text = Field(description=QUERY_DESCRIPTION, json_schema_extra=NOT_BLANK)
    documents: list[Text]
    top_n: PositiveInt | None = None
    max_tokens_per_doc: PositiveInt | None = Field(
        None, description="Score only the first n tokens of each document."
    )
    priority: Integer | None = Field(
        None, description="Accepted for compatibility; requests are served in arrival order."
    )


class CohereV2Result(BaseModel):
    index: int
    relevance_score: float


class CohereV2RerankResponse(BaseModel):
    id: str
    results: list[CohereV2Result]
    meta: Meta


# ---------------------------------------------------------------- TEI


class TeiRerankRequest(StrictRequest):
    """``POST /rerank``: text-embeddings-inference's rerank API."""

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
    truncation_direction: Literal["Right"] = Field(
        "Right", description="Only right truncation is supported."
    )


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


# ---------------------------------------------------------------- the rest


class ErrorBody(BaseModel):
    """Every error: what was wrong, and the limit when a limit was hit."""

    error: str = Field(description="What was wrong, for a person to read.")
    error_type: str = Field(description="A stable name for the kind of error.")
    field: str | None = Field(None, description="The request field at fault, dotted.")
    limit: int | None = Field(None, description="The limit that was exceeded.")
    request_id: str


class Health(BaseModel):
    status: Literal["ok"]
    model: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "crossrank"
    max_length: int = Field(description="Longest input (query + document) the model reads.")
    long_documents: str = Field(description="What happens to longer documents by default.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
