"""``crossrank batch``: score every pair of a run or a pairs file on Ray, write Parquet."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

from crossrank.arguments import add_long_document_options, add_model_options, positive

log = logging.getLogger("crossrank.batch")
PROGRESS_EVERY_S = 10.0


def write_scores(scored, out: Path) -> int:
    """Stream the scored rows into one Parquet file; the number of rows written.

    The rows come to the driver block by block as replicas finish them (Ray Data holds
    back the replicas when the driver falls behind), so memory stays flat. The file
    appears under its name only once complete.
    """
    import pyarrow.parquet as pq

    partial = out.with_name(out.name + ".partial")
    writer = None
    written, start, last = 0, time.monotonic(), time.monotonic()
    try:
        for table in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema)
            writer.write_table(table.cast(writer.schema))
            written += table.num_rows
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:
                log.info("%d pairs scored, %.1f pairs/s", written, written / (now - start))
                last = now
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("the input holds no pairs")
    partial.replace(out)
    return written


def write_trec(scores: Path, out: Path, tag: str = "crossrank") -> None:
    """A TREC run of the scores, best first per query (reads the ids and scores back)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(scores, columns=["query_id", "doc_id", "score"])
    table = table.take(pc.sort_indices(table, [("query_id", "ascending"), ("score", "descending")]))
    with open(out, "w", encoding="utf-8") as lines:
        query, rank = None, 0
        for qid, doc, score in zip(
            *(table.column(c).to_pylist() for c in table.column_names), strict=True
        ):
            rank = rank + 1 if qid == query else 1
            query = qid
            lines.write(f"{qid} Q0 {doc} {rank} {score!r} {tag}\n")


def check_cpus(cluster_cpus: float, replica_cpus: float, is_trec: bool) -> None:
    """Refuse a pool that would take every CPU: reading Parquet or JSONL takes Ray tasks,
    which would wait forever for a CPU. (A TREC run is read by the driver.)"""
    if not is_trec and replica_cpus >= cluster_cpus:
        raise ValueError(
            f"the replicas take {replica_cpus:g} CPUs and the Ray cluster has "
            f"{cluster_cpus:g}: none would be left to read the input; use fewer "
            "--replicas or a fractional --cpus-per-replica"
        )


def batch_command(args: argparse.Namespace) -> None:
    try:
        import ray
    except ImportError:
        raise SystemExit("crossrank batch needs Ray: pip install 'crossrank[batch]'") from None
    from crossrank.batch import read_pairs, score_dataset
    from crossrank.batch.inputs import resolve_input

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    if out.suffix != ".parquet":
        raise ValueError(f"--out must name a .parquet file, not {out}")
    source = resolve_input(args.input, args.beir)  # every input error before Ray starts
    out.parent.mkdir(parents=True, exist_ok=True)
    is_trec = source.endswith(".trec") or args.beir is not None
    replica_cpus = args.replicas * args.cpus_per_replica
    started = not ray.is_initialized()  # a caller's own Ray instance is left running
    if started and args.ray_address is None:
        # A local instance for this job, with a logical CPU beyond the replicas' for the
        # tasks that read the input (they do little; the replicas do the work).
        ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(replica_cpus) + 1))
    elif started:
        ray.init(address=args.ray_address)
    try:
        check_cpus(ray.cluster_resources().get("CPU", 0), replica_cpus, is_trec)
        pairs = read_pairs(source, beir=args.beir, block_rows=args.batch_rows)
        scored = score_dataset(
            pairs,
            args.model,
            replicas=args.replicas,
            batch_tokens=args.batch_tokens,
            # TREC input comes in blocks of whole queries, scored one block per call.
            batch_rows=None if is_trec else args.batch_rows,
            raw=args.raw,
            num_cpus=args.cpus_per_replica,
            num_gpus=args.gpus_per_replica,
            max_length=args.max_length,
            long_documents=args.long_documents,
            max_windows=args.max_windows,
            dtype=args.dtype,
            trust_remote_code=args.trust_remote_code,
            activation=args.activation,
        )
        start = time.monotonic()
        written = write_scores(scored, out)
        seconds = time.monotonic() - start
    finally:
        if started:
            ray.shutdown()
    print(
        f"scored {written} pairs in {seconds:.1f} s ({written / seconds:.1f} pairs/s) "
        f"with {args.replicas} replicas: {out}",
        file=sys.stderr,
    )
    if args.trec:
        write_trec(out, Path(args.trec))


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="score many (query, document) pairs on Ray and write Parquet",
        description=(
            "Score every pair of INPUT with model replicas on Ray (Ray Data, one model per "
            "actor) and write query_id, doc_id, score (and any other input column) to "
            "Parquet. Runs on a local Ray instance unless --ray-address names a cluster."
        ),
    )
    parser.add_argument(
        "input",
        help="a BEIR folder with one run (FOLDER/runs/*.trec), a TREC run file, or Parquet "
        "or JSONL (file or folder) of {query_id, query, doc_id, text}",
    )
    parser.add_argument("--out", required=True, help="the Parquet file to write")
    parser.add_argument("--trec", default=None, help="also write the scores as a TREC run here")
    parser.add_argument(
        "--beir", default=None, help="the BEIR folder of a TREC run (default: above runs/)"
    )
    parser.add_argument(
        "--model", "-m", default=None, help="checkpoint folder or hub id (default: bundled)"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="'auto' or HOST:PORT of a running Ray cluster (default: start a local one)",
    )
    parser.add_argument("--replicas", type=positive, default=1, help="model actors (default: 1)")
    parser.add_argument(
        "--batch-tokens",
        type=positive,
        default=8192,
        help="tokens per model call (default: 8192)",
    )
    parser.add_argument(
        "--batch-rows",
        type=positive,
        default=1024,
        help="pairs per actor call; a TREC run's are rounded up to whole queries (default: 1024)",
    )
    parser.add_argument(
        "--cpus-per-replica", type=float, default=1, help="CPUs (and torch threads) each"
    )
    parser.add_argument("--gpus-per-replica", type=float, default=0, help="GPUs each")
    parser.add_argument("--raw", action="store_true", help="write logits, not sigmoid scores")
    add_long_document_options(parser)
    parser.add_argument("--dtype", default=None)
    add_model_options(parser)
    parser.set_defaults(func=batch_command)
