"""Offline scoring of many (query, document) pairs on Ray Data, one model per actor.

``score_dataset(ds)`` adds a ``score`` column to any Ray Dataset of ``query_id``,
``query``, ``doc_id`` and ``text`` rows; ``read_pairs(path)`` makes such a dataset from a
TREC run of a BEIR folder, Parquet or JSONL. ``crossrank batch`` does both and writes
Parquet. Ray is an optional dependency (``pip install crossrank[batch]``): importing
this package does not import it.
"""

from crossrank.batch.inputs import COLUMNS, read_pairs
from crossrank.batch.scoring import PairScorer, score_dataset

__all__ = ["COLUMNS", "PairScorer", "read_pairs", "score_dataset"]
