"""Fine-tune a cross-encoder: ``crossrank train --base PATH --data DIR[,DIR...] --out DIR``.

Each optimiser step draws ``groups_per_step`` query groups (a positive and ``list_size - 1``
candidates of the same query) and combines, per group, whichever signals it has:

- listwise softmax cross-entropy when the positive is judged (graded labels: negatives are
  candidates judged lower, or unjudged hard candidates from the BM25 list);
- KL distillation towards the teacher's distribution when every candidate has a teacher
  score (``--teacher-runs``), which is how unlabelled queries (TREC DL22) teach;
- a small pointwise BCE on judged entries, which anchors sigmoid(logit) as a relevance score
  (``--loss bce`` makes it the main loss).

The batch of step ``s`` depends only on ``(seed, s)``, and dropout is reseeded every step, so
a run is reproducible and ``--resume`` continues exactly where a checkpoint left off.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from crossrank.engine.batching import collate
from crossrank.engine.tokenization import PairEncoder, load_tokenizer
from crossrank.models import (
    FAMILIES,
    Bert,
    CheckpointError,
    family_of,
    normalise_keys,
    read_config,
    read_state_dict,
    save_model,
)
from crossrank.training.calibrate import CALIBRATION_KEY, HEAD_KEYS, unfold_head
from crossrank.training.data import (
    BeirSet,
    Group,
    load_beir,
    make_groups,
    parse_depth_spec,
    read_run_scores,
    sample_list,
    split_spec,
    teacher_run,
)
from crossrank.training.losses import distillation_kl, listwise_softmax_ce, pointwise_bce

log = logging.getLogger(__name__)
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]


@dataclass
class TrainConfig:
    base: str  # BERT-family checkpoint: a bare encoder or a cross-encoder
    data: list[str]  # DIR[:split][@weight]; weight = share of groups drawn from it
    out: str
    teacher_runs: str | None = None  # folder of <set>.<split>.trec[.gz] teacher-score runs
    dev: list[str] = field(default_factory=list)  # DIR[:split] validation sets
    holdout: list[str] = field(default_factory=list)  # SET=FRACTION: queries moved to dev
    holdout_seed: int = 0  # fixed apart from --seed, so a continued run keeps the same dev
    loss: str = "listwise"  # listwise | bce
    distill_weight: float = 1.0
    bce_weight: float = 0.1
    temperature: float = 1.0
    list_size: int = 8
    groups_per_step: int = 8
    micro_groups: int = 2  # groups per forward pass; the rest is gradient accumulation
    steps: int = 500
    lr: float = 5e-5
    warmup: float = 0.1  # fraction of --steps; --warmup-steps gives steps instead
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    max_length: int = 128
    query_max_length: int = 32
    # a document longer than the input: its first window ("truncate"), or the window that
    # select mode would read first at inference, the BM25-best for the query ("select")
    long_documents: str = "truncate"
    dev_max_length: int = 256
    depth: int = 100  # candidates per query (run or BM25)
    seed: int = 0
    eval_every: int = 100
    save_every: int = 50
    max_minutes: float | None = None  # stop cleanly (and save) after this long
    stop_at: int | None = None  # stop (and save) at this step, to be continued with resume
    bf16: bool = False  # bfloat16 autocast: faster on CPUs with AVX512-BF16/AMX
    save_dtype: str = "float32"  # float16 halves the shipped file
    threads: int | None = None
    device: str = "cpu"  # "cuda" trains on a GPU (bf16 autocast there with --bf16)
    stall_steps: int = 200
    resume: bool = False
    eval_at_start: bool = False  # score the starting weights first; save only what beats them

    def __post_init__(self) -> None:
        if not 0 <= self.warmup < 1:
            raise ValueError(
                f"--warmup {self.warmup:g} is a fraction of the {self.steps} steps and must be "
                f"in [0, 1); for a warm-up counted in steps pass --warmup-steps {self.warmup:g}"
            )
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"--warmup-steps must be in [0, --steps={self.steps}]")
        if self.long_documents not in ("truncate", "select"):
            raise ValueError(
                f"--long-documents must be truncate or select, not {self.long_documents!r}"
            )


# ---------------------------------------------------------------- model


def init_model(base: str | Path) -> Bert:
    """The base checkpoint with a one-logit classification head (fresh if it has none)."""
    base = Path(base)
    raw = read_config(base)
    name = family_of(raw)
    family = FAMILIES[name]
    if not family.trainable:
        trainable = ", ".join(n for n, f in FAMILIES.items() if f.trainable)
        raise CheckpointError(f"crossrank train fine-tunes {trainable} checkpoints, not {name}")
    config = family.config.from_dict({**raw, "num_labels": 1})
    model = family.model(config, head=True)
    for name, module in model.named_modules():  # a new head gets BERT's own initialisation
        if f"{name}.".startswith(family.head_keys) and isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:  # ModernBERT's head has none
                torch.nn.init.zeros_(module.bias)
    state = normalise_keys(read_state_dict(base), family.prefix)
    if CALIBRATION_KEY in raw and all(k in state for k in HEAD_KEYS):
        # ranking losses read score differences: a Platt scale of 0.36 would flatten every
        # list and spend the first steps relearning the scale, so continue from raw logits
        unfold_head(state, raw[CALIBRATION_KEY])
        log.info("unfolded the calibration of %s: %s", base, raw[CALIBRATION_KEY])
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    missing = [k for k in own if k not in usable]
    if any(not k.startswith(family.head_keys) for k in missing):
        raise CheckpointError(f"{base} is missing encoder weights: {', '.join(missing[:5])}")
    model.load_state_dict(usable, strict=False)
    if missing:
        log.info("new head weights: %s", ", ".join(missing))
    return model


def training_encoder(cfg: TrainConfig, tokenizer) -> PairEncoder:
    """One input per candidate: the start of a long document, or its BM25-best window."""
    keep = 1 if cfg.long_documents == "select" else None
    return PairEncoder(
        tokenizer, cfg.max_length, cfg.query_max_length, cfg.long_documents, max_windows=keep
    )


def save_checkpoint_folder(model: Bert, base: Path, path: Path, dtype: str = "float32") -> None:
    """A Hugging Face folder: config.json, model.safetensors and the base's tokenizer files."""
    save_model(to_dtype(model, dtype), path)
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, path / name)


def to_dtype(model: Bert, dtype: str) -> Bert:
    if dtype == "float32":
        return model
    import copy

    return copy.deepcopy(model).to({"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype])


# ---------------------------------------------------------------- data


def holdout_split(data: BeirSet, fraction: float, seed: int) -> tuple[BeirSet, BeirSet]:
    """Move a seeded ``fraction`` of the judged queries out of ``data`` into a dev set."""
    judged = sorted(data.qrels)
    random.Random(seed).shuffle(judged)
    dev_ids = set(judged[: round(fraction * len(judged))])

    def subset(keep) -> BeirSet:
        return BeirSet(
            data.name,
            data.corpus,
            {q: t for q, t in data.queries.items() if keep(q)},
            {q: r for q, r in data.qrels.items() if keep(q)},
            {q: r for q, r in data.run.items() if keep(q)},
        )

    return subset(lambda q: q not in dev_ids), subset(lambda q: q in dev_ids)


@dataclass
class Source:
    name: str
    groups: list[Group]
    weight: float
    max_grade: int
    corpus: dict[str, str]


def load_sources(cfg: TrainConfig) -> tuple[list[Source], list[BeirSet]]:
    holdout = {name: float(f) for name, f in (h.split("=") for h in cfg.holdout)}
    sources, dev_sets = [], []
    for spec in cfg.data:
        folder, split, weight = split_spec(spec, "train")
        weight = float(weight or 1.0)
        data = load_beir(folder, split, depth=cfg.depth)
        if data.name in holdout:
            data, dev = holdout_split(data, holdout[data.name], cfg.holdout_seed)
            dev_sets.append(dev)
        teacher = None
        if cfg.teacher_runs and (path := teacher_run(cfg.teacher_runs, data.name, split)):
            teacher = read_run_scores(path)
        groups = make_groups(data, teacher)
        max_grade = max((g for r in data.qrels.values() for g in r.values()), default=1)
        sources.append(Source(data.name, groups, weight, max(max_grade, 1), data.corpus))
        log.info("%s:%s  %d groups, teacher=%s", data.name, split, len(groups), teacher is not None)
    for spec in cfg.dev:
        folder, split, depth = parse_depth_spec(spec, "dev", cfg.depth)
        dev_sets.append(load_beir(folder, split, depth=depth))
    return sources, dev_sets


def draw_step(cfg: TrainConfig, sources: list[Source], step: int):
    """The groups of one optimiser step: a function of (seed, step) only."""
    rng = random.Random(f"{cfg.seed}-{step}")
    lists = []
    while len(lists) < cfg.groups_per_step:
        source = rng.choices(sources, weights=[s.weight for s in sources])[0]
        group = rng.choice(source.groups)
        chosen = sample_list(group, cfg.list_size, rng)
        if chosen is not None:
            lists.append((source, group, chosen))
    return lists


# ---------------------------------------------------------------- training


def batch_loss(
    cfg: TrainConfig, model: Bert, encoder: PairEncoder, corpus_of, lists
) -> torch.Tensor:
    """The combined loss of a few lists, scored in one forward pass."""
    features, rows = [], []
    for row, (source, group, chosen) in enumerate(lists):
        docs = [corpus_of[source.name][c.doc_id] for c in chosen]
        for col, f in enumerate(encoder.encode(group.query, docs)):
            features.append(f)
            rows.append((row, col))
    device = next(model.parameters()).device
    inputs = collate(features, model.config.pad_token_id, device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        flat = model(**inputs)[:, 0].float()
    width = max(len(chosen) for *_, chosen in lists)
    logits = flat.new_zeros(len(lists), width)
    mask = torch.zeros(len(lists), width, dtype=torch.bool, device=device)
    index = torch.tensor(rows, device=device)
    logits = logits.index_put((index[:, 0], index[:, 1]), flat)
    mask[index[:, 0], index[:, 1]] = True

    labelled = torch.tensor([c[0].label is not None for *_, c in lists], device=device)
    taught = torch.tensor([all(x.teacher is not None for x in c) for *_, c in lists], device=device)

    def table(value) -> torch.Tensor:
        """One row per list of ``value(source, candidate)``, zero-padded to ``width``."""
        rows = [[value(src, c) for c in chosen] for src, _, chosen in lists]
        return torch.tensor([r + [0.0] * (width - len(r)) for r in rows], device=device)

    loss = logits.new_zeros(())
    if cfg.loss == "listwise" and labelled.any():
        loss = loss + listwise_softmax_ce(logits[labelled], mask[labelled])
    if cfg.distill_weight and taught.any():
        teacher = table(lambda _, c: c.teacher or 0.0)
        loss = loss + cfg.distill_weight * distillation_kl(
            logits[taught], teacher[taught], mask[taught], cfg.temperature
        )
    bce_weight = 1.0 if cfg.loss == "bce" else cfg.bce_weight
    if bce_weight and labelled.any():
        # judged entries by grade; unjudged candidates of a judged list count as negatives
        targets = table(lambda src, c: min((c.label or 0) / src.max_grade, 1.0))
        keep = mask & labelled[:, None]
        loss = loss + bce_weight * pointwise_bce(logits[keep], targets[keep])
    return loss


def warmup_steps(cfg: TrainConfig) -> int:
    """Linear warm-up length in steps: ``--warmup-steps``, else ``--warmup`` x ``--steps``."""
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    return round(cfg.warmup * cfg.steps)


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up to the peak learning rate, then linear decay to zero at ``--steps``."""
    warmup = max(1, warmup_steps(cfg))
    decay = max(1, cfg.steps - warmup)
    return lambda step: min((step + 1) / warmup, max(0.0, (cfg.steps - step) / decay))


def dev_queries(data: BeirSet) -> list[tuple[str, list[str]]]:
    """The dev queries that can rank: a judged positive and a negative among the candidates."""
    usable = []
    for query_id, judged in data.qrels.items():
        docs = [d for d in data.run.get(query_id, []) if d in data.corpus]
        if {judged.get(d, 0) > 0 for d in docs} == {True, False} and query_id in data.queries:
            usable.append((query_id, docs))
    return usable


def dev_metrics(run: dict[str, dict[str, float]], data: BeirSet) -> dict[str, float]:
    """nDCG@10 and MRR@10 of a run over ``data``'s judgements (the queries in the run)."""
    import ir_measures
    from ir_measures import RR, nDCG

    qrels = [
        ir_measures.Qrel(query_id, doc_id, grade)
        for query_id in run
        for doc_id, grade in data.qrels[query_id].items()
    ]
    # graded sets (TREC DL) count grade >= 2 as relevant for MRR, as TREC DL does
    rr = RR(rel=2) @ 10 if max(q.relevance for q in qrels) >= 2 else RR @ 10
    scores = ir_measures.calc_aggregate([nDCG @ 10, rr], qrels, run)
    return {"ndcg@10": scores[nDCG @ 10], "mrr@10": scores[rr]}


@torch.no_grad()
def evaluate(
    model: Bert, tokenizer, dev_sets: list[BeirSet], max_length: int
) -> dict[str, dict[str, float]]:
    """nDCG@10 and MRR@10 reranking each dev set's candidates; nDCG@10 selects checkpoints."""
    from crossrank.reranker import Reranker

    was_training = model.training
    model.eval()
    encoder = PairEncoder(tokenizer, max_length, long_documents="truncate")
    reranker = Reranker.from_model(model, encoder)  # on the model's own device
    results = {}
    for data in dev_sets:
        run = {}
        for query_id, docs in dev_queries(data):
            scores = reranker.score(
                data.queries[query_id], [data.corpus[d] for d in docs], raw=True
            )
            run[query_id] = dict(zip(docs, scores, strict=True))
        results[data.name] = dev_metrics(run, data)
    model.train(was_training)
    return results


def train(cfg: TrainConfig) -> Path:
    """Run training; returns the output folder (the best dev checkpoint, else the last)."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig) -> Path:
    out, base = Path(cfg.out), Path(cfg.base)
    ckpt = out / "checkpoint"
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    sources, dev_sets = load_sources(cfg)
    tokenizer = load_tokenizer(base)
    encoder = training_encoder(cfg, tokenizer)

    torch.manual_seed(cfg.seed)
    model = init_model(ckpt if cfg.resume and ckpt.exists() else base).to(cfg.device)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    state = {"step": 0, "best": -math.inf, "best_step": None, "history": []}
    if cfg.resume and ckpt.exists():
        saved = torch.load(ckpt / "trainer.pt", weights_only=False, map_location=cfg.device)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        log.info("resumed at step %d", state["step"])
    return run_loop(cfg, model, optimizer, scheduler, state, sources, dev_sets, encoder, tokenizer)


class StallWatch:
    """Says when the smoothed loss has not moved by 1% over ``window`` steps.

    A run whose loss is flat is usually misconfigured (a learning rate too small, a
    warm-up far longer than meant); saying so early saves a session of compute.
    """

    def __init__(self, window: int, tolerance: float = 0.01) -> None:
        self.window, self.tolerance = window, tolerance
        self.mark: tuple[int, float] | None = None

    def update(self, step: int, loss: float) -> str | None:
        if self.window <= 0:
            return None
        if self.mark is None:
            self.mark = (step, loss)
            return None
        mark_step, mark_loss = self.mark
        if step - mark_step < self.window:
            return None
        self.mark = (step, loss)
        if abs(loss - mark_loss) <= self.tolerance * max(abs(mark_loss), 1e-8):
            return (
                f"warning: the smoothed loss has not moved in {step - mark_step} steps "
                f"({mark_loss:.4f} -> {loss:.4f}); check --lr and --warmup/--warmup-steps"
            )
        return None


def run_loop(
    cfg, model, optimizer, scheduler, state, sources, dev_sets, encoder, tokenizer
) -> Path:
    out, base, ckpt = Path(cfg.out), Path(cfg.base), Path(cfg.out) / "checkpoint"
    corpus_of = {s.name: s.corpus for s in sources}
    start_time, pairs_seen, smooth = time.time(), 0, None
    stall = StallWatch(cfg.stall_steps)
    progress = tqdm(total=cfg.steps, initial=state["step"], desc="train", unit="step")
    if cfg.eval_at_start and dev_sets and state["step"] == 0:
        # the starting weights set the bar: OUT gets weights only if training beats them
        dev = dev_checkpoint(cfg, model, tokenizer, dev_sets, state, progress, save=False)
        log_record(out, state, {"step": 0, "dev": dev})
    while state["step"] < cfg.steps:
        step = state["step"]
        torch.manual_seed(hash((cfg.seed, step)) % 2**31)  # dropout: a function of the step too
        lists = draw_step(cfg, sources, step)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for i in range(0, len(lists), cfg.micro_groups):
            part = lists[i : i + cfg.micro_groups]
            loss = batch_loss(cfg, model, encoder, corpus_of, part) * len(part) / len(lists)
            loss.backward()
            total += loss.item()
            pairs_seen += sum(len(c) for *_, c in part)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        state["step"] = step = step + 1
        smooth = total if smooth is None else 0.95 * smooth + 0.05 * total
        if stalled := stall.update(step, smooth):
            progress.write(stalled + f" (lr now {scheduler.get_last_lr()[0]:.2e})")
        elapsed = time.time() - start_time
        progress.update(1)
        progress.set_postfix(loss=f"{smooth:.4f}", pairs_s=f"{pairs_seen / elapsed:.1f}")
        record = {
            "step": step,
            "loss": total,
            "lr": scheduler.get_last_lr()[0],
            "elapsed_s": elapsed,
        }
        out_of_time = (cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60) or (
            cfg.stop_at is not None and step >= cfg.stop_at
        )
        last = step == cfg.steps or out_of_time
        if dev_sets and (step % cfg.eval_every == 0 or last):
            record["dev"] = dev_checkpoint(cfg, model, tokenizer, dev_sets, state, progress)
        log_record(out, state, record)
        if step % cfg.save_every == 0 or last:
            save_checkpoint_folder(model, base, ckpt)
            trainer = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
            }
            torch.save(trainer, ckpt / "trainer.pt")
        if out_of_time:
            progress.write(f"stopping at step {step} (--max-minutes/--stop-at); --resume continues")
            break
    progress.close()
    if not dev_sets:
        save_checkpoint_folder(model, base, out, cfg.save_dtype)
    elif state["best_step"] == 0:
        log.warning("no checkpoint beat the starting weights on dev: nothing saved to %s", out)
    return out


def dev_checkpoint(cfg, model, tokenizer, dev_sets, state, progress, save: bool = True) -> dict:
    """Score the dev sets; keep the weights in OUT when their mean nDCG@10 is the best yet."""
    scores = evaluate(model, tokenizer, dev_sets, cfg.dev_max_length)
    mean = sum(s["ndcg@10"] for s in scores.values()) / len(scores)
    shown = ", ".join(
        f"{name} nDCG@10 {s['ndcg@10']:.4f} MRR@10 {s['mrr@10']:.4f}" for name, s in scores.items()
    )
    progress.write(f"step {state['step']}: dev {shown}; mean nDCG@10 {mean:.4f}")
    if mean > state["best"]:
        state["best"], state["best_step"] = mean, state["step"]
        if save:
            save_checkpoint_folder(model, Path(cfg.base), Path(cfg.out), cfg.save_dtype)
    return scores


def log_record(out: Path, state: dict, record: dict) -> None:
    state["history"].append(record)
    with open(out / "training_log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- command line


# Every numeric option with its unit: (name, type, help). The defaults come from TrainConfig.
NUMERIC_OPTIONS = [
    ("steps", int, "optimiser steps in the whole schedule"),
    ("lr", float, "peak learning rate (AdamW), reached after the warm-up"),
    ("warmup", float, "linear warm-up as a FRACTION of --steps, in [0, 1)"),
    ("warmup_steps", int, "linear warm-up in optimiser steps (overrides --warmup)"),
    ("weight_decay", float, "AdamW weight decay of the matrices (biases and norms get none)"),
    ("list_size", int, "passages per training list: one positive and list-size - 1 others"),
    ("groups_per_step", int, "query lists per optimiser step"),
    ("micro_groups", int, "query lists per forward pass (the rest is gradient accumulation)"),
    ("max_length", int, "training input length in tokens (query + passage + specials)"),
    ("query_max_length", int, "query length cap in tokens"),
    ("dev_max_length", int, "input length in tokens when scoring the dev sets"),
    ("depth", int, "candidates per training query, from its run file or BM25 (documents)"),
    ("distill_weight", float, "weight of the KL distillation loss (lists with teacher scores)"),
    ("bce_weight", float, "weight of the pointwise BCE loss on judged entries"),
    ("temperature", float, "softmax temperature of the distillation targets"),
    ("seed", int, "seed of the batches and dropout (a run is a function of it)"),
    ("holdout_seed", int, "seed of the --holdout split (kept apart from --seed)"),
    ("eval_every", int, "score the dev sets every this many steps"),
    ("save_every", int, "write a resumable checkpoint every this many steps"),
    ("max_minutes", float, "stop cleanly (and save) after this many minutes of wall time"),
    ("stop_at", int, "stop (and save) at this step, to continue later with --resume"),
    ("threads", int, "torch CPU threads (default: torch's choice)"),
    ("stall_steps", int, "warn when the smoothed loss has not moved for this many steps"),
]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a cross-encoder on BEIR-format training splits",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = TrainConfig(base="", data=[], out="")
    parser.add_argument(
        "--base",
        "--init",
        required=True,
        help="checkpoint to start from: a bare BERT-family encoder or a cross-encoder "
        "(e.g. src/crossrank/default_model to continue the shipped model)",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="comma-separated DIR[:split][@weight] (split: train; weight: share of lists)",
    )
    parser.add_argument("--out", required=True, help="output folder (Hugging Face layout)")
    parser.add_argument(
        "--teacher-runs", help="folder of <set>.<split>.trec (or .trec.gz) teacher scores"
    )
    parser.add_argument(
        "--dev",
        default="",
        help="comma-separated DIR[:split][@depth] dev sets (split: dev; depth: candidates "
        "reranked, default --depth); the mean nDCG@10 selects the saved checkpoint",
    )
    parser.add_argument(
        "--holdout", default="", help="comma-separated SET=FRACTION of training queries for dev"
    )
    parser.add_argument(
        "--loss",
        choices=["listwise", "bce"],
        default=defaults.loss,
        help="main label loss: listwise softmax CE of the positive, or pointwise BCE",
    )
    for name, kind, text in NUMERIC_OPTIONS:
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=getattr(defaults, name), help=text
        )
    parser.add_argument(
        "--long-documents",
        choices=["truncate", "select"],
        default=defaults.long_documents,
        help="a document longer than --max-length trains on its first window (truncate) or "
        "on its BM25-best window for the query, the one select mode reads first (select)",
    )
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--device", default=defaults.device, help="cpu, or cuda to train on a GPU")
    parser.add_argument(
        "--save-dtype",
        choices=["float32", "float16"],
        default=defaults.save_dtype,
        help="dtype of the saved weights",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument(
        "--eval-at-start",
        action="store_true",
        help="score the starting weights on dev first: OUT then gets weights only if a "
        "checkpoint beats them (continuing a model across sessions)",
    )
    parser.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> None:
    def split(text: str) -> list[str]:
        return [part for part in text.split(",") if part]

    options = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    options.update(data=split(args.data), dev=split(args.dev), holdout=split(args.holdout))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # training caps queries at --query-max-length by design; one warning per batch is noise
    logging.getLogger("crossrank.engine.tokenization").setLevel(logging.ERROR)
    try:
        cfg = TrainConfig(**options)
    except ValueError as error:
        raise SystemExit(f"crossrank train: error: {error}") from None
    out = train(cfg)
    print(f"saved {out}")
