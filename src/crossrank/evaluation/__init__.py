"""Benchmarks for rerankers: BEIR-format data, first stages, metrics and the eval command."""

from crossrank.evaluation.beir import Dataset, DatasetError, load_dataset
from crossrank.evaluation.harness import EvalReport, evaluate_reranking
from crossrank.evaluation.metrics import evaluate

__all__ = [
    "Dataset",
    "DatasetError",
    "EvalReport",
    "evaluate",
    "evaluate_reranking",
    "load_dataset",
]
