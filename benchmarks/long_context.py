"""Time and peak memory of scoring one long (query, document) pair with a base-shape
JinaBERT or ModernBERT (random weights).

Each measurement runs in a fresh process so that its peak RSS is its own. JinaBERT:
crossrank's attention (ALiBi bias built per batch, blocked over query rows) against a
straightforward eager implementation that materialises the full (heads, L, L) bias,
scores and probabilities, as the reference JinaBERT code does. ModernBERT: crossrank's
model code (local layers in query blocks, never L x L) against transformers' with its
eager attention, on the same checkpoint.

    python benchmarks/long_context.py                      # 1024 ... 8192, both
    python benchmarks/long_context.py --lengths 8192 --impl crossrank
    python benchmarks/long_context.py --family modernbert --lengths 512 8192

With both implementations, their outputs for the same pair (the last layer's [CLS] hidden
state, which the classifier reads) must agree within OUTPUT_TOLERANCE; crossrank must run at
every length, on CPU within MAX_PEAK_RSS_MB. The script exits 1 when a bound is broken.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import sys
import tempfile
import time

import torch

BASE_SHAPE = dict(
    vocab_size=30528,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=8192,
)
QUERY_TOKENS = 512
# Largest |difference| allowed between crossrank's and the eager [CLS] hidden state (values of
# order 1 after LayerNorm). fp32 on CPU: summation order only (measured: 2e-6 at 1024 and 2048
# tokens). CUDA runs bf16 autocast, whose rounding differs between the two attention codes;
# bound set from a CPU bf16 autocast run (1.1e-2 at 1024 tokens), not measured on a GPU here.
OUTPUT_TOLERANCE = {"cpu": 1e-4, "cuda": 0.25}
MAX_PEAK_RSS_MB = 2500  # crossrank, one pair of up to 8,192 tokens on CPU (docs/performance.md)
# Alibaba-NLP/gte-reranker-modernbert-base (22 layers, every third global, a 128-token window)
MODERNBERT_BASE_SHAPE = dict(
    vocab_size=50368,
    hidden_size=768,
    intermediate_size=1152,
    num_hidden_layers=22,
    num_attention_heads=12,
    global_attn_every_n_layers=3,
    local_attention=128,
    max_position_embeddings=8192,
    num_labels=1,
)


def eager_full_bias_attention(q, k, v, bias, slopes=None, dropout_p=0.0):
    """Textbook attention: the whole (batch, heads, L, L) score matrix at once."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    if slopes is not None:
        rows = torch.arange(q.shape[2], device=q.device)
        columns = torch.arange(k.shape[2], device=q.device)
        distance = (rows[:, None] - columns[None, :]).abs()
        alibi = -slopes.to(q.device)[:, None, None] * distance
        scores = scores + alibi
    return scores.softmax(-1) @ v


def timed_call(call, device: str) -> tuple:
    """``call()``'s result, wall seconds and CPU seconds, after a warm-up call on a GPU
    (kernel selection and allocator growth), synchronised so the GPU's work is counted."""
    if device == "cuda":
        call()
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    result = call()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start, time.process_time() - cpu


def peak_rss_mb() -> float:
    """This process's own peak RSS: Linux's VmHWM, since ru_maxrss keeps the peak of the
    parent it was forked from (a parent holding a model made every child read its size)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(device: str) -> float:
    """The process's peak RSS on CPU; the peak GPU memory allocated on a GPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def jinabert_forward(impl: str, ids: torch.Tensor, device: str):
    """The [CLS] hidden state of base-shape JinaBERT (what model(...) runs, the classifier
    applied too), with crossrank's attention or the eager one patched in."""
    from crossrank.models import attention
    from crossrank.models.jinabert import JinaBert, JinaBertConfig

    if impl == "eager":
        attention.attention = eager_full_bias_attention
    torch.manual_seed(0)
    model = JinaBert(JinaBertConfig(**BASE_SHAPE)).eval().to(device)
    types = torch.zeros_like(ids)
    types[:, QUERY_TOKENS:] = 1
    mask = torch.ones_like(ids)

    def forward() -> torch.Tensor:
        hidden = model.encode(ids, mask, types, first_only=True)
        model.classify(hidden)
        return hidden[:, 0]

    return forward


def modernbert_forward(impl: str, ids: torch.Tensor, device: str, folder: str):
    """The same for base-shape ModernBERT saved in ``folder``: crossrank's code, or
    transformers' with its eager attention (a full L x L score matrix per layer)."""
    mask = torch.ones_like(ids)
    if impl == "crossrank":
        from crossrank.models import load_model

        model = load_model(folder).to(device)

        def forward() -> torch.Tensor:
            hidden = model.encode(ids, mask)
            model.classifier(model.head(model.pool(hidden, mask)))
            return hidden[:, 0]

        return forward
    import transformers

    reference = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, attn_implementation="eager"
    )
    reference = reference.eval().to(device)
    return lambda: reference.model(input_ids=ids, attention_mask=mask)[0][:, 0]


def save_modernbert(folder: str) -> None:
    """gte-reranker-modernbert-base's shape, random weights, written by transformers."""
    import transformers

    torch.manual_seed(0)
    config = transformers.ModernBertConfig(**MODERNBERT_BASE_SHAPE)
    transformers.ModernBertForSequenceClassification(config).save_pretrained(folder)


def measure(family: str, impl: str, length: int, threads: int, device: str, folder, queue):
    torch.set_num_threads(threads)
    torch.manual_seed(0)  # the same pair in every process
    ids = torch.randint(1000, 30000, (1, length), device=device)
    if family == "jinabert":
        forward = jinabert_forward(impl, ids, device)
    else:
        forward = modernbert_forward(impl, ids, device, folder)
    loaded_rss = peak_rss_mb()
    with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=device == "cuda"):
        hidden, seconds, _ = timed_call(forward, device)
    peak_rss = peak_memory_mb(device)
    if device == "cuda":
        loaded_rss = 0.0
    queue.put(
        {
            "family": family,
            "impl": impl,
            "length": length,
            "seconds": seconds,
            "peak_rss_mb": peak_rss,
            "model_rss_mb": loaded_rss,
            "cls_hidden": hidden[0].float().cpu().tolist(),
        }
    )


def run(family: str, impl: str, length: int, threads: int, device: str, folder) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    arguments = (family, impl, length, threads, device, folder, queue)
    process = context.Process(target=measure, args=arguments)
    process.start()
    process.join()
    if process.exitcode != 0:
        return {"impl": impl, "length": length, "error": f"exit code {process.exitcode}"}
    return queue.get()


def check_bounds(results: list[dict], device: str) -> list[str]:
    """Each broken bound as a line to print: crossrank's memory on CPU, and eager's output
    against crossrank's at the same length (recorded on the eager rows; the hidden states
    themselves are dropped)."""
    broken, tolerance = [], OUTPUT_TOLERANCE[device.split(":")[0]]
    crossrank = {r["length"]: r for r in results if r["impl"] == "crossrank"}
    for r in results:
        if r["impl"] == "crossrank" and "error" in r:
            broken.append(f"crossrank failed at {r['length']} tokens: {r['error']}")
        elif r["impl"] == "crossrank" and device == "cpu" and r["peak_rss_mb"] > MAX_PEAK_RSS_MB:
            broken.append(
                f"crossrank peaks at {r['peak_rss_mb']:.0f} MB RSS at {r['length']} tokens "
                f"(bound {MAX_PEAK_RSS_MB} MB)"
            )
        ours = crossrank.get(r["length"], {})
        if r["impl"] != "eager" or "error" in r or "cls_hidden" not in ours:
            continue
        difference = max(
            abs(a - b) for a, b in zip(r["cls_hidden"], ours["cls_hidden"], strict=True)
        )
        r["max_abs_diff_vs_crossrank"] = difference
        print(f"{r['length']:>7} tokens: max |eager - crossrank| {difference:.2e}", flush=True)
        if not difference <= tolerance:
            broken.append(
                f"eager and crossrank outputs differ by {difference:.2e} at {r['length']} "
                f"tokens (bound {tolerance:.0e})"
            )
    for r in results:
        r.pop("cls_hidden", None)
    return broken


def plot(results: list[dict], path: str, device: str = "CPU", family: str = "JinaBERT") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for impl in sorted({r["impl"] for r in results}):
        rows = [r for r in results if r["impl"] == impl and "error" not in r]
        lengths = [r["length"] for r in rows]
        label = "transformers (eager)" if impl == "eager" and family == "ModernBERT" else impl
        left.plot(lengths, [r["seconds"] for r in rows], marker="o", label=label)
        right.plot(lengths, [r["peak_rss_mb"] / 1024 for r in rows], marker="o", label=label)
    memory = "peak GPU memory (GB)" if device == "CUDA" else "peak RSS (GB)"
    for axis, label in ((left, "seconds per pair"), (right, memory)):
        axis.set_xlabel("pair length (tokens)")
        axis.set_ylabel(label)
        axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"Base-shape {family}, one pair, {device}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


FAMILY_NAMES = {"jinabert": "JinaBERT", "modernbert": "ModernBERT"}


def print_row(r: dict) -> None:
    if "error" in r:
        print(f"{r['impl']:<10} {r['length']:>7} {r['error']}", flush=True)
        return
    print(
        f"{r['impl']:<10} {r['length']:>7} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12.0f} "
        f"{r['model_rss_mb']:>9.0f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--family", choices=["jinabert", "modernbert"], default="jinabert")
    parser.add_argument("--impl", choices=["crossrank", "eager", "both"], default="both")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (GPU memory instead of RSS)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--plot", help="write a PNG of time and memory against length")
    args = parser.parse_args()
    impls = ["crossrank", "eager"] if args.impl == "both" else [args.impl]
    results = []
    print(
        f"{'impl':<10} {'tokens':>7} {'seconds':>8} {'peak RSS MB':>12} {'model MB':>9}", flush=True
    )
    with tempfile.TemporaryDirectory() as folder:
        if args.family == "modernbert":
            save_modernbert(folder)
        for length in args.lengths:
            for impl in impls:
                results.append(run(args.family, impl, length, args.threads, args.device, folder))
                print_row(results[-1])
    broken = check_bounds(results, args.device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot(results, args.plot, args.device.upper(), FAMILY_NAMES[args.family])
    for line in broken:
        print(f"BOUND BROKEN: {line}", file=sys.stderr)
    if broken:
        sys.exit(1)


if __name__ == "__main__":
    main()
