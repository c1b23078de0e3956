"""Each encoder family's fp32 path against sentence-transformers' CrossEncoder.

For every family, a random-weight checkpoint of its real base shape is written by
``transformers`` itself (with the all-MiniLM-L6-v2 WordPiece tokenizer, so all families
read the same tokens), and both systems score it on workload A of ``rerank_speed.py``
(TREC DL19 queries x their 100 BM25 candidates), interleaved query by query, same
threads, same process. Prints pairs/s, the ratio to sentence-transformers and the max
|logit difference|; exits 1 when a ratio is under MIN_RATIO or the logits disagree.

    python benchmarks/family_speed.py [--families bert modernbert] [--queries 5] [--json OUT]

Needs ``crossrank[bench]`` (sentence-transformers) beside crossrank.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import dl19
from crossrank.engine.hub import all_minilm_l6_v2_path
from rerank_speed import crossrank_scorer, sentence_transformers_scorer, time_systems

MIN_RATIO = 1.3  # crossrank fp32 pairs/s over sentence-transformers', per family
MAX_LOGIT_DIFF = 1e-4
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_labels=1)
# family -> (transformers config class, model class, its base-shape settings): the shapes
# of ms-marco-MiniLM's larger kin, bge-reranker-base, mxbai-rerank-base-v1,
# ms-marco-electra-base and gte-reranker-modernbert-base
FAMILIES = {
    "bert": ("BertConfig", "BertForSequenceClassification", dict(BASE, intermediate_size=3072)),
    "xlm-roberta": (
        "XLMRobertaConfig",
        "XLMRobertaForSequenceClassification",
        dict(
            BASE,
            intermediate_size=3072,
            max_position_embeddings=514,
            type_vocab_size=2,
            pad_token_id=0,
        ),
    ),
    "deberta-v3": (
        "DebertaV2Config",
        "DebertaV2ForSequenceClassification",
        dict(
            BASE,
            intermediate_size=3072,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
            position_buckets=256,
            max_relative_positions=-1,
            share_att_key=True,
            norm_rel_ebd="layer_norm",
            type_vocab_size=0,
        ),
    ),
    "electra": (
        "ElectraConfig",
        "ElectraForSequenceClassification",
        dict(BASE, intermediate_size=3072, embedding_size=768),
    ),
    "modernbert": (
        "ModernBertConfig",
        "ModernBertForSequenceClassification",
        dict(
            BASE,
            num_hidden_layers=22,
            intermediate_size=1152,
            global_attn_every_n_layers=3,
            local_attention=128,
            pad_token_id=0,
            bos_token_id=101,
            cls_token_id=101,
            eos_token_id=102,
            sep_token_id=102,
        ),
    ),
}
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]


def write_checkpoint(family: str, folder: Path) -> Path:
    import transformers

    config_class, model_class, shape = FAMILIES[family]
    config = getattr(transformers, config_class)(vocab_size=30522, **shape)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config)
    with torch.no_grad():  # wider than the default init, so that logits spread
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.04)
    model.save_pretrained(folder / family)
    source = all_minilm_l6_v2_path()
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / family / name)
    return folder / family


def measure(family: str, path: Path, calls, repeats: int) -> dict:
    systems = {
        "sentence-transformers": sentence_transformers_scorer(path, "cpu"),
        "crossrank fp32": crossrank_scorer(path, "cpu", "float32"),
    }
    diff = max(
        float(
            np.abs(systems["crossrank fp32"](q, d) - systems["sentence-transformers"](q, d)).max()
        )
        for q, d in calls
    )
    timings = time_systems(systems, calls, repeats, family)
    ratio = (
        timings["crossrank fp32"]["pairs_per_s"] / timings["sentence-transformers"]["pairs_per_s"]
    )
    return {"family": family, "max_logit_diff": diff, "ratio": ratio, **timings}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--data", help="folder holding trec-dl19/ (default: ../shared/data)")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="write all figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}; torch {torch.__version__}")
    _, workload = dl19(args.queries, args.data)
    calls = [(query, texts) for _, query, _, texts in workload]
    results, broken = [], []
    with tempfile.TemporaryDirectory() as folder:
        for family in args.families:
            r = measure(family, write_checkpoint(family, Path(folder)), calls, args.repeats)
            results.append(r)
            theirs, ours = (
                r[s]["pairs_per_s"] for s in ("sentence-transformers", "crossrank fp32")
            )
            print(
                f"{family:<12} sentence-transformers {theirs:7.1f} pairs/s  crossrank fp32 "
                f"{ours:7.1f} pairs/s  ratio {r['ratio']:.2f}x  "
                f"max |logit diff| {r['max_logit_diff']:.1e}",
                flush=True,
            )
            if r["ratio"] < MIN_RATIO:
                broken.append(f"{family}: {r['ratio']:.2f}x (bound {MIN_RATIO}x)")
            if not r["max_logit_diff"] <= MAX_LOGIT_DIFF:
                broken.append(f"{family}: logits differ by {r['max_logit_diff']:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    for line in broken:
        print(f"BOUND BROKEN: {line}", file=sys.stderr)
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
