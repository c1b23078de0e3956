"""Training: losses, data, learning, reproducibility, resume, saved folder, default model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_checkpoint
from crossrank import Reranker
from crossrank.cli import main as cli_main
from crossrank.engine.batching import collate
from crossrank.models import load_model
from crossrank.training.data import load_beir, make_groups, read_run_scores, sample_list
from crossrank.training.losses import distillation_kl, listwise_softmax_ce, pointwise_bce
from crossrank.training.soup import average_checkpoints
from crossrank.training.soup import main as soup_main
from crossrank.training.train import TrainConfig, train

# ---------------------------------------------------------------- fixtures

TOPICS = ["apple", "river", "guitar", "volcano", "chess", "bread", "comet", "tiger"]


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """A BEIR folder where a document is relevant iff it mentions the query's topic word."""
    folder = tmp_path_factory.mktemp("toy")
    rng = random.Random(0)
    filler = ["the", "of", "and", "a", "to", "in", "is", "was", "for", "on", "with", "as"]
    corpus, qrels, runs = [], [], []
    for qi, topic in enumerate(TOPICS):
        for di in range(6):
            words = rng.sample(filler, 6)
            if di < 2:  # grade 2 and grade 1 documents mention the topic
                words.insert(rng.randrange(len(words)), topic)
            else:
                words.insert(0, TOPICS[(qi + di) % len(TOPICS)] if di == 2 else "")
            doc_id = f"d{qi}-{di}"
            corpus.append({"_id": doc_id, "title": "", "text": " ".join(w for w in words if w)})
            qrels.append(f"q{qi}\t{doc_id}\t{max(0, 2 - di)}")
            runs.append(f"q{qi} Q0 {doc_id} {di + 1} {10 - di} bm25")
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(c) for c in corpus) + "\n")
    queries = [{"_id": f"q{i}", "text": f"what about {t}"} for i, t in enumerate(TOPICS)]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels))
    (folder / "runs").mkdir()
    (folder / "runs" / "train.bm25.trec").write_text("\n".join(runs) + "\n")
    return folder


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random bare encoder (no head), like all-MiniLM-L6-v2 but 32 wide."""
    folder = make_checkpoint(tmp_path_factory.mktemp("tiny-base"))
    state = load_file(folder / "model.safetensors")
    from safetensors.torch import save_file

    bare = {k: v for k, v in state.items() if not k.startswith(("classifier.", "bert.pooler."))}
    save_file(bare, folder / "model.safetensors")
    return folder


def config(base: Path, data: Path, out: Path, **overrides) -> TrainConfig:
    options = dict(
        base=str(base),
        data=[str(data)],
        out=str(out),
        steps=6,
        groups_per_step=4,
        micro_groups=2,
        list_size=4,
        lr=1e-3,
        warmup=0.0,
        max_length=32,
        query_max_length=8,
        save_every=2,
        eval_every=100,
        threads=1,  # tiny matrices: a second OpenMP thread only adds synchronisation
    )
    return TrainConfig(**{**options, **overrides})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


# ---------------------------------------------------------------- losses


def test_listwise_ce_matches_cross_entropy_and_ignores_masked_entries():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, -1.0]])
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(listwise_softmax_ce(logits), expected)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    padded = logits.clone()
    padded[0, 2] = 100.0  # a masked entry must not count, however large
    short = torch.nn.functional.cross_entropy(logits[0:1, :2], torch.zeros(1, dtype=torch.long))
    full = torch.nn.functional.cross_entropy(logits[1:], torch.zeros(1, dtype=torch.long))
    assert torch.allclose(listwise_softmax_ce(padded, mask), (short + full) / 2)


def test_listwise_ce_is_lower_when_the_positive_scores_highest():
    assert listwise_softmax_ce(torch.tensor([[5.0, 0.0, 0.0]])) < listwise_softmax_ce(
        torch.tensor([[0.0, 5.0, 0.0]])
    )


def test_distillation_kl_zero_iff_distributions_match():
    teacher = torch.tensor([[3.0, 1.0, 0.0, -2.0]])
    assert distillation_kl(teacher.clone(), teacher).abs() < 1e-6
    assert distillation_kl(teacher + 7.0, teacher).abs() < 1e-6  # shift-invariant
    assert distillation_kl(teacher.flip(-1), teacher) > 0.5
    mask = torch.tensor([[True, True, True, False]])
    other = teacher.clone()
    other[0, 3] = 50.0  # masked: ignored by both sides
    assert distillation_kl(other, teacher, mask).abs() < 1e-6


def test_pointwise_bce_uses_soft_graded_targets():
    logits = torch.tensor([0.0, 0.0])
    targets = torch.tensor([2 / 3, 0.0])
    assert torch.allclose(
        pointwise_bce(logits, targets),
        torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), targets),
    )


# ---------------------------------------------------------------- data


def test_dl21_train_keeps_graded_labels_and_candidates(data_dir):
    data = load_beir(data_dir / "trec-dl21", "train")
    assert len(data.queries) == 53 and all(len(r) == 100 for r in data.run.values())
    grades = {g for judged in data.qrels.values() for g in judged.values()}
    assert grades == {0, 1, 2, 3}
    groups = make_groups(data)
    rng = random.Random(0)
    for group in groups[:10]:
        chosen = sample_list(group, 8, rng)
        assert chosen is not None and len(chosen) == 8
        positive, negatives = chosen[0], chosen[1:]
        assert positive.label >= 1
        # a negative is judged strictly lower than the positive, or unjudged
        assert all(n.label is None or n.label < positive.label for n in negatives)


def test_test_splits_are_refused(data_dir):
    with pytest.raises(ValueError, match="test"):
        load_beir(data_dir / "trec-dl19", "test")


def test_bm25_mines_candidates_when_a_set_has_no_run(data_dir):
    data = load_beir(data_dir / "scifact", "train", depth=20)
    assert len(data.run) == 809 and all(len(docs) == 20 for docs in data.run.values())
    # BM25 finds the cited abstract for a good share of claims: these are hard negatives
    found = sum(any(d in data.qrels[q] for d in docs) for q, docs in data.run.items())
    assert found / len(data.run) > 0.5


def independent_embeddings(folder: Path, texts: set[str]) -> dict[str, torch.Tensor]:
    """sentence-transformers' mean-pooled, normalised embeddings, one unpadded text at a time,
    straight from ``transformers`` (the teacher batches, pads, sorts and caches)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    embeddings = {}
    with torch.no_grad():
        for text in texts:
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
            embeddings[text] = torch.nn.functional.normalize(hidden.mean(0), dim=0)
    return embeddings


def test_teacher_scores_candidates_with_a_bi_encoder(toy_data, tmp_path):
    from crossrank.engine.hub import all_minilm_l6_v2_path
    from crossrank.training.teacher import main as teacher_main

    bi_encoder = all_minilm_l6_v2_path()  # a real teacher: its cosines spread out
    teacher_main(["--model", str(bi_encoder), "--data", str(toy_data), "--out", str(tmp_path)])
    scores = read_run_scores(tmp_path / f"{toy_data.name}.train.trec")
    assert set(scores) == {f"q{i}" for i in range(len(TOPICS))}
    assert all(len(docs) == 6 for docs in scores.values())
    data = load_beir(toy_data, "train")
    texts = {data.queries[q] for q in scores} | {data.corpus[d] for r in scores.values() for d in r}
    embedding = independent_embeddings(bi_encoder, texts)
    expected = {
        (q, d): 20 * float(embedding[data.queries[q]] @ embedding[data.corpus[d]])
        for q, docs in scores.items()
        for d in docs
    }
    got = {(q, d): s for q, docs in scores.items() for d, s in docs.items()}
    assert max(expected.values()) - min(expected.values()) > 2  # the scores differ
    assert got == pytest.approx(expected, abs=1e-4)  # the run file keeps 6 decimals
    groups = make_groups(data, scores)
    assert all(c.teacher is not None for g in groups for c in g.candidates)


def test_teacher_encodes_each_text_once_and_caching_changes_nothing(tiny_base):
    from crossrank.training.teacher import BiEncoder

    texts = ["a river of words", "chess and bread", "a river of words", "comet"]
    cached = BiEncoder(tiny_base)
    first = cached.encode(texts[:2], progress=False)
    both = cached.encode(texts, progress=False)
    assert len(cached.cache) == 3
    assert torch.equal(both[:2], first) and torch.equal(both[2], both[0])
    fresh = BiEncoder(tiny_base).encode(texts[2:], progress=False)
    torch.testing.assert_close(fresh, both[2:], atol=1e-5, rtol=0)


def test_borrowed_queries_ask_training_questions_of_another_sets_passages(toy_data, tmp_path):
    from crossrank.training.borrow import borrow

    out = borrow([str(toy_data)], [f"{toy_data}@3"], tmp_path / "borrowed", depth=2)
    data = load_beir(out, "train")
    assert not data.qrels  # unlabelled: only a teacher can teach through it
    pool = {d for q in TOPICS for d in (f"d{TOPICS.index(q)}-{i}" for i in range(3))}
    assert set(data.corpus) == pool
    assert len(data.queries) == len(TOPICS) and all(len(d) == 2 for d in data.run.values())
    # BM25 over the pool puts a passage that mentions the question's topic first
    assert all(data.queries[q].split()[-1] in data.corpus[docs[0]] for q, docs in data.run.items())
    with pytest.raises(ValueError, match="refusing to train"):
        borrow([f"{toy_data}:test"], [str(toy_data)], tmp_path / "x")


# ---------------------------------------------------------------- training


def test_select_trains_a_long_document_on_its_best_window(tiny_base, toy_data, tmp_path):
    from crossrank.engine.tokenization import load_tokenizer
    from crossrank.training.train import training_encoder

    tokenizer = load_tokenizer(tiny_base)
    long_document = " ".join(["the weather was mild and the river was calm"] * 12 + ["volcano"])
    volcano = tokenizer.encode("volcano", add_special_tokens=False).ids[0]
    read = {}
    for mode in ("truncate", "select"):
        cfg = config(tiny_base, toy_data, tmp_path, long_documents=mode)
        (features,) = training_encoder(cfg, tokenizer).encode("what about volcano", [long_document])
        read[mode] = list(features.input_ids)
    assert read["truncate"].count(volcano) == 1  # only the query's
    assert read["select"].count(volcano) == 2  # the query's and the window's
    assert len(read["truncate"]) == 32 and len(read["select"]) <= 32  # one window each
    with pytest.raises(ValueError, match="truncate or select"):
        config(tiny_base, toy_data, tmp_path, long_documents="chunk")


def test_a_few_steps_reduce_the_loss(tiny_base, toy_data, tmp_path):
    cfg = config(tiny_base, toy_data, tmp_path / "run", steps=40, lr=3e-3, save_every=100)
    train(cfg)
    log = [json.loads(line) for line in (tmp_path / "run" / "training_log.jsonl").open()]
    first = sum(r["loss"] for r in log[:5]) / 5
    last = sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.7 * first


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny_base, toy_data, tmp_path):
    train(config(tiny_base, toy_data, tmp_path / "a", seed=1))
    train(config(tiny_base, toy_data, tmp_path / "b", seed=1))
    train(config(tiny_base, toy_data, tmp_path / "c", seed=2))
    a, b, c = (weights(tmp_path / name) for name in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_continues_identically(tiny_base, toy_data, tmp_path):
    # dropout on, so resuming must also restore the random state of every step
    base = make_checkpoint(tmp_path / "drop", hidden_dropout_prob=0.1)
    train(config(base, toy_data, tmp_path / "whole"))
    train(config(base, toy_data, tmp_path / "parts", stop_at=3))
    interrupted = weights(tmp_path / "parts" / "checkpoint")
    train(config(base, toy_data, tmp_path / "parts", resume=True))
    whole, parts = weights(tmp_path / "whole"), weights(tmp_path / "parts")
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    assert not all(torch.equal(whole[k], interrupted[k]) for k in whole)


def test_cli_trains_with_a_holdout_dev_split_and_saves_a_loadable_folder(
    tiny_base, toy_data, tmp_path
):
    out = tmp_path / "cli"
    cli_main(
        ["train", "--base", str(tiny_base), "--data", f"{toy_data}:train@1", "--out", str(out),
         "--holdout", f"{toy_data.name}=0.25", "--steps", "4", "--eval-every", "2",
         "--groups-per-step", "2", "--list-size", "3", "--max-length", "32",
         "--query-max-length", "8", "--save-dtype", "float16", "--threads", "1"]
    )  # fmt: skip
    log = [json.loads(line) for line in (out / "training_log.jsonl").open()]
    assert [r["step"] for r in log if "dev" in r] == [2, 4]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert all(t.dtype == torch.float16 for t in weights(out).values())

    from transformers import AutoModelForSequenceClassification

    ours = Reranker.from_pretrained(out)
    theirs = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    features = ours.encoder.encode("what about apple", ["an apple a day", "a river runs"])
    inputs = collate(features, pad_id=0, device=torch.device("cpu"))  # padded: masks matter too
    with torch.no_grad():
        expected = theirs(**inputs).logits[:, 0]
        got = load_model(out)(**inputs)[:, 0]
    assert torch.allclose(got, expected, atol=1e-4)
    raw = ours.score("what about apple", ["an apple a day", "a river runs"], raw=True)
    assert torch.allclose(torch.tensor(raw, dtype=torch.float32), expected, atol=1e-4)


# ---------------------------------------------------------------- weight averaging


def test_soup_is_the_mean_of_its_ingredients_and_is_scored_on_dev(toy_data, tmp_path):
    a = make_checkpoint(tmp_path / "a", seed=0)
    b = make_checkpoint(tmp_path / "b", seed=1)
    soup_main([str(a), str(b), "--out", str(tmp_path / "soup"), "--dev", f"{toy_data}:train"])
    mean, wa, wb = weights(tmp_path / "soup"), weights(a), weights(b)
    assert mean.keys() == wa.keys()
    for key in wa:
        torch.testing.assert_close(mean[key], (wa[key] + wb[key]) / 2)
    report = json.loads((tmp_path / "soup" / "soup.json").read_text())
    assert list(report) == [str(a), str(b), str(tmp_path / "soup")]
    assert all(0 <= r["mean_ndcg@10"] <= 1 for r in report.values())
    Reranker(tmp_path / "soup").rerank("what about apple", ["apple pie", "a river"])


def test_soup_refuses_checkpoints_of_different_shapes(tmp_path):
    a = make_checkpoint(tmp_path / "a")
    b = make_checkpoint(tmp_path / "b", intermediate_size=48)
    with pytest.raises(ValueError, match="does not have the weights"):
        average_checkpoints([a, b], tmp_path / "soup")


# ---------------------------------------------------------------- the shipped model


def test_default_model_ranks_a_relevant_passage_first():
    reranker = Reranker()
    query = "how do vaccines train the immune system?"
    documents = [
        "The 2014 World Cup final was played in Rio de Janeiro's Maracana stadium.",
        "Vaccines expose the immune system to a harmless piece or weakened form of a pathogen, "
        "so that it learns to produce antibodies and memory cells against it.",
        "Sourdough bread is leavened with a culture of wild yeast and lactic acid bacteria.",
    ]
    results = reranker.rerank(query, documents)
    assert results[0].index == 1
    # calibrated scores (Platt, see the model card; the model is under-confident, a clear
    # answer scores about 0.1): the answer stands clear of the off-topic passages, which
    # are near certain to be irrelevant
    assert results[0].relevance_score > 3 * results[1].relevance_score
    assert all(r.relevance_score < 0.05 for r in results[1:])
