"""Write small BEIR-format folders for tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_beir(
    folder: Path,
    corpus: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    split: str = "test",
    runs: dict[str, dict[str, dict[str, float]]] | None = None,
    gz: bool = False,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(
        json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in corpus.items()
    )
    if gz:
        with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as out:
            out.write(lines)
    else:
        (folder / "corpus.jsonl").write_text(lines)
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items())
    )
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{g}\n" for q, docs in qrels.items() for d, g in docs.items())
    )
    for name, run in (runs or {}).items():
        (folder / "runs").mkdir(exist_ok=True)
        with open(folder / "runs" / f"{split}.{name}.trec", "w") as out:
            for q, docs in run.items():
                for rank, (d, s) in enumerate(sorted(docs.items(), key=lambda x: -x[1]), 1):
                    out.write(f"{q} Q0 {d} {rank} {s} {name}\n")
    return folder
