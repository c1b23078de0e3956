"""What every dialect's schemas share: strict field types, the tolerance rule, Cohere's
``meta``, the error body, and the service routes' bodies.

The tolerance rule: a request is accepted whenever the service a dialect imitates would
accept it. Fields crossrank reads keep strict types and limits (no "5" for 5, no "true"
for true; a wrong one is a 4xx naming the field), so nothing is silently misread. Fields
it does not read, whether the imitated service knows them (``UNUSED``) or not (extra
fields), are accepted and reported back (``ignored_fields``), never refused.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from crossrank.server.service import NOT_BLANK_PATTERN, Ranked


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
MODEL_DESCRIPTION = (
    "Which served model ranks, by name or alias (GET /v1/models lists them); absent: the "
    "first. A server with one model answers any name with it (the name is reported in "
    "X-Crossrank-Ignored-Fields); with several, a name not served is a 404 listing them."
)

IGNORED_HEADER = "X-Crossrank-Ignored-Fields"
# A body may hold thousands of extra fields, or a name of megabytes; a header must stay small.
MAX_NAMES_SHOWN = 20
MAX_NAME_SHOWN = 64  # characters


class TolerantRequest(BaseModel):
    """A dialect's request: strict about the fields it reads, accepting any others."""

    model_config = ConfigDict(strict=True, extra="allow")
    # Fields the imitated service defines that crossrank accepts (typed) but does not use.
    UNUSED: ClassVar[tuple[str, ...]] = ()

    def ignored_fields(self) -> list[str]:
        """The fields sent that crossrank did not use, in the order sent."""
        unused = [name for name in self.UNUSED if name in self.model_fields_set]
        return unused + list(self.model_extra or {})


class InstructedRequest(TolerantRequest):
    """A rerank request that may carry a decoder reranker's task instruction."""

    instruction: Text | None = Field(
        None,
        description=(
            "crossrank: the task instruction of a decoder reranker's prompt (Qwen3-Reranker's "
            "<Instruct>; default: its web-search one). Ignored, with a warning, by "
            "cross-encoders, which have no prompt."
        ),
    )


def shown_names(names: list[str]) -> str:
    """Field names for a header or a warning: percent-encoded, so that any JSON key (a
    comma, a newline, a lone surrogate) stays one plain ASCII token; at most 20, each cut
    to 64 characters."""
    shown = [
        quote(n[:MAX_NAME_SHOWN].encode("utf-8", "surrogatepass"), safe="-_.~$@:")
        + ("..." if len(n) > MAX_NAME_SHOWN else "")
        if n
        else '""'  # the empty name: never a blank item (a header cannot end in ", ")
        for n in names
    ]
    more = len(shown) - MAX_NAMES_SHOWN
    return ", ".join(shown[:MAX_NAMES_SHOWN]) + (f", ... ({more} more)" if more > 0 else "")


def ignored_warning(names: list[str]) -> str:
    return f"ignored (not used by crossrank): {shown_names(names)}"


# ---------------------------------------------------------------- Cohere's meta


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = Field(
        description="Cohere's unit: up to 100 model inputs (documents or their windows) each."
    )


class MetaTokens(BaseModel):
    input_tokens: int


class Meta(BaseModel):
    """Cohere's ``meta`` object."""

    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: MetaTokens
    warnings: list[str] | None = Field(
        None, description="What was cut short, and the fields sent but not used."
    )


def cohere_meta(version: str, ranked: Ranked, ignored: list[str]) -> Meta:
    warnings = ranked.warnings + ([ignored_warning(ignored)] if ignored else [])
    return Meta(
        api_version=ApiVersion(version=version),
        billed_units=BilledUnits(search_units=math.ceil(ranked.inputs / 100)),
        tokens=MetaTokens(input_tokens=ranked.tokens),
        warnings=warnings or None,
    )


class DocumentText(BaseModel):
    text: str


# ---------------------------------------------------------------- the rest


class ErrorBody(BaseModel):
    """Every error: what was wrong (under each key some client reads), and the limit."""

    error: str = Field(description="What was wrong, for a person to read (TEI clients).")
    message: str = Field(description="The same (Cohere's SDK, vLLM and OpenAI-style clients).")
    detail: str = Field(description="The same (Jina-style clients).")
    error_type: str = Field(description="A stable name for the kind of error.")
    field: str | None = Field(None, description="The request field at fault, dotted.")
    limit: int | None = Field(None, description="The limit that was exceeded.")
    request_id: str


class Health(BaseModel):
    status: Literal["ok"]
    model: str = Field(description="The default model (the first served).")
    models: list[str] = Field(description="Every model served, the default first.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "crossrank"
    aliases: list[str] = Field([], description="Other names this model answers to.")
    max_length: int = Field(description="Longest input (query + document) the model reads.")
    long_documents: str = Field(description="What happens to longer documents by default.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
