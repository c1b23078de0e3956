"""Turn one rerank request into model inputs, with the per-request options the APIs offer.

With no options this produces exactly what ``PairEncoder.encode`` produces (a test holds
the two together), so the server scores what ``Reranker.rerank`` scores. The options are
the ones the Cohere and TEI APIs let a client set per request, and that a shared
``PairEncoder`` cannot take: a cap on document tokens (Cohere v2 ``max_tokens_per_doc``),
a cap on windows per document (Cohere v1 ``max_chunks_per_doc``) and truncation instead
of chunking (TEI ``truncate``). It also reports what it cut, so the response can say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tokenizers import Encoding

from crossrank.engine.tokenization import LongDocuments, PairEncoder, PairFeatures


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    long_documents: LongDocuments | None = None  # None: the server's (the model's) default
    max_tokens_per_doc: int | None = None
    max_chunks_per_doc: int | None = None


@dataclass(slots=True)
class Encoded:
    features: list[PairFeatures]
    query_tokens: int  # query tokens before the cap
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
    tokenizer = encoder.tokenizer
    # PairEncoder.encode_query, without its log line: the response reports the cap instead.
    query_encoding = tokenizer.encode(query, add_special_tokens=False)
    result = Encoded(
        features=[],
        query_tokens=len(query_encoding),
        query_capped=len(query_encoding) > encoder.query_max_length,
    )
    if result.query_capped:
        query_encoding.truncate(encoder.query_max_length)
    budget = encoder.max_length - encoder.num_special - len(query_encoding)
    mode = options.long_documents or encoder.long_documents
    for index, document in enumerate(tokenizer.encode_batch(documents, add_special_tokens=False)):
        cut = False
        if options.max_tokens_per_doc is not None and len(document) > options.max_tokens_per_doc:
            document.truncate(options.max_tokens_per_doc)
            cut = True
        if mode == "truncate" and len(document) > budget:
            cut = True
        windows = windows_of(document, budget, mode, encoder.overlap)
        if options.max_chunks_per_doc is not None and len(windows) > options.max_chunks_per_doc:
            windows = windows[: options.max_chunks_per_doc]
            cut = True
        if cut:
            result.truncated.append(index)
        for window in windows:
            pair = tokenizer.post_process(query_encoding, window)
            result.features.append(PairFeatures(pair.ids, pair.type_ids, index))
    return result


def windows_of(
    document: Encoding, budget: int, mode: LongDocuments, overlap: int | None
) -> list[Encoding]:
    """``PairEncoder.windows`` with the mode chosen per request."""
    if len(document) <= budget:
        return [document]
    if mode == "truncate":
        document.truncate(budget)
        return [document]
    overlap = budget // 4 if overlap is None else min(overlap, budget - 1)
    document.truncate(budget, stride=overlap)
    return [document, *document.overflowing]
