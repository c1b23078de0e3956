"""``crossrank eval`` end to end, on full sets where that is fast and on slices elsewhere."""

from __future__ import annotations

import json

import ir_measures
import numpy as np
import pytest
import torch

from crossrank.cli import main
from crossrank.evaluation.beir import load_dataset, read_run
from crossrank.evaluation.metrics import METRICS, evaluate


def run_eval(args, tmp_path, capsys) -> tuple[dict, str]:
    out = tmp_path / "metrics.json"
    main(["eval", *map(str, args), "--json", str(out)])
    return json.loads(out.read_text()), capsys.readouterr().out


def test_bm25_on_scifact_matches_the_beir_paper(data_dir, tmp_path, capsys):
    # BEIR (Thakur et al., 2021) Table: BM25 scifact nDCG@10 0.665 (Anserini flat: 0.679)
    metrics, _ = run_eval([data_dir / "scifact", "--no-rerank"], tmp_path, capsys)
    assert metrics["first_stage"]["nDCG@10"] == pytest.approx(0.665, abs=0.02)
    assert "reranked" not in metrics
    assert list(metrics["first_stage"]) == METRICS


def test_given_bm25_run_on_dl19(data_dir, tmp_path, capsys):
    metrics, printed = run_eval(
        [data_dir / "trec-dl19", "--first-stage", "run:bm25", "--no-rerank"], tmp_path, capsys
    )
    assert metrics["first_stage"]["nDCG@10"] == pytest.approx(0.506, abs=0.001)
    assert metrics["settings"]["binary_relevance_level"] == 2
    assert "grade >= 2" in printed


def test_reranking_writes_both_columns_json_and_plot(data_dir, tiny_checkpoint, tmp_path, capsys):
    plot = tmp_path / "chart.png"
    args = [data_dir / "trec-dl19", "--first-stage", "run:bm25", "--top-k", "10"]
    args += ["--max-queries", "3", "--model", tiny_checkpoint, "--plot", plot]
    args += ["--save-runs", tmp_path / "runs"]
    metrics, printed = run_eval(args, tmp_path, capsys)
    assert set(metrics) == {"first_stage", "reranked", "settings"}
    assert list(metrics["reranked"]) == METRICS
    assert metrics["settings"]["queries"] == 3
    # only the top 10 move: recall at 100 cannot change
    assert metrics["reranked"]["R@100"] == pytest.approx(metrics["first_stage"]["R@100"])
    assert metrics["reranked"]["nDCG@10"] != metrics["first_stage"]["nDCG@10"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "quick slice" in printed and "delta" in printed
    saved = read_run(tmp_path / "runs" / "reranked.chunk.trec")
    assert len(saved) == 3 and all(len(docs) == 100 for docs in saved.values())
    qrels = {q: docs for q, docs in load_dataset(args[0]).qrels.items() if q in saved}
    assert evaluate(saved, qrels, 2)["nDCG@10"] == pytest.approx(metrics["reranked"]["nDCG@10"])


def test_long_documents_both_reports_each_mode(data_dir, tiny_checkpoint, tmp_path, capsys):
    # at 48 tokens most DL19 passages are "long": truncation and windows score differently
    args = [data_dir / "trec-dl19", "--first-stage", "run:bm25", "--top-k", "5"]
    args += ["--max-queries", "2", "--model", tiny_checkpoint]
    args += ["--long-documents", "both", "--max-length", "48", "--save-runs", tmp_path]
    metrics, printed = run_eval(args, tmp_path, capsys)
    modes = metrics["reranked_by_long_documents"]
    assert list(modes) == ["truncate", "chunk"]
    assert metrics["reranked"] == modes["truncate"]
    truncated = read_run(tmp_path / "reranked.truncate.trec")
    chunked = read_run(tmp_path / "reranked.chunk.trec")
    assert metrics["settings"]["long_documents"] == ["truncate", "chunk"]
    for query, scores in truncated.items():
        top = sorted(scores, key=scores.get)[-5:]
        # the first window is the truncated input, so the best window scores at least as high
        assert all(chunked[query][d] >= scores[d] - 1e-5 for d in top)
    assert "reranked (chunk)" in printed and "reranked (truncate)" in printed


def test_wikiqa_keeps_questions_with_a_correct_and_a_wrong_answer(data_dir, tmp_path, capsys):
    args = [data_dir / "wikiqa", "--first-stage", "run:bm25", "--no-rerank"]
    metrics, printed = run_eval(args, tmp_path, capsys)
    assert metrics["settings"]["queries"] == 237
    assert "both a correct and a wrong candidate" in printed
    everything, _ = run_eval([*args, "--all-queries"], tmp_path, capsys)
    assert everything["settings"]["queries"] == 633
    # questions without a correct answer score 0, so the unfiltered MAP is lower
    assert everything["first_stage"]["AP"] < metrics["first_stage"]["AP"]


def reference_dense_run(dataset, k=100):
    """all-MiniLM-L6-v2 through transformers: mean pooling over the mask, normalised."""
    from transformers import AutoModel, AutoTokenizer

    from crossrank.engine.hub import all_minilm_l6_v2_path

    path = str(all_minilm_l6_v2_path())
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(texts):
        out = []
        for start in range(0, len(texts), 32):
            batch = tokenizer(
                texts[start : start + 32],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out).numpy()

    doc_ids, query_ids = list(dataset.corpus), list(dataset.queries)
    sims = (
        embed([dataset.queries[q] for q in query_ids])
        @ embed([dataset.corpus[d] for d in doc_ids]).T
    )
    return {
        q: {doc_ids[j]: float(row[j]) for j in np.argsort(-row)[:k]}
        for q, row in zip(query_ids, sims, strict=True)
    }


def test_dense_first_stage_agrees_with_sentence_transformers_recipe(
    scifact_slice, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = [scifact_slice, "--first-stage", "dense", "--no-rerank"]
    metrics, _ = run_eval(args, tmp_path, capsys)
    dataset = load_dataset(scifact_slice)
    reference = ir_measures.calc_aggregate(
        [ir_measures.nDCG @ 10], dataset.qrels, reference_dense_run(dataset)
    )[ir_measures.nDCG @ 10]
    assert metrics["first_stage"]["nDCG@10"] == pytest.approx(reference, abs=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "dev"], "no split 'dev'"),
        (["--first-stage", "run:nope"], "has no run 'nope'"),
        (["--first-stage", "sparse"], "unknown first stage"),
        (["--top-k", "0"], "at least 1"),
    ],
)
def test_user_errors_are_one_line_messages(data_dir, args, message):
    with pytest.raises(SystemExit, match=message):
        main(["eval", str(data_dir / "trec-dl19"), "--no-rerank", *args])


def test_missing_default_model_says_what_to_pass(toy_dataset, monkeypatch):
    import crossrank.reranker

    def no_default():
        raise FileNotFoundError("this crossrank installation has no default model")

    monkeypatch.setattr(crossrank.reranker, "default_model_path", no_default)
    with pytest.raises(SystemExit, match="no default model"):
        main(["eval", str(toy_dataset), "--first-stage", "run:bm25"])


def test_trecqa_reranks_every_candidate_and_flags_the_leaking_order(data_dir, tmp_path, capsys):
    args = [data_dir / "trecqa", "--first-stage", "run:bm25", "--no-rerank", "--top-k", "10"]
    metrics, printed = run_eval(args, tmp_path, capsys)
    assert metrics["settings"]["top_k"] == 112  # the longest candidate list
    assert metrics["first_stage"]["AP"] == pytest.approx(1.0)  # the source lists positives first
    assert "leaks the labels" in printed
