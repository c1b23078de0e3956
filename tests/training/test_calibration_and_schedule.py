"""Platt calibration folded into the head, the warm-up options and the stalled-loss warning."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from conftest import make_checkpoint
from crossrank.cli import main
from crossrank.reranker import Reranker
from crossrank.training.calibrate import (
    WEIGHTINGS,
    expected_calibration_error,
    fit_platt,
    fit_sets,
    fold_into_head,
    leave_one_set_out,
)
from crossrank.training.data import load_beir, write_run
from crossrank.training.train import (
    StallWatch,
    TrainConfig,
    init_model,
    load_sources,
    lr_lambda,
    train,
)


def logistic_sample(scale: float, bias: float, n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(scale * logits + bias)))).astype(float)
    return logits, labels


def test_platt_fit_recovers_the_scale_and_bias_that_generated_the_labels():
    logits, labels = logistic_sample(0.6, -1.5)
    scale, bias = fit_platt(logits, labels)
    assert scale == pytest.approx(0.6, abs=0.05)
    assert bias == pytest.approx(-1.5, abs=0.1)


def test_balanced_weighting_gives_a_small_set_as_much_say_as_a_large_one():
    large, small = logistic_sample(0.6, -1.5, n=20_000), logistic_sample(1.2, 0.5, n=2_000)
    pooled = fit_sets([large, small], "pooled")
    balanced = fit_sets([large, small], "balanced")
    assert abs(pooled[0] - 0.6) < abs(balanced[0] - 0.6)  # pooled follows the large set
    assert 0.6 < balanced[0] < 1.2 and -1.5 < balanced[1] < 0.5
    assert abs(balanced[1] - (-0.5)) < abs(pooled[1] - (-0.5))


def test_leave_one_set_out_finds_the_set_the_others_do_not_calibrate():
    sets = {
        "a": logistic_sample(0.6, -1.5, n=5_000, seed=1),
        "b": logistic_sample(0.6, -1.5, n=5_000, seed=2),
        "odd": logistic_sample(0.6, 1.5, n=5_000, seed=3),
    }
    result = leave_one_set_out(sets)
    for weighting in WEIGHTINGS:
        eces = result[weighting]
        assert eces["odd"] > max(eces["a"], eces["b"]) + 0.1
        assert eces["mean"] == pytest.approx((eces["a"] + eces["b"] + eces["odd"]) / 3)


def test_ece_is_small_when_calibrated_and_large_when_not():
    logits, labels = logistic_sample(0.6, -1.5)
    calibrated = 1 / (1 + np.exp(-(0.6 * logits - 1.5)))
    raw = 1 / (1 + np.exp(-logits))
    assert expected_calibration_error(calibrated, labels) < 0.02
    assert expected_calibration_error(raw, labels) > 0.1


def test_folding_maps_every_logit_to_scale_times_logit_plus_bias(tmp_path):
    model = make_checkpoint(tmp_path / "model")
    query, documents = "what is a reranker", ["a reranker reorders results", "bananas", "x y z"]
    before = np.array(Reranker(model).score(query, documents, raw=True))
    assert np.ptp(before) > 0.05  # the scores spread, so a wrong fold would show
    fold_into_head(model, tmp_path / "calibrated", scale=0.5, bias=-1.0)
    after = np.array(Reranker(tmp_path / "calibrated").score(query, documents, raw=True))
    np.testing.assert_allclose(after, 0.5 * before - 1.0, atol=1e-5)
    assert (tmp_path / "calibrated" / "tokenizer.json").is_file()


def test_training_from_a_calibrated_checkpoint_starts_from_the_raw_logits(tmp_path):
    model = make_checkpoint(tmp_path / "model")
    fold_into_head(model, tmp_path / "once", scale=0.5, bias=-1.0)
    fold_into_head(tmp_path / "once", tmp_path / "twice", scale=3.0, bias=0.5)
    record = json.loads((tmp_path / "twice" / "config.json").read_text())
    assert record["crossrank_calibration"] == {"scale": 1.5, "bias": -2.5}  # 3(0.5x - 1) + 0.5
    raw, unfolded = init_model(model).state_dict(), init_model(tmp_path / "twice").state_dict()
    for key in ("classifier.weight", "classifier.bias"):
        torch.testing.assert_close(unfolded[key], raw[key], atol=1e-5, rtol=0)


def test_a_warmup_of_one_or_more_is_refused_with_the_option_that_takes_steps(capsys):
    args = ["train", "--base", "b", "--data", "d", "--out", "o", "--steps", "1200"]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--warmup", "50"])
    assert "--warmup-steps 50" in str(stop.value)
    assert "[0, 1)" in str(stop.value)


def test_warmup_steps_set_the_warmup_length_and_one_step_schedules_work():
    schedule = lr_lambda(TrainConfig(base="", data=[], out="", steps=1000, warmup_steps=50))
    assert schedule(48) < 1.0
    assert schedule(49) == pytest.approx(1.0)
    assert schedule(999) == pytest.approx(1 / 950)
    assert lr_lambda(TrainConfig(base="", data=[], out="", steps=1))(0) == 1.0


def test_stall_watch_warns_on_a_flat_loss_only():
    flat, falling = StallWatch(window=10), StallWatch(window=10)
    flat_warnings = [flat.update(step, 0.5) for step in range(25)]
    falling_warnings = [falling.update(step, 1.0 / (1 + step)) for step in range(25)]
    assert sum(w is not None for w in flat_warnings) == 2
    assert "not moved in 10 steps" in next(w for w in flat_warnings if w)
    assert not any(falling_warnings)


def test_sets_without_a_bm25_run_use_their_own_candidate_list(data_dir):
    squad = load_beir(data_dir / "squad", "train")
    query_id = next(iter(squad.qrels))
    lines = (data_dir / "squad" / "runs" / "train.article.trec").read_text().splitlines()
    article = [line.split()[2] for line in lines if line.split()[0] == query_id]
    assert squad.run[query_id] == article[:100]


@torch.no_grad()
def test_calibrate_cli_fits_reports_and_writes_a_checkpoint(data_dir, tmp_path):
    model = make_checkpoint(tmp_path / "model")
    main(
        [
            "calibrate", "--model", str(model), "--fit", f"{data_dir / 'trecqa'}:dev",
            "--report", f"{data_dir / 'trecqa'}:test", "--out", str(tmp_path / "out"),
            "--json", str(tmp_path / "calibration.json"), "--plot", str(tmp_path / "r.png"),
        ]
    )  # fmt: skip
    result = json.loads((tmp_path / "calibration.json").read_text())
    report = result["report"]["trecqa:test"]
    assert report["pairs"] == 1442 and report["relevant"] == 248
    assert result["fit"]["after"]["ece"] <= result["fit"]["before"]["ece"]
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert Reranker(tmp_path / "out").score("q", ["d"])


def test_eval_at_start_saves_nothing_that_does_not_beat_the_starting_weights(tmp_path):
    folder = tmp_path / "toy"
    (folder / "qrels").mkdir(parents=True)
    (folder / "runs").mkdir()
    corpus = [{"_id": f"d{i}", "text": f"about {t}"} for i, t in enumerate(["apple", "river"] * 2)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(c) for c in corpus) + "\n")
    queries = [
        {"_id": f"q{i}", "text": f"what about {t}"} for i, t in enumerate(["apple", "river"])
    ]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    qrels = ["q0\td0\t1", "q0\td1\t0", "q1\td1\t1", "q1\td0\t0"]
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels))
    run = [f"q{q} Q0 d{d} {d + 1} 1 bm25" for q in range(2) for d in range(4)]
    (folder / "runs" / "train.bm25.trec").write_text("\n".join(run) + "\n")
    base = make_checkpoint(tmp_path / "base")
    out = tmp_path / "out"
    config = TrainConfig(
        base=str(base), data=[str(folder)], out=str(out), dev=[f"{folder}:train"], lr=0.0,
        steps=2, eval_every=1, list_size=2, groups_per_step=2, max_length=16, threads=1,
        query_max_length=8, dev_max_length=16,
        eval_at_start=True,
    )  # fmt: skip
    train(config)
    log = [json.loads(line) for line in (out / "training_log.jsonl").open()]
    assert [r["step"] for r in log if "dev" in r] == [0, 1, 2]
    assert log[0]["dev"] == log[-1]["dev"]  # lr 0: nothing changed, so nothing is better
    assert not (out / "model.safetensors").exists()


def test_gzipped_teacher_runs_reach_the_training_lists(data_dir, tmp_path):
    trecqa = load_beir(data_dir / "trecqa", "train")
    scores = {q: {d: float(i) for i, d in enumerate(docs)} for q, docs in trecqa.run.items()}
    write_run(scores, tmp_path / "trecqa.train.trec", tag="teacher")
    with open(tmp_path / "trecqa.train.trec", "rb") as plain:
        (tmp_path / "trecqa.train.trec.gz").write_bytes(gzip.compress(plain.read()))
    (tmp_path / "trecqa.train.trec").unlink()  # only the committed form is left
    cfg = TrainConfig(base="", data=[str(data_dir / "trecqa")], out="", teacher_runs=str(tmp_path))
    [source], _ = load_sources(cfg)
    group = source.groups[0]
    assert all(c.teacher is not None for c in group.candidates)
    assert [c.teacher for c in group.candidates] == [
        scores[group.query_id][c.doc_id] for c in group.candidates
    ]
