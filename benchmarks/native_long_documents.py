"""The native long-document path: one (512-token query, N-token document) pair on
base-shape JinaBERT (random weights), for N = 256 ... 8192, beside the figures users
quote for the original model (156 ms at 256 document tokens to 7,068 ms at 4,096).

Each length runs in a fresh process, so its peak RSS is its own.
Besides wall time it records the process's CPU time (user + system): on a machine whose
cores are shared with other jobs, wall time grows with the load and CPU time does not,
so with one thread CPU time is the honest stand-in for the latency on a quiet core.
On a GPU (`--device cuda`, bf16 autocast after one warm-up call, as long_context.py)
the peak is the GPU memory allocated, and wall time is the measure.

    python benchmarks/native_long_documents.py --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp

import torch

from long_context import BASE_SHAPE, QUERY_TOKENS, peak_memory_mb, timed_call

# What users quote for the original (jina-reranker-v1-base-en), query of 512 tokens.
QUOTED_MS = {256: 156, 4096: 7068}


def measure(document_tokens: int, threads: int, device: str, queue) -> None:
    """One forward pass of crossrank's JinaBERT over a (query, document) pair."""
    torch.set_num_threads(threads)
    from crossrank.models.jinabert import JinaBert, JinaBertConfig

    torch.manual_seed(0)
    model = JinaBert(JinaBertConfig(**BASE_SHAPE)).eval().to(device)
    length = QUERY_TOKENS + document_tokens
    ids = torch.randint(1000, 30000, (1, length), device=device)
    types = torch.zeros_like(ids)
    types[:, QUERY_TOKENS:] = 1
    mask = torch.ones_like(ids)
    with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=device == "cuda"):
        _, seconds, cpu = timed_call(lambda: model(ids, mask, types), device)
    queue.put({"document_tokens": document_tokens, "total_tokens": length,
               "seconds": seconds, "cpu_seconds": cpu,
               "peak_rss_mb": peak_memory_mb(device)})  # fmt: skip


def run(document_tokens: int, threads: int, device: str) -> dict:
    context = mp.get_context("spawn")  # a fresh process: its peak RSS is this length's
    queue = context.Queue()
    process = context.Process(target=measure, args=(document_tokens, threads, device, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--document-tokens", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (GPU memory as the peak)")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    peak = "peak GPU MB" if args.device == "cuda" else "peak RSS MB"
    print(f"{'doc tokens':>10} {'total':>6} {'wall s':>8} {'CPU s':>8} {peak:>12} "
          f"{'quoted ms':>10}", flush=True)  # fmt: skip
    for tokens in args.document_tokens:
        row = run(tokens, args.threads, args.device)
        rows.append(row)
        print(
            f"{tokens:>10} {row['total_tokens']:>6} {row['seconds']:>8.2f} "
            f"{row['cpu_seconds']:>8.2f} {row['peak_rss_mb']:>12.0f} "
            f"{QUOTED_MS.get(tokens, ''):>10}",
            flush=True,
        )
        if args.json:
            with open(args.json, "w") as out:
                json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
