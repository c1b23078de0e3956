"""The user-facing API: ``Reranker.from_pretrained(...).rerank(query, documents)``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from crossrank.engine.batching import collate, pack_by_tokens
from crossrank.engine.conventions import ACTIVATIONS, read_conventions
from crossrank.engine.hub import resolve_checkpoint
from crossrank.engine.precision import Precision, choose_precision, probe_scores
from crossrank.engine.runtime import autocast_context, pick_device, place_model
from crossrank.engine.tokenization import LongDocuments, PairEncoder, PairFeatures, load_tokenizer
from crossrank.models import Bert, load_model

log = logging.getLogger("crossrank")

# Models with at least this many positions read long documents whole by default;
# shorter ones (512-token BERTs) split them into windows and keep the best window.
NATIVE_LONG_CONTEXT = 4096


@dataclass(frozen=True, slots=True)
class RerankResult:
    index: int  # position of the document in the input list
    relevance_score: float  # sigmoid of the model's logit, in [0, 1]
    document: str | None = None


def default_model_path() -> Path:
    """The reranker shipped inside the package."""
    path = Path(str(resources.files("crossrank") / "default_model"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"this crossrank installation has no default model at {path}; pass a checkpoint "
            "folder or hub id (Python: Reranker('path/or/hub-id'); CLI: --model PATH)"
        )
    return path


def check_documents(documents: Sequence[str]) -> list[str]:
    if isinstance(documents, str):
        raise TypeError("documents must be a list of strings, not a single string")
    documents = list(documents)
    for position, document in enumerate(documents):
        if not isinstance(document, str):
            raise TypeError(
                f"document at position {position} is {type(document).__name__}, not str"
            )
    return documents


def check_query(query: str) -> str:
    if not isinstance(query, str):
        raise TypeError(f"query must be str, not {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty")
    return query


class Reranker:
    """A cross-encoder that scores how relevant each document is to a query."""

    precision: Precision | None = None  # the number format chosen at load, and why
    activation: str = "sigmoid"  # logit -> score (engine/conventions.py)

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int | None = None,
        query_max_length: int | None = None,
        long_documents: LongDocuments | None = None,
        max_windows: int | None = None,
        max_batch_tokens: int = 8192,
        trust_remote_code: bool = False,
        activation: str | None = None,
    ):
        """Load a reranker from a local folder or a Hugging Face Hub id.

        With no name, the default model shipped with crossrank. ``dtype`` is "float32",
        "bfloat16", "float16" or "int8" (CPU dynamic quantisation); by default bfloat16 on
        CPUs with native bf16 instructions when a probe finds the model's scores unchanged,
        float32 on other CPUs, bfloat16 autocast on CUDA (``engine/precision.py``).
        ``max_length`` defaults to the longest input the model's positions allow;
        ``long_documents`` to ``"truncate"`` for long-context models and ``"chunk"`` for
        512-token ones; ``"select"`` splits like ``"chunk"`` but reads only the
        ``max_windows`` windows of each document that BM25 ranks best for the query (default
        a tenth of the document's windows, at least 3: ``default_max_windows``). Both can
        also be given per call (``rerank(query, documents, long_documents="select",
        max_windows=2)``). An architecture without crossrank code loads through transformers
        when ``crossrank[transformers]`` is installed; ``trust_remote_code=True`` lets it run
        code from the checkpoint's repository. ``activation`` ("sigmoid", "identity" or
        "tanh") turns logits into scores; by default the one a sentence-transformers
        checkpoint names, else sigmoid (``engine/conventions.py``), so scores match
        ``CrossEncoder.predict`` on the same folder.
        """
        path = default_model_path() if name_or_path is None else resolve_checkpoint(name_or_path)
        device = pick_device(device)
        model = load_model(path, trust_remote_code=trust_remote_code)
        limit = model.config.max_tokens
        conventions = read_conventions(path)
        activation = activation or conventions.activation
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}"
            )
        if activation != "sigmoid":
            log.info(
                "%s: scores are %s(logit) (%s)",
                path.name,
                activation,
                conventions.activation_source,
            )
        if max_length is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the model's {limit} positions")
        if long_documents is None:
            long_documents = "truncate" if limit >= NATIVE_LONG_CONTEXT else "chunk"
        encoder = PairEncoder(
            load_tokenizer(path),
            max_length=max_length or min(conventions.max_length or limit, limit),
            query_max_length=query_max_length,
            long_documents=long_documents,
            max_windows=max_windows,
            prompt=getattr(model, "prompt", None),  # decoder rerankers (models/qwen3.py)
        )
        # dtype=None: bf16 on CPUs with native bf16 if the model's scores allow, else fp32
        precision = choose_precision(
            dtype, device, lambda probe_dtype: probe_scores(model, encoder, probe_dtype)
        )
        log.info("%s: %s", path.name, precision)
        model, autocast = place_model(model, device, precision.dtype)
        self._attach(model, encoder, path, device, max_batch_tokens, autocast)
        self.precision = precision
        self.activation = activation

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, **options) -> Reranker:
        """The same as ``Reranker(name_or_path, **options)``."""
        return cls(name_or_path, **options)

    @classmethod
    def from_model(
        cls,
        model: Bert,
        encoder: PairEncoder,
        *,
        path: Path | None = None,
        device: torch.device | None = None,
        max_batch_tokens: int = 8192,
        autocast: torch.dtype | None = None,
    ) -> Reranker:
        """Wrap a model already in memory (for example one being trained)."""
        reranker = cls.__new__(cls)
        device = device or next(model.parameters()).device
        reranker._attach(model, encoder, path, device, max_batch_tokens, autocast)
        return reranker

    def _attach(self, model, encoder, path, device, max_batch_tokens, autocast) -> None:
        self.model = model
        self.encoder = encoder
        self.path = path  # the local checkpoint folder
        self.device = device
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = model.config.pad_token_id
        self.autocast = autocast

    def __call__(self, query: str, documents: Sequence[str], **options) -> list[RerankResult]:
        return self.rerank(query, documents, **options)

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        return_documents: bool = True,
        long_documents: LongDocuments | None = None,
        max_windows: int | None = None,
        instruction: str | None = None,
    ) -> list[RerankResult]:
        """Documents sorted best first, each with its input index and a score in [0, 1].

        ``long_documents``/``max_windows`` override the reranker's settings for this call;
        ``instruction`` replaces a decoder reranker's default task instruction (Qwen3-Reranker:
        "Given a web search query, retrieve relevant passages that answer the query").
        """
        documents = check_documents(documents)
        if top_n is not None and top_n < 1:
            raise ValueError(f"top_n must be at least 1, not {top_n}")
        scores = self.score(
            query,
            documents,
            long_documents=long_documents,
            max_windows=max_windows,
            instruction=instruction,
        )
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[:top_n]
        return [
            RerankResult(i, scores[i], documents[i] if return_documents else None) for i in order
        ]

    def score(
        self,
        query: str,
        documents: Sequence[str],
        raw: bool = False,
        long_documents: LongDocuments | None = None,
        max_windows: int | None = None,
        instruction: str | None = None,
    ) -> list[float]:
        """One score per document, in input order: ``activate(logit)`` (sigmoid unless the
        checkpoint names another activation), or the logit if ``raw``."""
        documents = check_documents(documents)
        if not documents:
            return []
        features = self.encoder.encode(
            check_query(query), documents, long_documents, max_windows, instruction
        )
        logits = self.pool(self.logits(features), features, len(documents))
        return [float(x) if raw else self.activate(x) for x in logits]

    def activate(self, logit: float) -> float:
        """The score of a logit: the checkpoint's activation (sigmoid unless it says)."""
        return ACTIVATIONS[self.activation](logit)

    def score_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        raw: bool = False,
        long_documents: LongDocuments | None = None,
        max_windows: int | None = None,
        instruction: str | None = None,
    ) -> list[float]:
        """Scores for (query, document) pairs of different queries, batched together."""
        features = self.pair_features(pairs, long_documents, max_windows, instruction)
        logits = self.pool(self.logits(features), features, len(pairs))
        return [float(x) if raw else self.activate(x) for x in logits]

    def pair_features(
        self,
        pairs: Sequence[tuple[str, str]],
        long_documents: LongDocuments | None = None,
        max_windows: int | None = None,
        instruction: str | None = None,
    ) -> list[PairFeatures]:
        """Model inputs for (query, document) pairs; ``document`` is the pair's position.

        Each query is tokenised once, each distinct document once (the encoder caches
        documents), and all pairs' windows go to ``logits`` together, so windows of many
        documents share the same length-sorted, token-budget batches.
        """
        documents = check_documents([document for _, document in pairs])
        positions_by_query: dict[str, list[int]] = {}
        for position, (query, _) in enumerate(pairs):
            positions_by_query.setdefault(check_query(query), []).append(position)
        features: list[PairFeatures] = []
        for query, positions in positions_by_query.items():
            encoded = self.encoder.encode(
                query, [documents[p] for p in positions], long_documents, max_windows, instruction
            )
            for f in encoded:
                features.append(PairFeatures(f.input_ids, f.token_type_ids, positions[f.document]))
        return features

    @staticmethod
    def pool(logits: np.ndarray, features: Sequence[PairFeatures], count: int) -> np.ndarray:
        """Max over the windows of each document (a no-op without chunking)."""
        best = np.full(count, -np.inf)
        np.maximum.at(best, [f.document for f in features], logits)
        return best

    @torch.inference_mode()
    def logits(self, features: Sequence[PairFeatures]) -> np.ndarray:
        """Raw logits for model inputs, in input order, computed in length-sorted batches."""
        out = np.empty(len(features), dtype=np.float64)
        for batch in pack_by_tokens([len(f) for f in features], self.max_batch_tokens):
            inputs = collate([features[i] for i in batch], self.pad_id, self.device)
            with autocast_context(self.device, self.autocast):
                logits = self.model(**inputs)
            out[batch] = logits[:, 0].float().cpu().numpy()
        return out
