"""`crossrank batch` throughput for 1 and 2 replicas, and the driver's peak memory while
streaming DL19's 4,300 pairs and 10 times as many.

Each run is a fresh driver process doing what `crossrank batch` does (a local Ray
instance, Parquet in, Parquet out through the driver), so its peak RSS is the driver's
own; Ray's worker processes are not counted in it. Throughput uses the bundled model;
the memory runs use a tiny random model by default (the driver's memory depends on the
rows streamed, not on the model, and a fast model streams 43,000 pairs in a minute rather
than an hour).

    python benchmarks/batch.py                         # both, as `make bench-batch`
    python benchmarks/batch.py --pairs 1000 --replicas 1,2 --scales 1,10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from common import benchmark_checkpoint, dl19

TINY = dict(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
)


def tiny_model(folder: Path) -> Path:
    """A random 2-layer BERT cross-encoder with the all-MiniLM-L6-v2 tokenizer."""
    from crossrank.engine.hub import all_minilm_l6_v2_path
    from crossrank.models import save_model
    from crossrank.models.bert import Bert, BertConfig

    torch.manual_seed(0)
    save_model(Bert(BertConfig(**TINY)), folder)
    (folder / "tokenizer.json").write_bytes(
        (all_minilm_l6_v2_path() / "tokenizer.json").read_bytes()
    )
    return folder


def write_pairs(folder: Path, pairs: int | None, copies: int) -> Path:
    """DL19's first ``pairs`` run pairs, ``copies`` times (ids made unique), as Parquet
    files of one copy each."""
    _, workload = dl19()
    rows = [
        {"query_id": qid, "query": query, "doc_id": doc, "text": text}
        for qid, query, docs, texts in workload
        for doc, text in zip(docs, texts, strict=True)
    ][:pairs]
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    for copy in range(copies):
        ids = pa.array([f"{q}#{copy}" for q in table.column("query_id").to_pylist()])
        pq.write_table(table.set_column(0, "query_id", ids), folder / f"part-{copy:03}.parquet")
    return folder


def run_batch(inputs: str, model: str, replicas: int, batch_rows: int, queue) -> None:
    """What `crossrank batch INPUT --out OUT` does, in this process, timing each block
    that reaches the driver and sampling the driver's memory."""
    import math

    import ray

    from crossrank.batch import read_pairs, score_dataset

    process = psutil.Process()
    before = process.memory_info().rss
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(replicas) + 1))  # as the CLI does
    start = time.perf_counter()
    scored = score_dataset(read_pairs(inputs), model, replicas=replicas, batch_rows=batch_rows)
    arrivals, writer = [], None
    with tempfile.TemporaryDirectory() as out:
        for table in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer = writer or pq.ParquetWriter(Path(out) / "scores.parquet", table.schema)
            writer.write_table(table.cast(writer.schema))
            arrivals.append((time.perf_counter() - start, table.num_rows))
        writer.close()
    ray.shutdown()
    done.set()
    sampler.join()
    pairs = sum(rows for _, rows in arrivals)
    first, first_rows = arrivals[0]
    seconds = arrivals[-1][0]
    queue.put(
        dict(
            pairs=pairs,
            seconds=seconds,
            pairs_per_s=pairs / seconds,
            # Between the first block and the last: replicas started, models loaded. Only
            # meaningful when blocks arrive spread out (many blocks per replica).
            steady_pairs_per_s=(pairs - first_rows) / (seconds - first)
            if len(arrivals) >= 4 and seconds - first > 1
            else None,
            blocks=len(arrivals),
            first_block_s=first,
            rss_before_mb=before / 2**20,
            rss_peak_mb=peak[0] / 2**20,
        )
    )


def measure(*args) -> dict:
    context = mp.get_context("spawn")  # a fresh driver per run: its peak is its own
    queue = context.Queue()
    child = context.Process(target=run_batch, args=(*args, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="throughput model (default: bundled)")
    parser.add_argument("--pairs", type=int, default=None, help="DL19 pairs (default: all)")
    parser.add_argument("--replicas", default="1,2", help='throughput runs ("": none)')
    parser.add_argument("--batch-rows", type=int, default=256, help="pairs per actor call")
    parser.add_argument("--scales", default="1,10", help="input sizes, in DL19 sets")
    parser.add_argument(
        "--memory-model", choices=["tiny", "same"], default="tiny", help="model of memory runs"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crossrank-bench-batch-"))
    model, model_name = benchmark_checkpoint(args.model)
    cores = len(os.sched_getaffinity(0))
    print(f"{os.cpu_count()} CPUs, {cores} usable by this process; model: {model_name}")
    report = dict(cpus=os.cpu_count(), usable_cpus=cores, model=model_name, runs=[])

    inputs = write_pairs(work / "pairs", args.pairs, copies=1)
    for replicas in [int(r) for r in args.replicas.split(",") if r]:
        result = measure(str(inputs), str(model), replicas, args.batch_rows)
        result.update(kind="throughput", replicas=replicas)
        report["runs"].append(result)
        print(
            f"{replicas} replica(s): {result['pairs']} pairs in {result['seconds']:.1f} s: "
            f"{result['pairs_per_s']:.1f} pairs/s overall (replica start and model loading "
            f"included; first block after {result['first_block_s']:.1f} s), "
            f"{result['steady_pairs_per_s'] or float('nan'):.1f} pairs/s from the first "
            f"block to the last ({result['blocks']} blocks)"
        )

    memory_model = tiny_model(work / "tiny") if args.memory_model == "tiny" else model
    for scale in [int(s) for s in args.scales.split(",") if s]:
        inputs = write_pairs(work / f"pairs-x{scale}", None, copies=scale)
        result = measure(str(inputs), str(memory_model), 2, 1024)
        result.update(
            kind="memory",
            scale=scale,
            input_mb=sum(p.stat().st_size for p in inputs.iterdir()) / 2**20,
        )
        report["runs"].append(result)
        print(
            f"{scale:>3}x DL19 ({result['pairs']} pairs, {result['input_mb']:.1f} MB Parquet): "
            f"driver RSS {result['rss_before_mb']:.0f} MB before, peak "
            f"{result['rss_peak_mb']:.0f} MB ({result['pairs_per_s']:.0f} pairs/s)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
