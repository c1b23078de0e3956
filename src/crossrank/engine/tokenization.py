"""Turn (query, document) pairs into model inputs with the checkpoint's own tokenizer.

The query is capped at ``query_max_length`` tokens and the document gets the rest of
``max_length``, so a long document can never push the query out of the input. Documents
longer than their share are truncated (``"truncate"``), split into overlapping windows
that are each paired with the query (``"chunk"``; the caller max-pools their scores), or
split the same way with only the ``max_windows`` windows that share most words with the
query kept (``"select"``: BM25 over the windows of that one document, see
``rank_windows``).

Speed: each document is tokenised once however many windows (and, within a call or
from the cache, however many queries) it is paired with; windows are slices of its
token ids, and the pair template ([CLS] q [SEP] d [SEP] for BERT) is worked out once
per query from the tokenizer's own post-processor.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Encoding, Tokenizer

log = logging.getLogger(__name__)

LongDocuments = Literal["truncate", "chunk", "select"]
LONG_DOCUMENT_MODES = ("truncate", "chunk", "select")

# Windows kept per document in "select" mode unless max_windows says otherwise: a tenth of
# the document's windows, and at least 3 (``default_max_windows``). Of the rules measured on
# dev splits (ectsum val, qmsum val, scitldr dev; benchmarks/select_windows.py; never a
# test split) it is the cheapest whose BM25-chosen windows gave chunk mode's nDCG@10 on all
# three: a fixed m of up to 8 missed the window chunk scores best on long meeting
# transcripts (qmsum val 0.430 against 0.458), and a share of the windows grows with them.
# See docs/evaluation.md#select-then-score.
MIN_SELECTED_WINDOWS = 3
SELECTED_SHARE = 0.1

# BM25 parameters for ranking the windows of one document (the usual Lucene defaults).
BM25_K1 = 1.2
BM25_B = 0.75


@dataclass(frozen=True, slots=True)
class PairFeatures:
    """One model input: a query paired with a document, or with one window of it."""

    input_ids: list[int]
    token_type_ids: list[int]
    document: int  # index of the document this input scores

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True, slots=True)
class PairTemplate:
    """Where a document's tokens go in a pair: ``prefix + document + suffix``."""

    prefix_ids: list[int]  # e.g. [CLS] query [SEP]
    prefix_types: list[int]
    suffix_ids: list[int]  # e.g. [SEP]
    suffix_types: list[int]
    document_type: int

    def pair(self, document_ids: Sequence[int], index: int) -> PairFeatures:
        return PairFeatures(
            self.prefix_ids + list(document_ids) + self.suffix_ids,
            self.prefix_types + [self.document_type] * len(document_ids) + self.suffix_types,
            index,
        )


class InputTooLong(ValueError):
    """A query (and instruction) that leaves no tokens for the document."""


@dataclass(frozen=True, slots=True)
class PairPrompt:
    """A decoder reranker's text around the pair: ``before_query`` (with the instruction
    filled in), " " + query, ``before_document``, " " + document, ``after_document``.

    The space before the query and the document goes with them: byte-level BPE joins a
    word to the space before it, so "<Query>:" | " what" tokenise as the whole text does.
    """

    before_query: str  # holds an {instruction} field
    before_document: str
    after_document: str
    default_instruction: str

    def text_before_query(self, instruction: str | None) -> str:
        return self.before_query.format(instruction=instruction or self.default_instruction)


def load_tokenizer(path: Path) -> Tokenizer:
    """The checkpoint's ``tokenizer.json``; a WordPiece ``vocab.txt`` is accepted for old BERTs."""
    if (path / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(path / "tokenizer.json"))
    if (path / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        settings_file = path / "tokenizer_config.json"
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        lowercase = settings.get("do_lower_case", True)
        return BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=lowercase)._tokenizer
    raise FileNotFoundError(f"{path} has no tokenizer.json (nor a WordPiece vocab.txt)")


def check_long_documents(mode: str) -> str:
    if mode not in LONG_DOCUMENT_MODES:
        raise ValueError(
            f"long_documents must be one of {', '.join(map(repr, LONG_DOCUMENT_MODES))}, "
            f"not {mode!r}"
        )
    return mode


def check_max_windows(max_windows: int | None) -> int | None:
    if max_windows is not None and (
        isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1
    ):
        raise ValueError(f"max_windows must be a whole number of at least 1, not {max_windows!r}")
    return max_windows


def default_max_windows(windows: int) -> int:
    """Windows select mode keeps of a document of ``windows`` windows by default."""
    return max(MIN_SELECTED_WINDOWS, math.ceil(SELECTED_SHARE * windows))


def window_starts(length: int, budget: int, overlap: int) -> range:
    """Start of each window: the same windows as ``Encoding.truncate(budget, stride=overlap)``
    with its overflow (a test holds them together), without copying the encoding."""
    if length <= budget:
        return range(1)
    return range(0, length - overlap, budget - overlap)


def rank_windows(
    query_ids: Sequence[int], document_ids: np.ndarray, budget: int, overlap: int
) -> np.ndarray:
    """Window indices, best first, by BM25 of the query against the windows of one document.

    Hand-written over the token ids the cross-encoder already has (rather than bm25s over
    the windows' text) because it needs no second tokenisation and no index per pair:
    term counts per window come from one cumulative sum per query term. Document
    frequencies are counted over this document's windows only, so words found in every
    window (stop words, the meeting's recurring names) weigh almost nothing. Ties keep
    document order.
    """
    starts = np.asarray(window_starts(len(document_ids), budget, overlap))
    ends = np.minimum(starts + budget, len(document_ids))
    terms, weights = np.unique(np.asarray(query_ids), return_counts=True)
    hits = document_ids[None, :] == terms[:, None]  # (terms, tokens)
    cumulative = np.concatenate(
        [np.zeros((len(terms), 1), np.int64), np.cumsum(hits, axis=1)], axis=1
    )
    tf = (cumulative[:, ends] - cumulative[:, starts]).astype(np.float64)  # (terms, windows)
    df = (tf > 0).sum(axis=1)
    idf = np.log1p((len(starts) - df + 0.5) / (df + 0.5))
    lengths = (ends - starts) / np.mean(ends - starts)
    saturation = tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * lengths[None, :]))
    scores = np.round((weights * idf) @ saturation, 9)  # equal windows tie despite rounding
    return np.argsort(-scores, kind="stable")


class PairEncoder:
    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int,
        query_max_length: int | None = None,
        long_documents: LongDocuments = "truncate",
        overlap: int | None = None,
        max_windows: int | None = None,
        cache_documents: int = 512,
        prompt: PairPrompt | None = None,
    ):
        """``max_windows``: windows kept per document in ``"select"`` mode (default: a
        share of the document's, ``default_max_windows``). ``cache_documents``: how many
        documents' token ids to keep between calls (a benchmark pairs the same documents
        with many queries). ``prompt``: a decoder reranker's text template, in place of
        the tokenizer's pair template."""
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.no_truncation()  # we truncate ourselves, per side
        self.tokenizer.no_padding()  # batches are padded to their own longest input
        self.max_length = max_length
        self.prompt = prompt
        self.num_special = (
            self.tokenizer.num_special_tokens_to_add(is_pair=True)
            if prompt is None
            else len(self.prompt_template("", None).prefix_ids) + len(self.prompt_suffix())
        )
        self.query_max_length = query_max_length or max_length // 4
        if self.query_max_length + self.num_special >= max_length:
            raise ValueError(
                f"query_max_length={self.query_max_length} leaves no room for the document "
                f"in max_length={max_length}"
            )
        self.long_documents = check_long_documents(long_documents)
        if max_windows is not None and long_documents != "select":
            raise ValueError(
                f"max_windows applies to long_documents='select', not {long_documents!r}"
            )
        self.overlap = overlap
        self.max_windows = check_max_windows(max_windows)  # None: default_max_windows
        self.cache_documents = cache_documents
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def text(self, text: str) -> str:
        """A query or document as it is tokenised: after a space in a prompt (PairPrompt)."""
        return text if self.prompt is None else " " + text

    def encode_query(self, query: str) -> Encoding:
        encoding = self.tokenizer.encode(self.text(query), add_special_tokens=False)
        if len(encoding) > self.query_max_length:
            log.warning(
                "query of %d tokens capped at query_max_length=%d",
                len(encoding),
                self.query_max_length,
            )
            encoding.truncate(self.query_max_length)
        return encoding

    def template(
        self, query: str, query_encoding: Encoding, instruction: str | None = None
    ) -> PairTemplate:
        """The checkpoint's pair layout around a one-token placeholder document, or the
        prompt's around the query (cut where its capped encoding ends)."""
        if self.prompt is not None:
            if query_encoding.overflowing:  # capped: the text its tokens cover (after " ")
                query = query[: query_encoding.offsets[-1][1] - 1]
            return self.prompt_template(query, instruction)
        if instruction is not None:
            raise ValueError("instruction applies to decoder rerankers; this model has no prompt")
        placeholder = self.tokenizer.encode("a", add_special_tokens=False)
        pair = self.tokenizer.post_process(query_encoding, placeholder)
        slots = [i for i, sequence in enumerate(pair.sequence_ids) if sequence == 1]
        first, last = slots[0], slots[-1]
        return PairTemplate(
            prefix_ids=pair.ids[:first],
            prefix_types=pair.type_ids[:first],
            suffix_ids=pair.ids[last + 1 :],
            suffix_types=pair.type_ids[last + 1 :],
            document_type=pair.type_ids[first],
        )

    def document_budget(self, template: PairTemplate) -> int:
        """Document tokens that fit beside the template (the query and any prompt)."""
        budget = self.max_length - len(template.prefix_ids) - len(template.suffix_ids)
        if budget < 1:
            raise InputTooLong(
                f"the query and instruction leave no room for the document in "
                f"max_length={self.max_length} tokens"
            )
        return budget

    def prompt_template(self, query: str, instruction: str | None) -> PairTemplate:
        """The prompt's text before the document tokenised as one string, so that the
        query's tokens are the ones the whole prompt gives; the types are all 0."""
        before = self.prompt.text_before_query(instruction) + " " + query
        prefix = self.tokenizer.encode(
            before + self.prompt.before_document, add_special_tokens=False
        )
        suffix = self.prompt_suffix()
        return PairTemplate(prefix.ids, [0] * len(prefix), suffix, [0] * len(suffix), 0)

    def prompt_suffix(self) -> list[int]:
        return self.tokenizer.encode(self.prompt.after_document, add_special_tokens=False).ids

    def document_ids(self, documents: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each document, each distinct text tokenised once (and cached)."""
        with self._cache_lock:
            cached = {d: self._cache[d] for d in documents if d in self._cache}
        new = [d for d in dict.fromkeys(documents) if d not in cached]
        texts = [self.text(d) for d in new]
        for text, encoding in zip(
            new, self.tokenizer.encode_batch(texts, add_special_tokens=False), strict=True
        ):
            cached[text] = np.asarray(encoding.ids, dtype=np.int64)
        with self._cache_lock:
            for text in documents:
                self._cache[text] = cached[text]
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_documents:
                self._cache.popitem(last=False)
        return [cached[d] for d in documents]

    def windows_kept(self, windows: int, max_windows: int | None = None) -> int:
        """How many of a document's ``windows`` select mode reads: ``max_windows``, else
        the encoder's, else ``default_max_windows``."""
        return max_windows or self.max_windows or default_max_windows(windows)

    def window_overlap(self, budget: int) -> int:
        return budget // 4 if self.overlap is None else min(self.overlap, budget - 1)

    def encode(
        self,
        query: str,
        documents: Sequence[str],
        long_documents: LongDocuments | None = None,
        max_windows: int | None = None,
        instruction: str | None = None,
    ) -> list[PairFeatures]:
        """Inputs for every document, in order; a windowed document may give several.

        ``long_documents`` and ``max_windows`` override the encoder's settings for this call;
        ``instruction`` the prompt's (decoder rerankers only).
        """
        mode = check_long_documents(long_documents or self.long_documents)
        if max_windows is not None and mode != "select":
            raise ValueError(f"max_windows applies to long_documents='select', not {mode!r}")
        keep = check_max_windows(max_windows)
        query_encoding = self.encode_query(query)
        template = self.template(query, query_encoding, instruction)
        budget = self.document_budget(template)
        features = []
        for index, ids in enumerate(self.document_ids(documents)):
            for start in self.chosen_windows(query_encoding.ids, ids, budget, mode, keep):
                features.append(template.pair(ids[start : start + budget].tolist(), index))
        return features

    def chosen_windows(
        self,
        query_ids: Sequence[int],
        ids: np.ndarray,
        budget: int,
        mode: str,
        keep: int | None,
    ) -> list[int]:
        """Start offsets of the windows of one document that the model reads, in order.

        ``keep``: windows kept in select mode (None: ``windows_kept``'s default)."""
        if mode == "truncate" or len(ids) <= budget:
            return [0]
        overlap = self.window_overlap(budget)
        starts = list(window_starts(len(ids), budget, overlap))
        if mode == "select" and len(starts) > (keep := self.windows_kept(len(starts), keep)):
            best = rank_windows(query_ids, ids, budget, overlap)[:keep]
            starts = [starts[i] for i in sorted(best)]
        return starts
