"""Turn one rerank request into model inputs, with the per-request options the APIs offer.

With no options this produces exactly what ``PairEncoder.encode`` produces (a test holds
the two together), so the server scores what ``Reranker.rerank`` scores. The options are
the ones the Cohere and TEI APIs let a client set per request, and that a shared
``PairEncoder`` cannot take: a cap on document tokens (Cohere v2 ``max_tokens_per_doc``),
a cap on windows per document (Cohere v1 ``max_chunks_per_doc``: the windows BM25 ranks
best for the query, as ``long_documents="select"`` reads them) and truncation instead
of chunking (TEI ``truncate``, cutting from the right or, with ``truncation_direction``,
the left). It also reports what it cut, so the response can say so. vLLM's N:N scoring
pairs each document with its own query (``queries``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from tokenizers import Encoding

from crossrank.engine.tokenization import LongDocuments, PairEncoder, PairFeatures, rank_windows


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    long_documents: LongDocuments | None = None  # None: the server's (the model's) default
    max_tokens_per_doc: int | None = None
    max_chunks_per_doc: int | None = None
    truncation_direction: Literal["right", "left"] = "right"  # which end a cut keeps out
    instruction: str | None = None  # a decoder reranker's task instruction (PairPrompt)


@dataclass(slots=True)
class Encoded:
    features: list[PairFeatures]
    query_tokens: int  # query tokens before the cap (the longest query's)
    query_capped: bool
    truncated: list[int] = field(default_factory=list)  # documents not scored in full

    @property
    def tokens(self) -> int:
        """Tokens the model reads for this request (what ``usage.total_tokens`` reports)."""
        return sum(len(f) for f in self.features)


def encode_request(
    encoder: PairEncoder,
    query: str,
    documents: Sequence[str],
    options: EncodeOptions = EncodeOptions(),  # frozen, so sharing the default is safe
) -> Encoded:
    """Model inputs for every document, in order, mirroring ``PairEncoder.encode``."""
    result = Encoded(features=[], query_tokens=0, query_capped=False)
    encode_group(encoder, query, list(documents), list(range(len(documents))), options, result)
    return result


def encode_pairs(
    encoder: PairEncoder,
    queries: Sequence[str],
    documents: Sequence[str],
    options: EncodeOptions = EncodeOptions(),
) -> Encoded:
    """Model inputs for document i paired with ``queries[i]`` (vLLM's N:N scoring); each
    distinct query is tokenized once, with all of its documents."""
    groups: dict[str, list[int]] = {}
    for index, query in enumerate(queries):
        groups.setdefault(query, []).append(index)
    result = Encoded(features=[], query_tokens=0, query_capped=False)
    for query, indices in groups.items():
        encode_group(encoder, query, [documents[i] for i in indices], indices, options, result)
    result.truncated.sort()
    return result


def encode_group(
    encoder: PairEncoder,
    query: str,
    documents: list[str],
    indices: list[int],
    options: EncodeOptions,
    result: Encoded,
) -> None:
    """Append the model inputs of one query's documents (at ``indices``) to ``result``."""
    tokenizer = encoder.tokenizer
    # PairEncoder.encode_query, without its log line: the response reports the cap instead.
    query_encoding = tokenizer.encode(encoder.text(query), add_special_tokens=False)
    result.query_tokens = max(result.query_tokens, len(query_encoding))
    if len(query_encoding) > encoder.query_max_length:
        result.query_capped = True
        query_encoding.truncate(encoder.query_max_length)
    # an instruction reaches decoder rerankers only (the service reports it ignored)
    instruction = options.instruction if encoder.prompt is not None else None
    template = encoder.template(query, query_encoding, instruction)
    budget = encoder.document_budget(template)
    mode = options.long_documents or encoder.long_documents
    texts = [encoder.text(d) for d in documents]
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    for index, document in zip(indices, encodings, strict=True):
        cut = False
        if options.max_tokens_per_doc is not None and len(document) > options.max_tokens_per_doc:
            document.truncate(options.max_tokens_per_doc)
            cut = True
        if mode == "truncate" and len(document) > budget:
            cut = True
        ids = np.asarray(document.ids)  # windows_of cuts the encoding in place
        windows = windows_of(document, budget, mode, encoder.overlap, options.truncation_direction)
        keep = options.max_chunks_per_doc
        if keep is None and mode == "select":
            keep = encoder.windows_kept(len(windows))
        if keep is not None and len(windows) > keep:
            # select-then-score: only the windows BM25 ranks best for the query, in order
            ranked = rank_windows(query_encoding.ids, ids, budget, encoder.window_overlap(budget))
            windows = [windows[i] for i in sorted(ranked[:keep])]
            cut = True
        if cut:
            result.truncated.append(index)
        result.features.extend(template.pair(window.ids, index) for window in windows)


def windows_of(
    document: Encoding,
    budget: int,
    mode: LongDocuments,
    overlap: int | None,
    direction: Literal["right", "left"] = "right",
) -> list[Encoding]:
    """``PairEncoder.windows`` with the mode (and a cut's direction) chosen per request."""
    if len(document) <= budget:
        return [document]
    if mode == "truncate":
        document.truncate(budget, direction=direction)
        return [document]
    overlap = budget // 4 if overlap is None else min(overlap, budget - 1)
    document.truncate(budget, stride=overlap)
    return [document, *document.overflowing]
