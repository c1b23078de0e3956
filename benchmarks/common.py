"""Shared by the benchmark scripts: the checkpoint to measure and the DL19 workload."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from crossrank.engine.hub import all_minilm_l6_v2_path
from crossrank.evaluation.beir import Dataset, load_dataset, read_run
from crossrank.models import load_model, save_model
from crossrank.models.bert import Bert
from crossrank.reranker import default_model_path

# BEIR folders (trec-dl19, ...); CROSSRANK_BENCH_DATA points elsewhere (e.g. on a GPU machine
# that has only a copy of trec-dl19).
DATA = Path(
    os.environ.get("CROSSRANK_BENCH_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def benchmark_checkpoint(model: str | None) -> tuple[Path, str]:
    """The given checkpoint, else the bundled default model, else all-MiniLM-L6-v2 with a
    random classification head (same shape and speed as the default model)."""
    if model:
        return Path(model), model
    try:
        return default_model_path(), "bundled default model"
    except FileNotFoundError:
        pass
    source = all_minilm_l6_v2_path()
    encoder = load_model(source, head=False)
    torch.manual_seed(0)
    model_ = Bert(encoder.config)
    model_.load_state_dict(encoder.state_dict(), strict=False)
    folder = Path(tempfile.mkdtemp(prefix="crossrank-bench-"))
    save_model(model_, folder)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    return folder, "all-MiniLM-L6-v2 + random head (no default model yet)"


def dl19(
    query_count: int | None = None, data: str | Path | None = None
) -> tuple[Dataset, list[tuple[str, str, list[str], list[str]]]]:
    """DL19 and, per query: (id, text, candidate ids, candidate texts) of its BM25 top 100."""
    dataset = load_dataset(Path(data or DATA) / "trec-dl19", "test")
    run = read_run(dataset.run_path("bm25"))
    workload = []
    for qid in sorted(run)[:query_count]:
        ranked = sorted(run[qid], key=lambda d: -run[qid][d])[:100]
        workload.append((qid, dataset.queries[qid], ranked, [dataset.corpus[d] for d in ranked]))
    return dataset, workload
