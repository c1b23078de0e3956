"""Distillation teacher: bi-encoders (sentence-transformers folders) that score candidate lists.

A bi-encoder encodes each query and each document once, so scoring 100 candidates for a
query costs about 101 encodings instead of 100 cross-attention passes; that is what makes
labelling many unjudged pairs affordable on a CPU. Several teachers are averaged (an
ensemble). Scores are ``scale * cosine``: the temperature the sentence-transformers models
were trained with (scale 20), so softmax over a list gives the teacher's distribution.

Usage (writes a TREC run whose scores are the teacher logits):

    python -m crossrank.training.teacher --model PATH [--model PATH2] \\
        --data ../shared/data/trec-dl22 --split train --out teacher/dl22.trec

Runs at training time only, with ``transformers`` (any architecture, e.g. MPNet, which
crossrank's runtime has no code for); crossrank itself never needs it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from crossrank.training.data import load_beir, write_run

SCALE = 20.0


class BiEncoder:
    def __init__(self, path: str | Path, max_length: int = 256, device: str = "cpu"):
        from tokenizers import Tokenizer
        from transformers import AutoModel

        path = Path(path)
        self.model = AutoModel.from_pretrained(path).eval().to(device)
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        pad_id = self.model.config.pad_token_id or 0
        self.tokenizer.enable_padding(pad_id=pad_id)
        self.device = device
        pooling = path / "1_Pooling" / "config.json"
        if pooling.exists() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
            raise ValueError(
                f"{path}: only mean-pooling sentence-transformers models are supported"
            )

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = True
    ) -> torch.Tensor:
        """L2-normalised mean-pooled embeddings, computed in length-sorted batches."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = torch.empty(len(texts), self.model.config.hidden_size)
        for start in tqdm(range(0, len(order), batch_size), desc="encode", disable=not progress):
            batch = order[start : start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in batch])
            ids = torch.tensor([e.ids for e in encodings], device=self.device)
            mask = torch.tensor([e.attention_mask for e in encodings], device=self.device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            out[batch] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu()
        return out


def score_candidates(
    encoders: Sequence[BiEncoder],
    queries: dict[str, str],
    corpus: dict[str, str],
    run: dict[str, list[str]],
) -> dict[str, dict[str, float]]:
    """Teacher logits (mean over encoders of ``SCALE * cosine``) for every (query, candidate)."""
    query_ids = [q for q in run if q in queries]
    doc_ids = sorted({d for q in query_ids for d in run[q] if d in corpus})
    row = {d: i for i, d in enumerate(doc_ids)}
    total: dict[str, dict[str, float]] = {q: {} for q in query_ids}
    for encoder in encoders:
        q_emb = encoder.encode([queries[q] for q in query_ids])
        d_emb = encoder.encode([corpus[d] for d in doc_ids])
        for qi, q in enumerate(query_ids):
            docs = [d for d in run[q] if d in row]
            sims = d_emb[[row[d] for d in docs]] @ q_emb[qi]
            for d, s in zip(docs, sims.tolist(), strict=True):
                total[q][d] = total[q].get(d, 0.0) + SCALE * s / len(encoders)
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", action="append", required=True, help="bi-encoder folder (repeat for an ensemble)"
    )
    parser.add_argument("--data", required=True, help="BEIR folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--depth", type=int, default=100, help="candidates per query")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--out", required=True, help="TREC run file to write")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = load_beir(args.data, args.split, depth=args.depth)
    encoders = [BiEncoder(m, args.max_length) for m in args.model]
    run = score_candidates(encoders, data.queries, data.corpus, data.run)
    write_run(run, Path(args.out), tag="teacher")
    print(
        f"wrote {sum(map(len, run.values()))} teacher scores for {len(run)} queries to {args.out}"
    )


if __name__ == "__main__":
    main()
