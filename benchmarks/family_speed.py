"""Each encoder family's fp32 path against sentence-transformers' CrossEncoder, and the
Qwen3 decoder reranker against a plain transformers loop over its prompt.

For every family, a random-weight checkpoint of its real base shape is written by
``transformers`` itself (with the all-MiniLM-L6-v2 WordPiece tokenizer, so all families
read the same tokens), and both systems score it on workload A of ``rerank_speed.py``
(TREC DL19 queries x their 100 BM25 candidates), interleaved query by query, same
threads, same process; the decoder (Qwen3-Reranker-0.6B's shape) scores the first
query's first ``--decoder-documents`` candidates. Prints pairs/s, the ratio and the max
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
# Qwen3-Reranker-0.6B's decoder (the vocabulary aside: the WordPiece one, with the chat
# special tokens added), against a plain transformers loop over the model card's prompt
DECODER_SHAPE = dict(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)
DECODER = "qwen3-decoder"
DECODER_BATCH = 16
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


def write_decoder_checkpoint(folder: Path) -> Path:
    import transformers
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(all_minilm_l6_v2_path() / "tokenizer.json"))
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    config = transformers.Qwen3Config(vocab_size=tokenizer.get_vocab_size(), **DECODER_SHAPE)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.03)
    model.save_pretrained(folder / DECODER)
    tokenizer.save(str(folder / DECODER / "tokenizer.json"))
    return folder / DECODER


def transformers_template_scorer(path: Path):
    """The model card's loop: the whole prompt as text, left-padded batches in input
    order, logit("yes") - logit("no") at the last position (what crossrank returns raw)."""
    import transformers
    from tokenizers import Tokenizer

    from crossrank.models.qwen3 import PROMPT

    model = transformers.Qwen3ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_truncation()  # all-MiniLM-L6-v2's tokenizer.json cuts at 128 tokens
    tokenizer.no_padding()
    yes, no = tokenizer.token_to_id("yes"), tokenizer.token_to_id("no")

    def text(query, document):
        before = PROMPT.text_before_query(None)
        return f"{before} {query}{PROMPT.before_document} {document}{PROMPT.after_document}"

    @torch.inference_mode()
    def score(query, documents):
        out = []
        for start in range(0, len(documents), DECODER_BATCH):
            chunk = documents[start : start + DECODER_BATCH]
            rows = [tokenizer.encode(text(query, d), add_special_tokens=False).ids for d in chunk]
            longest = max(map(len, rows))
            ids = torch.tensor([[0] * (longest - len(r)) + r for r in rows])
            mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
            last = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
            out.extend((last[:, yes] - last[:, no]).tolist())
        return np.asarray(out)

    return score


def measure(family: str, path: Path, calls, repeats: int) -> dict:
    baseline = "transformers loop" if family == DECODER else "sentence-transformers"
    systems = {
        baseline: (
            transformers_template_scorer(path)
            if family == DECODER
            else sentence_transformers_scorer(path, "cpu")
        ),
        "crossrank fp32": crossrank_scorer(path, "cpu", "float32"),
    }
    diff = max(
        float(np.abs(systems["crossrank fp32"](q, d) - systems[baseline](q, d)).max())
        for q, d in calls
    )
    timings = time_systems(systems, calls, repeats, family)
    ratio = timings["crossrank fp32"]["pairs_per_s"] / timings[baseline]["pairs_per_s"]
    return {
        "family": family,
        "baseline": baseline,
        "max_logit_diff": diff,
        "ratio": ratio,
        **timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    choices = [*FAMILIES, DECODER]
    parser.add_argument("--families", nargs="+", choices=choices, default=choices)
    parser.add_argument(
        "--decoder-documents",
        type=int,
        default=30,
        help="candidates of the first query the decoder scores (it is ~20x the work per pair)",
    )
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
            if family == DECODER:
                path = write_decoder_checkpoint(Path(folder))
                decoder_calls = [(calls[0][0], calls[0][1][: args.decoder_documents])]
                r = measure(family, path, decoder_calls, args.repeats)
            else:
                r = measure(family, write_checkpoint(family, Path(folder)), calls, args.repeats)
            results.append(r)
            theirs, ours = (r[s]["pairs_per_s"] for s in (r["baseline"], "crossrank fp32"))
            print(
                f"{family:<14} {r['baseline']} {theirs:7.1f} pairs/s  crossrank fp32 "
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
