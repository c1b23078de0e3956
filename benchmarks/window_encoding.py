"""Input preparation of the windowed path, before and after sharing tokenisation.

Old: every call tokenises each document again, copies it into windows with
``Encoding.truncate(budget, stride)`` and runs the tokenizer's post-processor per window.
New (``PairEncoder.encode``): each document's token ids are cached and sliced into
windows, and the pair template is built once per query. Both must give identical inputs
(checked here on real transcripts). CPU seconds, so a busy machine does not skew them.

    python benchmarks/window_encoding.py ../shared/data/qmsum
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import time
from pathlib import Path

from crossrank.engine.hub import all_minilm_l6_v2_path
from crossrank.engine.tokenization import PairEncoder, load_tokenizer


def old_encode(encoder: PairEncoder, query: str, documents: list[str]) -> list[tuple]:
    tokenizer = encoder.tokenizer
    query_encoding = encoder.encode_query(query)
    budget = encoder.max_length - encoder.num_special - len(query_encoding)
    out = []
    for document in tokenizer.encode_batch(documents, add_special_tokens=False):
        document.truncate(budget, stride=encoder.window_overlap(budget))
        for window in [document, *document.overflowing]:
            pair = tokenizer.post_process(query_encoding, window)
            out.append((pair.ids, pair.type_ids))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", type=Path, help="a BEIR folder with long documents")
    parser.add_argument("--documents", type=int, default=5)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    with gzip.open(args.dataset / "corpus.jsonl.gz", "rt", encoding="utf-8") as lines:
        documents = [json.loads(line)["text"] for line in itertools.islice(lines, args.documents)]
    with open(args.dataset / "queries.jsonl", encoding="utf-8") as lines:
        queries = [json.loads(line)["text"] for line in itertools.islice(lines, args.queries)]
    encoder = PairEncoder(
        load_tokenizer(all_minilm_l6_v2_path()), args.max_length, long_documents="chunk"
    )
    start = time.process_time()
    old = [old_encode(encoder, q, documents) for q in queries]
    old_seconds = time.process_time() - start
    start = time.process_time()
    new = [[(f.input_ids, f.token_type_ids) for f in encoder.encode(q, documents)] for q in queries]
    new_seconds = time.process_time() - start
    start = time.process_time()
    for query in queries:
        encoder.encode(query, documents, long_documents="select", max_windows=3)
    select_seconds = time.process_time() - start
    assert old == new, "the shared-tokenisation path changed the model inputs"
    print(
        f"{len(queries)} queries x {len(documents)} documents, {len(old[0])} windows per "
        f"query; CPU seconds: old {old_seconds:.2f}, new chunk {new_seconds:.2f} "
        f"({old_seconds / new_seconds:.1f}x less), new select m=3 {select_seconds:.2f}"
    )


if __name__ == "__main__":
    main()
