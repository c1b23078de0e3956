"""``crossrank eval`` end to end, on full sets where that is fast and on slices elsewhere."""

from __future__ import annotations

import functools
import json

import ir_measures
import numpy as np
import pytest
import torch

from crossrank.cli import main
from crossrank.evaluation.beir import corpus_file, load_dataset, read_jsonl, read_run
from crossrank.evaluation.metrics import METRICS, evaluate
from crossrank.retrieval import bm25


def run_eval(args, tmp_path, capsys) -> tuple[dict, str]:
    out = tmp_path / "metrics.json"
    main(["eval", *map(str, args), "--json", str(out)])
    return json.loads(out.read_text()), capsys.readouterr().out


# SciFact test, BM25 (k1=0.9, b=0.4) over title + text: Anserini's BEIR regression
# beir-v1.0.0-scifact.flat publishes nDCG@10 0.6789 (anserini, src/main/resources/regression/
# beir-v1.0.0-scifact.flat.yaml). The BEIR paper's 0.665 is another setup (Elasticsearch,
# multifield). crossrank (bm25s with Snowball stems and its English stop words, where Lucene
# has Porter stems and its own stop list) lands 0.003 below Anserini.
ANSERINI_FLAT_NDCG10 = 0.6789
NEAR_ANSERINI = 0.005  # no stemmer 0.657, no titles 0.660, bm25s' k1=1.5 b=0.75 0.686 miss it
# crossrank's own value, recorded: other k1/b that stay near Anserini's figure (0.6752 ...
# 0.6796 for k1 0.6-1.2, b 0.4-0.75) differ from it by 0.0006 or more.
CROSSRANK_SCIFACT_NDCG10 = 0.6762
RECORDED_TOLERANCE = 0.0003


def check_scifact_bm25(ndcg: float) -> None:
    assert abs(ndcg - ANSERINI_FLAT_NDCG10) <= NEAR_ANSERINI, f"{ndcg:.4f} far from Anserini"
    assert ndcg == pytest.approx(CROSSRANK_SCIFACT_NDCG10, abs=RECORDED_TOLERANCE)


def test_bm25_on_scifact_matches_anserini_flat(data_dir, tmp_path, capsys):
    metrics, _ = run_eval([data_dir / "scifact", "--no-rerank"], tmp_path, capsys)
    check_scifact_bm25(metrics["first_stage"]["nDCG@10"])
    assert "reranked" not in metrics
    assert list(metrics["first_stage"]) == METRICS


@pytest.fixture(scope="module")
def scifact(data_dir):
    return load_dataset(data_dir / "scifact", "test")


def untitled(dataset) -> dict[str, str]:
    return {str(r["_id"]): r["text"] for r in read_jsonl(corpus_file(dataset.path))}


VARIANTS = {  # name -> (corpus, k1, b, stemmer)
    "no stemmer": (None, 0.9, 0.4, False),
    "no titles": (untitled, 0.9, 0.4, True),
    "k1=1.2 b=0.75": (None, 1.2, 0.75, True),
    "k1=1.2 b=0.4": (None, 1.2, 0.4, True),  # the nearest: 0.6768
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_scifact_bm25_check_rejects_other_configurations(variant, scifact, monkeypatch):
    corpus, k1, b, stemmer = VARIANTS[variant]
    monkeypatch.setattr(bm25, "BM25", functools.partial(bm25.BM25, k1=k1, b=b))
    if not stemmer:
        monkeypatch.setattr(bm25, "english_stemmer", lambda: None)
    run = bm25.bm25_run(corpus(scifact) if corpus else scifact.corpus, scifact.queries, 100)
    ndcg = evaluate(run, scifact.qrels)["nDCG@10"]
    print(f"\nSciFact BM25, {variant}: nDCG@10 {ndcg:.4f}")
    with pytest.raises(AssertionError):
        check_scifact_bm25(ndcg)


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


def test_threads_option_sets_the_model_threads(toy_dataset):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # so that the option, not the environment, makes it 1
    try:
        main(
            ["eval", str(toy_dataset), "--first-stage", "run:bm25", "--no-rerank", "--threads", "1"]
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(SystemExit):
        main(["eval", str(toy_dataset), "--threads", "0"])


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
