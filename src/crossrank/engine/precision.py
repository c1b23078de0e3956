"""Which number format a model runs in when the user does not say: one rule for the
library, the CLI, the server and batch scoring.

- ``dtype`` given: that, always; else the ``CROSSRANK_DTYPE`` environment variable, if set
  (a deployment's or a test suite's fixed choice, e.g. ``CROSSRANK_DTYPE=float32``).
- CUDA: float32 weights under bfloat16 autocast (float16 where the GPU lacks bfloat16).
- CPU with native bfloat16 dot products (AVX512-BF16 or AMX): bfloat16, which runs the
  matrix products about twice as fast as float32, if the model's bfloat16 scores stay
  within ``BF16_TOLERANCE`` of its float32 scores on a fixed probe set of pairs, checked
  once at load; float32 otherwise.
- Any other CPU: float32. Without those instructions bfloat16 matrix products are
  emulated and run several times slower than float32 (docs/performance.md).

The decision and its reason are logged at INFO (logger ``crossrank.engine.precision``) and
kept as ``Reranker.precision``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from crossrank.engine.runtime import check_dtype

log = logging.getLogger(__name__)

DTYPE_ENV = "CROSSRANK_DTYPE"

# Largest |bf16 score - fp32 score| (relevance scores, sigmoid of the logit, in [0, 1]) on the
# probe pairs for bf16 to become the default. The bundled model's bf16 scores move by at most
# 0.0058 on the probe pairs (0.018 over 1,000 DL19 pairs), for -0.0025 nDCG@10 on DL19; its
# int8 path, which costs 0.017 nDCG@10, moves them by 0.39 on the probe pairs. See
# docs/performance.md, "Default number format".
BF16_TOLERANCE = 0.01

# A fixed, varied probe set: for each query a relevant passage, a related but unhelpful one
# and an unrelated one, 20 to 90 tokens per pair. Sixteen short pairs keep the check under a
# second for a MiniLM-sized model and a few seconds for a base-sized one at one thread.
PROBE_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "what causes the seasons on earth",
        "The seasons are caused by the tilt of Earth's rotational axis relative to its orbital "
        "plane, which changes how directly sunlight strikes each hemisphere over the year.",
    ),
    (
        "what causes the seasons on earth",
        "Many cultures hold festivals at the start of spring, often celebrating planting and "
        "the return of longer days.",
    ),
    (
        "what causes the seasons on earth",
        "A sourdough starter is a fermented mixture of flour and water used to leaven bread.",
    ),
    (
        "what causes the seasons on earth",
        "Earth is closest to the Sun in early January, yet the Northern Hemisphere has winter "
        "then, so distance is not what drives the seasons.",
    ),
    (
        "how long should you boil an egg for a soft yolk",
        "For a soft, runny yolk, lower the egg into boiling water and cook it for six to seven "
        "minutes, then cool it in ice water before peeling.",
    ),
    (
        "how long should you boil an egg for a soft yolk",
        "Chickens lay more eggs when they get fourteen or more hours of light a day.",
    ),
    (
        "how long should you boil an egg for a soft yolk",
        "The stock exchange closed higher on Friday after a week of volatile trading.",
    ),
    (
        "symptoms of vitamin d deficiency",
        "Vitamin D deficiency can cause bone pain, muscle weakness, fatigue and, in children, "
        "rickets; severe deficiency in adults leads to osteomalacia.",
    ),
    (
        "symptoms of vitamin d deficiency",
        "Vitamin C is found in citrus fruits, peppers and strawberries, and helps the body "
        "absorb iron.",
    ),
    (
        "symptoms of vitamin d deficiency",
        "The bridge was designed by a team of engineers and opened to traffic in 1932 after "
        "six years of construction.",
    ),
    (
        "python list comprehension with condition",
        "In Python, [x * 2 for x in values if x > 0] builds a new list from the positive items "
        "of values, doubling each; the condition after 'if' filters the items.",
    ),
    (
        "python list comprehension with condition",
        "Pythons are large non-venomous snakes found in Africa, Asia and Australia that kill "
        "their prey by constriction.",
    ),
    (
        "who wrote the declaration of independence",
        "Thomas Jefferson drafted the Declaration of Independence in June 1776, with edits by "
        "John Adams, Benjamin Franklin and the Continental Congress.",
    ),
    (
        "who wrote the declaration of independence",
        "The Constitution of the United States was signed in Philadelphia in 1787 and ratified "
        "the following year.",
    ),
    (
        "who wrote the declaration of independence",
        "Independence Day fireworks are a tradition in many American towns, usually launched "
        "after dark on the fourth of July.",
    ),
    (
        "best way to reduce latency of a web api",
        "To cut API latency, cache frequent responses, keep connections alive, move slow work "
        "to background queues and put servers close to the users.",
    ),
)


@dataclass(frozen=True)
class Precision:
    """The chosen number format: what ``place_model`` receives, and why."""

    dtype: torch.dtype | str | None  # None: the device default (CUDA: bf16 autocast)
    reason: str

    @property
    def name(self) -> str:
        if self.dtype is None:
            return "float32 weights, bfloat16 autocast"
        return self.dtype if isinstance(self.dtype, str) else str(self.dtype).removeprefix("torch.")

    def __str__(self) -> str:
        return f"dtype {self.name}: {self.reason}"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def native_bf16_instructions() -> str | None:
    """'AMX' or 'AVX512-BF16' when this CPU has bfloat16 dot-product instructions, else None.

    torch's own checks (what its oneDNN kernels dispatch on) come first; /proc/cpuinfo is the
    fallback where a torch build lacks them.
    """
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if amx is not None and avx512_bf16 is not None:
        return "AMX" if amx() else "AVX512-BF16" if avx512_bf16() else None
    flags = cpu_flags()
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else None


def dtype_from_environment() -> torch.dtype | str:
    value = os.environ[DTYPE_ENV].strip()
    try:
        return check_dtype(value)
    except ValueError as error:
        raise ValueError(f"{DTYPE_ENV}={value!r}: {error}") from None


def choose_precision(
    requested: torch.dtype | str | None,
    device: torch.device,
    probe: Callable[[torch.dtype], torch.Tensor],
    tolerance: float | None = None,
) -> Precision:
    """The number format for a model on ``device`` (see the module docstring).

    ``probe(dtype)`` returns the model's relevance scores on ``PROBE_PAIRS`` in ``dtype``;
    it is called only on a CPU with native bf16 instructions and no ``requested`` dtype.
    ``tolerance`` defaults to ``BF16_TOLERANCE``.
    """
    tolerance = BF16_TOLERANCE if tolerance is None else tolerance
    if requested is not None:
        return Precision(requested, "requested")
    if os.environ.get(DTYPE_ENV, "").strip():
        return Precision(dtype_from_environment(), f"set by {DTYPE_ENV}")
    if device.type == "cuda":
        return Precision(None, "CUDA default: matrix products in bf16 on tensor cores")
    if device.type != "cpu":
        return Precision(torch.float32, f"default on {device.type}")
    instructions = native_bf16_instructions()
    if instructions is None:
        return Precision(
            torch.float32,
            "CPU has neither AVX512-BF16 nor AMX, so bf16 matrix products would be emulated "
            "and slower than fp32",
        )
    start = time.perf_counter()
    change = float((probe(torch.bfloat16) - probe(torch.float32)).abs().max())
    seconds = time.perf_counter() - start
    measured = (
        f"probe max |Δscore| {change:.4f} (bf16 vs fp32, {len(PROBE_PAIRS)} pairs, {seconds:.1f} s)"
    )
    if change <= tolerance:
        return Precision(torch.bfloat16, f"CPU has {instructions} and {measured} <= {tolerance}")
    return Precision(
        torch.float32,
        f"CPU has {instructions} but {measured} > {tolerance}: this model needs fp32",
    )


@torch.inference_mode()
def probe_scores(model: torch.nn.Module, encoder, dtype: torch.dtype) -> torch.Tensor:
    """Relevance scores of a CPU model on ``PROBE_PAIRS``, computed in ``dtype``.

    The weights are cast for this call only (``functional_call``), so the float32 model is
    untouched and no second full-size copy is made; the cast is the one ``model.to(dtype)``
    makes, so the scores are those the model would give after it.
    """
    from crossrank.engine.batching import collate

    features = [f for query, document in PROBE_PAIRS for f in encoder.encode(query, [document])]
    inputs = collate(features, model.config.pad_token_id, torch.device("cpu"))
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    cast = {name: t.to(dtype) if t.is_floating_point() else t for name, t in tensors.items()}
    logits = torch.func.functional_call(model, cast, (), inputs)
    return torch.sigmoid(logits[:, 0].float())
