"""Command-line options shared by the subcommands that run a model."""

from __future__ import annotations

import argparse

import torch

from crossrank.engine.conventions import ACTIVATIONS
from crossrank.engine.runtime import DTYPES, QUANTISED
from crossrank.engine.tokenization import MIN_SELECTED_WINDOWS


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--device, --dtype, --activation, --trust-remote-code and --threads, read by
    ``apply_threads`` and ``Reranker(...)``."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=[*DTYPES, *QUANTISED],
        help="number format: float32, bfloat16, int8 (CPU dynamic quantisation), float16 "
        "(default: bfloat16 on CPUs with AVX512-BF16 or AMX when a probe at load finds the "
        "model's scores within 0.01 of float32, else float32; bfloat16 autocast on CUDA; "
        "the choice and its reason are logged at start-up; see docs/performance.md)",
    )
    add_model_options(parser)
    add_threads_option(parser)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--activation and --trust-remote-code, passed to ``Reranker(...)``."""
    parser.add_argument(
        "--activation",
        choices=list(ACTIVATIONS),
        default=None,
        help="logit -> score (default: the activation a sentence-transformers checkpoint "
        "names, else sigmoid, so scores match CrossEncoder.predict)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let an architecture without crossrank code run the code in its repository "
        "(transformers' trust_remote_code; only for checkpoints whose code you trust)",
    )


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """--threads, applied by ``apply_threads``."""
    parser.add_argument(
        "--threads",
        type=positive,
        default=None,
        help="CPU threads for the model (default: torch's, one per core)",
    )


def add_long_document_options(parser: argparse.ArgumentParser) -> None:
    """--max-length, --long-documents and --max-windows, as ``Reranker(...)`` takes them."""
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument(
        "--long-documents",
        choices=["truncate", "chunk", "select"],
        default=None,
        help="documents longer than the model's input: cut them (truncate), score every "
        "window and keep the best (chunk), or score only the --max-windows windows that "
        "BM25 ranks best for the query (select) (default: chunk for 512-token models, "
        "truncate for long-context ones)",
    )
    parser.add_argument(
        "--max-windows",
        type=positive,
        default=None,
        metavar="M",
        help="windows read per document with --long-documents select (default: a tenth of "
        f"the document's windows, at least {MIN_SELECTED_WINDOWS})",
    )


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
