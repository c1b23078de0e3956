"""``crossrank eval``: how much a reranker lifts a first stage on a BEIR-format benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from crossrank.arguments import add_threads_option, apply_threads

if TYPE_CHECKING:  # the command imports its libraries only when it runs: a fast --help
    from crossrank.evaluation.harness import EvalReport
    from crossrank.evaluation.suite import DepthRow, SetResult

MODES = ("truncate", "chunk", "select")
MODE_GROUPS = {"both": ["truncate", "chunk"], "all": list(MODES)}


def parse_modes(text: str) -> list[str]:
    """``truncate``, ``chunk,select``, ``both`` (truncate,chunk) or ``all``."""
    if text in MODE_GROUPS:
        return MODE_GROUPS[text]
    modes = [m.strip() for m in text.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            choices = ", ".join([*MODES, *MODE_GROUPS])
            raise argparse.ArgumentTypeError(f"unknown mode {mode!r}; use {choices}")
    return modes


def whole_numbers(option: str, example: str):
    """An argparse type for ``option``: comma-separated whole numbers, each at least 1."""

    def parse(text: str) -> list[int]:
        try:
            numbers = [int(n) for n in text.split(",") if n.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option} takes numbers like {example}, not {text!r}"
            ) from None
        if not numbers or min(numbers) < 1:
            raise argparse.ArgumentTypeError(f"{option} must be at least 1, not {text!r}")
        return numbers

    return parse


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
    if report.costs:
        lines.append("")
        for mode, cost in report.costs.items():
            tokens = f", cross-encoder read {cost['tokens']:,} tokens" if "tokens" in cost else ""
            lines.append(
                f"rerank ({mode}): {cost['seconds']:.1f} s wall, {cost['cpu_seconds']:.1f} s "
                f"CPU for {cost['pairs']:,} pairs{tokens}"
            )
    return "\n".join(lines)


def format_suite(results: list[SetResult]) -> str:
    """One row per system, one column per set, then the averages (LoCo style)."""
    names = [r.name for r in results]
    long_sets = [r for r in results if r.long]
    first = results[0]
    width = max(30, *(len(s.label) + 2 for s in first.systems))  # the row labels' column
    lines = [
        f"first stage {first.first_stage}, reranking top-{first.top_k}; queries: "
        + ", ".join(f"{r.name} {r.split} {r.queries}" for r in results),
        "",
        f"{'nDCG@10':<{width}}"
        + "".join(f"{n:>10}" for n in names)
        + f"{'avg long':>10}{'avg':>10}",
    ]
    for i, system in enumerate(first.systems):
        values = [r.systems[i].ndcg10 for r in results]
        long_values = [r.systems[i].ndcg10 for r in long_sets]
        average_long = f"{sum(long_values) / len(long_values):>10.4f}" if long_values else ""
        lines.append(
            f"{system.label:<{width}}"
            + "".join(f"{v:>10.4f}" for v in values)
            + f"{average_long or '-':>10}{sum(values) / len(values):>10.4f}"
        )
    for title, key, fmt in (
        ("rerank seconds (wall)", "seconds", "{:>10.1f}"),
        ("rerank seconds (CPU)", "cpu_seconds", "{:>10.1f}"),
        ("cross-encoder tokens read", "tokens", "{:>10,}"),
    ):
        lines += ["", f"{title:<{width}}" + "".join(f"{n:>10}" for n in names)]
        for i, system in enumerate(first.systems):
            values = [getattr(r.systems[i], key) for r in results]
            if values[0] is None:
                continue
            lines.append(f"{system.label:<{width}}" + "".join(fmt.format(v) for v in values))
    return "\n".join(lines)


def format_depths(name: str, split: str, queries: int, first_stage: float, rows: list[DepthRow]):
    lines = [
        f"{name} / {split}: {queries} queries; first stage nDCG@10 {first_stage:.4f}",
        "",
        f"{'depth':>6}{'pairs':>8}{'nDCG@10':>10}{'rerank s':>10}{'CPU s':>8}{'tokens':>12}",
    ]
    for row in rows:
        lines.append(
            f"{row.depth:>6}{row.pairs:>8}{row.ndcg10:>10.4f}{row.seconds:>10.1f}"
            f"{row.cpu_seconds:>8.1f}{row.tokens:>12,}"
        )
    return "\n".join(lines)


def suite_command(args: argparse.Namespace) -> None:
    from crossrank.evaluation.suite import LOCO_SETS, run_suite, suite_json

    results = run_suite(
        args.dataset,
        sets=tuple(args.sets or LOCO_SETS),
        first_stage=args.first_stage,
        top_k=args.top_k,
        modes=tuple(args.long_documents or MODES),
        biencoder=not args.no_biencoder,
        model=args.model,
        max_length=args.max_length,
        max_windows=tuple(args.max_windows or [None]),
        max_queries=args.max_queries,
        device=args.device,
        progress=True,
    )
    print(format_suite(results))
    if args.json:
        Path(args.json).write_text(json.dumps(suite_json(results), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.plot:
        from crossrank.evaluation.plot import plot_quality_cost

        plot_quality_cost(results, args.plot)
        print(f"wrote {args.plot}")


def depths_command(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from crossrank.evaluation.suite import depth_sweep

    modes = args.long_documents or [None]
    if len(modes) > 1:
        raise ValueError("--depths takes one --long-documents mode")
    dataset, first_stage, rows = depth_sweep(
        args.dataset,
        args.depths,
        split=args.split,
        first_stage=args.first_stage,
        model=args.model,
        long_documents=modes[0],
        max_windows=args.max_windows,
        max_length=args.max_length,
        max_queries=args.max_queries,
        device=args.device,
        progress=True,
    )
    print(format_depths(dataset.name, dataset.split, len(dataset.queries), first_stage, rows))
    if args.json:
        out = {"first_stage_ndcg10": first_stage, "rows": [asdict(r) for r in rows]}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.plot:
        from crossrank.evaluation.plot import plot_depths

        title = (
            f"{dataset.name} {dataset.split} ({len(dataset.queries)} queries, {args.first_stage})"
        )
        plot_depths(rows, first_stage, args.plot, title)
        print(f"wrote {args.plot}")


def eval_command(args: argparse.Namespace) -> None:
    apply_threads(args)
    if args.max_windows is not None and "select" not in (args.long_documents or ["select"]):
        raise ValueError("--max-windows applies to --long-documents select")
    if args.max_windows is not None and len(args.max_windows) > 1 and not args.suite:
        raise ValueError("several --max-windows values are for --suite; give one")
    if args.max_windows is not None and not args.suite:
        args.max_windows = args.max_windows[0]
    if args.top_k is None:
        args.top_k = 20 if args.suite else 100
    if args.suite:
        return suite_command(args)
    if args.depths:
        return depths_command(args)
    from crossrank.evaluation.harness import evaluate_reranking
    from crossrank.evaluation.plot import plot_metrics

    modes = args.long_documents
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
        max_windows=args.max_windows,
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
    parser.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="documents reranked per query (default: 100; with --suite: 20)",
    )
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
        type=parse_modes,
        default=None,
        metavar="MODES",
        help="how the reranker reads documents longer than its input: truncate, chunk "
        "(every window), select (the --max-windows BM25-best windows), a comma-separated "
        "list to compare, both (truncate,chunk) or all (default: the model's own default; "
        "with --suite: all)",
    )
    parser.add_argument(
        "--max-windows",
        type=whole_numbers("--max-windows", "1,3"),
        default=None,
        metavar="M",
        help="windows per document in select mode (default: crossrank's measured default); "
        "with --suite a comma-separated list compares several",
    )
    parser.add_argument(
        "--suite",
        choices=["loco"],
        default=None,
        help="loco: DATASET is a folder of sets; rerank the long-document sets qmsum, "
        "covid-qa, ectsum (and scitldr, a short-document control) with every "
        "long-document mode and the bi-encoder over the same candidates, and report "
        "nDCG@10, rerank time and the tokens the cross-encoder read",
    )
    parser.add_argument(
        "--sets",
        nargs="+",
        default=None,
        metavar="NAME[:SPLIT[:QUERIES]]",
        help="with --suite: the sets to run (default: qmsum covid-qa ectsum scitldr, test)",
    )
    parser.add_argument(
        "--no-biencoder", action="store_true", help="with --suite: skip the bi-encoder rows"
    )
    parser.add_argument(
        "--depths",
        type=whole_numbers("--depths", "10,20,50"),
        default=None,
        metavar="10,20,50,...",
        help="rerank the top 10, 20, 50... and report nDCG@10 and rerank time per depth",
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
    add_threads_option(parser)
    parser.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    parser.add_argument(
        "--plot",
        metavar="OUT.png",
        help="write a bar chart (--suite: quality against cost; --depths: nDCG@10 and time "
        "against depth)",
    )
    parser.add_argument(
        "--save-runs", metavar="DIR", help="write the first-stage and reranked runs (TREC format)"
    )
    parser.set_defaults(func=eval_command)
