"""``crossrank eval``: how much a reranker lifts a first stage on a BEIR-format benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command imports its libraries only when it runs: a fast --help
    from crossrank.evaluation.harness import EvalReport


def systems(report: EvalReport) -> dict[str, dict[str, float]]:
    """Column name -> metrics, first stage first."""
    columns = {f"first stage ({report.first_stage_name})": report.first_stage}
    for mode, metrics in report.reranked.items():
        label = "reranked" if len(report.reranked) == 1 else f"reranked ({mode})"
        columns[label] = metrics
    return columns


def format_table(report: EvalReport) -> str:
    columns = systems(report)
    lines = [
        f"{report.dataset} / {report.split}: {report.queries} queries, first stage "
        f"{report.first_stage_name}, reranking top-{report.top_k}",
    ]
    if report.reranker:
        modes = ", ".join(report.reranked)
        lines.append(f"reranker: {report.reranker} (long documents: {modes})")
    lines += [f"note: {note}" for note in report.notes]
    names = list(columns)
    header = f"{'metric':<11}" + "".join(f"{name:>26}" for name in names)
    if report.reranked:  # the last column minus the first stage
        delta = "delta" if len(report.reranked) == 1 else f"delta ({list(report.reranked)[-1]})"
        header += f"{delta:>17}"
    lines += ["", header]
    first, *_ = columns.values()
    last = list(columns.values())[-1]
    for metric in first:
        row = f"{metric:<11}" + "".join(f"{c[metric]:>26.4f}" for c in columns.values())
        if report.reranked:
            row += f"{last[metric] - first[metric]:>+17.4f}"
        lines.append(row)
    return "\n".join(lines)


def eval_command(args: argparse.Namespace) -> None:
    from crossrank.evaluation.harness import evaluate_reranking
    from crossrank.evaluation.plot import plot_metrics

    modes = None
    if args.long_documents == "both":
        modes = ["truncate", "chunk"]
    elif args.long_documents:
        modes = [args.long_documents]
    # DatasetError is a ValueError: crossrank's main() prints it as a one-line message
    report = evaluate_reranking(
        args.dataset,
        split=args.split,
        first_stage=args.first_stage,
        top_k=args.top_k,
        rerank=not args.no_rerank,
        reranker=args.reranker,
        model=args.model,
        long_documents=modes,
        max_length=args.max_length,
        all_queries=args.all_queries,
        max_queries=args.max_queries,
        device=args.device,
        progress=True,
        cache=not args.no_cache,
    )
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.save_runs:
        from crossrank.evaluation.beir import write_run

        folder = Path(args.save_runs)
        folder.mkdir(parents=True, exist_ok=True)
        for name, run in report.runs.items():
            write_run(run, folder / f"{name}.trec", tag=name)
        print(f"wrote {', '.join(f'{name}.trec' for name in report.runs)} to {folder}")
    if args.plot:
        title = f"{report.dataset} {report.split} ({report.queries} queries)"
        plot_metrics(systems(report), args.plot, title)
        print(f"wrote {args.plot}")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a first stage and its reranking on a BEIR-format benchmark",
        description="First stage -> rerank the top-k -> nDCG@10, RR@10, RR, AP, R@100, "
        "Success@1/@5 (ir-measures, trec_eval semantics), before and after reranking.",
    )
    parser.add_argument("dataset", help="BEIR folder: corpus.jsonl[.gz], queries.jsonl, qrels/")
    parser.add_argument("--split", default="test", help="qrels/<split>.tsv (default: test)")
    parser.add_argument(
        "--first-stage",
        default="bm25",
        metavar="{bm25,dense,hybrid,run:NAME}",
        help="BM25 (bm25s), dense (all-MiniLM-L6-v2), hybrid (reciprocal-rank fusion of "
        "both), or the given run runs/<split>.NAME.trec (default: bm25)",
    )
    parser.add_argument("--top-k", type=int, default=100, help="documents reranked per query")
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help="reranker checkpoint folder or hub id (default: the package's default model; "
        "with --reranker biencoder: all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--reranker",
        choices=["cross-encoder", "biencoder"],
        default="cross-encoder",
        help="biencoder: rescore with cosine similarity of embeddings (a baseline)",
    )
    parser.add_argument("--no-rerank", action="store_true", help="evaluate the first stage only")
    parser.add_argument(
        "--long-documents",
        choices=["truncate", "chunk", "both"],
        default=None,
        help="how the reranker reads documents longer than its input; both: compare "
        "(default: the model's own default)",
    )
    parser.add_argument("--max-length", type=int, default=None, help="cross-encoder input tokens")
    parser.add_argument(
        "--all-queries",
        action="store_true",
        help="score every judged query (by default WikiQA/TrecQA keep only questions with "
        "both a correct and a wrong candidate, the standard setting)",
    )
    parser.add_argument(
        "--max-queries",
        type=int,
        default=None,
        help="only the first N judged queries: a quick check, not comparable to full numbers",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="do not keep corpus embeddings in ~/.cache/crossrank/embeddings",
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="write a bar chart")
    parser.add_argument(
        "--save-runs", metavar="DIR", help="write the first-stage and reranked runs (TREC format)"
    )
    parser.set_defaults(func=eval_command)
