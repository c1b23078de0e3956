"""Calibrated scores: Platt scaling folded into the classifier. ``crossrank calibrate``.

Users threshold ``relevance_score = sigmoid(logit)`` ("keep what is above 0.5"), but ranking
losses fix only score differences, not where the scores sit. One scale ``a`` and bias ``b``
fitted by logistic regression on judged pairs of held-out data make
``sigmoid(a * logit + b)`` estimate the probability of relevance (Platt, 1999). Folding them
into the last linear layer (``W' = a W``, ``b' = a b0 + b``) changes no ranking and keeps the
checkpoint a standard ``BertForSequenceClassification`` that any loader reads. The folded
pair is recorded in ``config.json`` (``crossrank_calibration``, a key loaders ignore) so that
``crossrank train --init`` can unfold it and continue from the raw, unscaled logits.

Fit and report sets are ``DIR[:split][@grade]``: every judged (query, document) pair with
text; a pair is relevant when its grade is at least ``grade`` (default 1; 2 for TREC DL,
whose grade 1 means "related"). Unjudged candidates are never read as negatives.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from crossrank.training.data import load_beir, split_spec

log = logging.getLogger(__name__)
HEAD_KEYS = ("classifier.weight", "classifier.bias")
CALIBRATION_KEY = "crossrank_calibration"


@dataclass
class JudgedPairs:
    name: str  # "set:split"
    pairs: list[tuple[str, str]]
    labels: np.ndarray  # 1.0 relevant, 0.0 not


def judged_pairs(spec: str) -> JudgedPairs:
    """Every judged pair of one split whose document has text."""
    folder, split, min_grade = split_spec(spec, "dev")  # DIR[:split][@grade]
    min_grade = int(min_grade or 1)
    data = load_beir(folder, split, depth=1, allow_test=True)
    pairs, labels = [], []
    for query_id, judged in sorted(data.qrels.items()):
        if query_id not in data.queries:
            continue
        for doc_id, grade in sorted(judged.items()):
            if doc_id in data.corpus:
                pairs.append((data.queries[query_id], data.corpus[doc_id]))
                labels.append(float(grade >= min_grade))
    if not pairs or len(set(labels)) < 2:
        raise ValueError(f"{spec}: needs judged pairs of both kinds, found {len(pairs)}")
    return JudgedPairs(f"{data.name}:{split}", pairs, np.array(labels))


def fit_platt(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """The (scale, bias) minimising the (weighted) log loss of sigmoid(scale * logit + bias)."""
    x = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            params[0] * x + params[1], y, weight=w
        )
        loss.backward()
        return loss

    optimizer.step(closure)
    scale, bias = params.detach().tolist()
    return scale, bias


WEIGHTINGS = ("pooled", "balanced")  # every pair counts once / every fit set counts once


def fit_sets(sets: list[tuple[np.ndarray, np.ndarray]], weighting: str) -> tuple[float, float]:
    """Platt fit on several (logits, labels) sets, pooled or with equal weight per set."""
    logits = np.concatenate([x for x, _ in sets])
    labels = np.concatenate([y for _, y in sets])
    weights = None
    if weighting == "balanced":
        weights = np.concatenate([np.full(len(y), len(labels) / len(y)) for _, y in sets])
    return fit_platt(logits, labels, weights)


def leave_one_set_out(sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    """Per weighting: the ECE on each fit set of a fit on the OTHER sets, and their mean.

    Users' data are none of the fit sets, so the weighting that transfers best to an unseen
    set is the one to use; the final fit then uses every set.
    """
    result = {}
    for weighting in WEIGHTINGS:
        eces = {}
        for held_out, (logits, labels) in sets.items():
            others = [pair for name, pair in sets.items() if name != held_out]
            scale, bias = fit_sets(others, weighting)
            eces[held_out] = expected_calibration_error(probabilities(logits, scale, bias), labels)
        result[weighting] = {**eces, "mean": float(np.mean(list(eces.values())))}
    return result


def bin_of(probs: np.ndarray, bins: int) -> np.ndarray:
    """The equal-width probability bin of each value (1.0 falls in the last one)."""
    return np.minimum((probs * bins).astype(int), bins - 1)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean predicted probability| over equal-width bins, by count."""
    edges = bin_of(probs, bins)
    error = 0.0
    for b in range(bins):
        inside = edges == b
        if inside.any():
            error += inside.sum() * abs(labels[inside].mean() - probs[inside].mean())
    return float(error / len(probs))


def probabilities(logits: np.ndarray, scale: float = 1.0, bias: float = 0.0) -> np.ndarray:
    return 1 / (1 + np.exp(-(scale * logits + bias)))


def calibration_report(logits: np.ndarray, labels: np.ndarray, scale: float, bias: float) -> dict:
    before, after = probabilities(logits), probabilities(logits, scale, bias)
    positives = labels == 1

    def summary(probs: np.ndarray) -> dict:
        return {
            "ece": expected_calibration_error(probs, labels),
            "brier": float(np.mean((probs - labels) ** 2)),
            "relevant_above_0.5": float((probs[positives] > 0.5).mean()),
            "not_relevant_above_0.5": float((probs[~positives] > 0.5).mean()),
        }

    return {
        "pairs": len(labels),
        "relevant": int(positives.sum()),
        "before": summary(before),
        "after": summary(after),
    }


def fold_into_head(model: Path, out: Path, scale: float, bias: float) -> None:
    """Copy the checkpoint folder with ``scale``/``bias`` folded into its classifier."""
    if out.resolve() != model.resolve():
        shutil.copytree(model, out, dirs_exist_ok=True)
    path = out / "model.safetensors"
    state = load_file(path)
    if any(k not in state for k in HEAD_KEYS) or state["classifier.weight"].shape[0] != 1:
        raise ValueError(f"{model}: expected a one-logit classifier ({', '.join(HEAD_KEYS)})")
    weight, head_bias = (state[k] for k in HEAD_KEYS)
    state["classifier.weight"] = (weight.double() * scale).to(weight.dtype)
    state["classifier.bias"] = (head_bias.double() * scale + bias).to(head_bias.dtype)
    save_file(state, path, metadata={"format": "pt"})
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    earlier = config.get(CALIBRATION_KEY, {"scale": 1.0, "bias": 0.0})
    # a second fold composes: scale2 * (scale1 * logit + bias1) + bias2
    config[CALIBRATION_KEY] = {
        "scale": earlier["scale"] * scale,
        "bias": earlier["bias"] * scale + bias,
    }
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def unfold_head(state: dict[str, torch.Tensor], calibration: dict[str, float]) -> None:
    """Undo a folded calibration in place: the classifier gives the raw logit again."""
    scale, bias = calibration["scale"], calibration["bias"]
    weight, head_bias = (state[k] for k in HEAD_KEYS)
    state["classifier.weight"] = (weight.double() / scale).to(weight.dtype)
    state["classifier.bias"] = ((head_bias.double() - bias) / scale).to(head_bias.dtype)


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Observed relevance rate against predicted probability, one line per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, (probs, labels) in curves.items():
        edges = bin_of(probs, 10)
        kept = [b for b in range(10) if (edges == b).sum() >= 5]
        ax.plot(
            [probs[edges == b].mean() for b in kept],
            [labels[edges == b].mean() for b in kept],
            marker="o",
            label=f"{name} (ECE {expected_calibration_error(probs, labels):.3f})",
        )
    ax.set_xlabel("predicted probability of relevance")
    ax.set_ylabel("observed fraction relevant")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def calibrate(
    model: Path,
    fit: list[str],
    report: list[str],
    out: Path | None,
    plot: Path | None = None,
    weighting: str = "pooled",
) -> dict:
    """Fit on ``fit``, report on ``report`` (never used for the fit), optionally fold.

    ``weighting`` is ``pooled``, ``balanced`` or ``choose`` (the one whose leave-one-set-out
    ECE over the fit sets is lower; needs two fit sets or more).
    """
    from crossrank.reranker import Reranker

    reranker = Reranker(model, dtype="float32")

    def logits_of(data: JudgedPairs) -> np.ndarray:
        log.info("scoring %s: %d judged pairs", data.name, len(data.pairs))
        return np.array(reranker.score_pairs(data.pairs, raw=True))

    sets = {d.name: (logits_of(d), d.labels) for d in map(judged_pairs, fit)}
    result: dict = {}
    if weighting == "choose":
        if len(sets) < 2:
            raise ValueError("--weighting choose needs two fit sets or more")
        result["leave_one_set_out_ece"] = leave_one_set_out(sets)
        weighting = min(WEIGHTINGS, key=lambda w: result["leave_one_set_out_ece"][w]["mean"])
    scale, bias = fit_sets(list(sets.values()), weighting)
    fit_logits = np.concatenate([x for x, _ in sets.values()])
    fit_labels = np.concatenate([y for _, y in sets.values()])
    result |= {
        "weighting": weighting,
        "scale": scale,
        "bias": bias,
        "fit": calibration_report(fit_logits, fit_labels, scale, bias),
        "report": {},
    }
    curves = {}
    for data in map(judged_pairs, report):
        logits = logits_of(data)
        result["report"][data.name] = calibration_report(logits, data.labels, scale, bias)
        curves[f"{data.name} before"] = (probabilities(logits), data.labels)
        curves[f"{data.name} after"] = (probabilities(logits, scale, bias), data.labels)
    if plot and curves:
        plot_reliability(curves, plot)
    if out is not None:
        fold_into_head(model, out, scale, bias)
    return result


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit Platt scaling on judged held-out pairs and fold it into the classifier",
    )
    parser.add_argument("--model", required=True, help="cross-encoder checkpoint folder")
    parser.add_argument(
        "--fit",
        required=True,
        help="comma-separated DIR[:split][@grade] to fit on (split: dev; grade: the lowest "
        "relevant grade, default 1)",
    )
    parser.add_argument(
        "--report", default="", help="comma-separated DIR[:split][@grade] to report ECE on"
    )
    parser.add_argument(
        "--weighting",
        choices=[*WEIGHTINGS, "choose"],
        default="pooled",
        help="pooled: every judged pair counts once; balanced: every fit set counts once; "
        "choose: the one with the lower leave-one-set-out ECE over the fit sets",
    )
    parser.add_argument("--out", help="write the calibrated checkpoint here (may equal --model)")
    parser.add_argument("--plot", help="reliability diagram of the report sets (PNG)")
    parser.add_argument("--json", help="write the measurements here")
    parser.set_defaults(func=calibrate_command)


def calibrate_command(args: argparse.Namespace) -> None:
    def split(text: str) -> list[str]:
        return [part for part in text.split(",") if part]

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = calibrate(
        Path(args.model),
        split(args.fit),
        split(args.report),
        Path(args.out) if args.out else None,
        Path(args.plot) if args.plot else None,
        args.weighting,
    )
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
