"""Score a Ray Dataset of (query, document) pairs with an actor pool of model replicas."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from crossrank.reranker import Reranker

if TYPE_CHECKING:
    from ray.data import Dataset

REQUIRED = ("query", "text")  # what the model reads; the ids only travel with the scores


class PairScorer:
    """One model replica. Ray Data builds one per actor, so each actor loads the model
    once and then scores batch after batch with it."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        batch_tokens: int = 8192,
        threads: int = 1,
        raw: bool = False,
        keep_text: bool = False,
        **reranker_options: Any,
    ):
        # Several actors share a machine's cores: one thread each (by default) keeps them
        # from oversubscribing it, and replicas, not threads, are what scale.
        torch.set_num_threads(threads)
        self.reranker = Reranker(model, max_batch_tokens=batch_tokens, **reranker_options)
        self.raw = raw
        self.keep_text = keep_text

    def __call__(self, batch: pa.Table) -> pa.Table:
        missing = [c for c in REQUIRED if c not in batch.column_names]
        if missing:
            raise ValueError(f"pairs need the columns {missing}; found {batch.column_names}")
        queries = batch.column("query").to_pylist()
        texts = batch.column("text").to_pylist()
        # A query's documents are scored in one Reranker.score call, so a query whose
        # candidates all fall in one batch gets exactly the scores Reranker.score gives.
        rows_by_query: dict[str, list[int]] = {}
        for row, query in enumerate(queries):
            rows_by_query.setdefault(query, []).append(row)
        scores = np.empty(len(queries), dtype=np.float64)
        for query, rows in rows_by_query.items():
            scores[rows] = self.reranker.score(query, [texts[r] for r in rows], raw=self.raw)
        if not self.keep_text:
            batch = batch.drop_columns(list(REQUIRED))
        return batch.append_column("score", pa.array(scores))


def score_dataset(
    dataset: Dataset,
    model: str | Path | None = None,
    *,
    replicas: int | tuple[int, int] = 1,
    batch_tokens: int = 8192,
    batch_rows: int | None = 1024,
    raw: bool = False,
    keep_text: bool = False,
    num_cpus: float = 1,
    num_gpus: float = 0,
    scorer: type[PairScorer] = PairScorer,
    **reranker_options: Any,
) -> Dataset:
    """``dataset`` with a ``score`` column, computed lazily by ``replicas`` model actors.

    Rows need ``query`` and ``text``; every other column (``query_id``, ``doc_id``, your
    own) is passed through, and ``query``/``text`` are dropped unless ``keep_text``.
    Scores are sigmoid(logit) in [0, 1], or logits if ``raw``. ``model`` is a checkpoint
    folder every node can read, a Hub id, or None for the bundled model;
    ``reranker_options`` (``max_length``, ``long_documents``, ``max_windows``, ``dtype``,
    ``device``) go to ``Reranker``. ``replicas`` is a fixed pool size or a (min, max)
    range to autoscale.
    ``batch_rows`` rows go to the model per actor call (None: whole blocks), in
    ``batch_tokens``-token batches. Each replica takes ``num_cpus`` CPUs (and as many
    torch threads) and ``num_gpus`` GPUs.

    Nothing runs until the result is consumed (``write_parquet``, ``iter_batches``...). A
    replica that dies is restarted and its unfinished batches are run again, so each
    input row comes out once.
    """
    from ray.data import ActorPoolStrategy

    pool = (
        ActorPoolStrategy(size=replicas)
        if isinstance(replicas, int)
        else ActorPoolStrategy(min_size=replicas[0], max_size=replicas[1])
    )
    if batch_rows is not None:
        # Blocks as read can be whole files, and one block goes to one replica: cut them
        # (streaming, no shuffle) so that every replica gets work.
        dataset = dataset.repartition(target_num_rows_per_block=batch_rows)
    return dataset.map_batches(
        scorer,
        fn_constructor_args=(None if model is None else str(model),),
        fn_constructor_kwargs=dict(
            batch_tokens=batch_tokens,
            threads=max(1, int(num_cpus)),
            raw=raw,
            keep_text=keep_text,
            **reranker_options,
        ),
        batch_size=batch_rows,
        batch_format="pyarrow",
        compute=pool,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        # Exactly-once rests on Ray Data's defaults for actor pools (max_restarts=-1,
        # max_task_retries=-1): a killed actor is restarted and the batches it held are
        # run again; tests/batch/test_faults.py checks it.
    )
