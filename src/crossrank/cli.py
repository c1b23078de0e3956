"""``crossrank`` command line: one subcommand per part of the system.

Each part adds its own subcommand through an ``add_parser(subparsers)`` function that
sets ``func`` on its parser; this module only assembles them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crossrank.arguments import add_long_document_options, add_runtime_options, apply_threads
from crossrank.batch.cli import add_parser as add_batch_parser
from crossrank.engine.hub import CheckpointNotFoundError
from crossrank.evaluation.cli import add_parser as add_eval_parser
from crossrank.models import CheckpointError
from crossrank.retrieval.cli import add_index_parser, add_search_parser
from crossrank.server.cli import add_parser as add_serve_parser
from crossrank.training.calibrate import add_parser as add_calibrate_parser
from crossrank.training.train import add_parser as add_train_parser


def read_documents(source: str) -> list[str]:
    """A .txt file (one document per line), a .jsonl file (a "text" field), or - for stdin."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
        is_jsonl = bool(lines) and lines[0].lstrip().startswith("{")
    else:
        path = Path(source)
        if not path.is_file():
            raise SystemExit(f"crossrank: no such file: {source}")
        lines = path.read_text(encoding="utf-8").splitlines()
        is_jsonl = path.suffix == ".jsonl"
    if not is_jsonl:
        return [line for line in lines if line.strip()]
    documents = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            documents.append(record["text"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SystemExit(
                f"crossrank: {source}:{number}: expected a JSON object with a 'text' field"
            ) from None
    return documents


def rerank_command(args: argparse.Namespace) -> None:
    from crossrank import Reranker

    apply_threads(args)
    reranker = Reranker.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        activation=args.activation,
        max_length=args.max_length,
        long_documents=args.long_documents,
        max_windows=args.max_windows,
    )
    print(f"crossrank: {reranker.precision}", file=sys.stderr)  # which path, and why
    documents = read_documents(args.documents)
    results = reranker.rerank(args.query, documents, top_n=args.top_n, instruction=args.instruction)
    print(
        json.dumps(
            [
                {"index": r.index, "relevance_score": r.relevance_score, "document": r.document}
                for r in results
            ],
            indent=2,
            ensure_ascii=False,
        )
    )


def add_rerank_parser(subparsers) -> None:
    parser = subparsers.add_parser("rerank", help="rank documents for a query and print JSON")
    parser.add_argument(
        "documents", help=".txt (one document per line), .jsonl with 'text', or - for stdin"
    )
    parser.add_argument("--query", "-q", required=True)
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help="checkpoint folder or hub id (default: the bundled model)",
    )
    parser.add_argument("--top-n", "-n", type=int, default=None)
    parser.add_argument(
        "--instruction",
        default=None,
        help="a decoder reranker's task instruction (Qwen3-Reranker's <Instruct>; default: "
        "its web-search one)",
    )
    add_long_document_options(parser)
    add_runtime_options(parser)
    parser.set_defaults(func=rerank_command)


COMMANDS = [
    add_rerank_parser,
    add_eval_parser,
    add_index_parser,
    add_search_parser,
    add_serve_parser,
    add_train_parser,
    add_calibrate_parser,
    add_batch_parser,
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="crossrank", description="Cross-encoder reranking.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_parser in COMMANDS:
        add_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (
        CheckpointNotFoundError,
        CheckpointError,
        FileNotFoundError,
        ValueError,
        TypeError,
    ) as error:
        raise SystemExit(f"crossrank: {error}") from None


if __name__ == "__main__":
    main()
