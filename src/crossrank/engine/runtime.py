"""Where and in which number format the model runs.

Which format is the default is decided in ``precision.py`` (bf16 on CPUs with native
bf16 dot products when a probe finds the model's scores unchanged, else float32).

- CPU, ``"float32"``: the reference.
- CPU, ``"bfloat16"``: weights and activations in bfloat16. On CPUs with bfloat16 dot
  products (AVX512-BF16, AMX) matrix products run about twice as fast as float32 and
  DL19 nDCG@10 stays within 0.01 of float32 (docs/performance.md); on CPUs without them
  it is slower than float32.
- CPU, ``"int8"``: dynamic quantisation of every Linear layer (int8 weights, activations
  quantised per batch); the matrix products then use the CPU's int8 dot-product
  instructions (VNNI), several times faster than float32 for the same model, but it
  costs the bundled model 0.05 nDCG@10 on DL19.
- CUDA, default: float32 weights under bfloat16 autocast (float16 where the GPU has no
  bfloat16), so matrix products use tensor cores while LayerNorm and softmax stay
  accurate.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
QUANTISED = ("int8",)


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_dtype(dtype: str | torch.dtype | None) -> str | torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype in QUANTISED:
        return dtype
    if dtype not in DTYPES:
        choices = ", ".join([*DTYPES, *QUANTISED])
        raise ValueError(f"unknown dtype {dtype!r}; use one of {choices}")
    return DTYPES[dtype]


def place_model(
    model: nn.Module, device: torch.device, dtype: str | torch.dtype | None
) -> tuple[nn.Module, torch.dtype | None]:
    """Move ``model`` to ``device`` in ``dtype``; returns it with the autocast dtype to use."""
    dtype = check_dtype(dtype)
    if dtype == "int8":
        if device.type != "cpu":
            raise ValueError("dtype='int8' (dynamic quantisation) runs on CPU only")
        return quantise_linear_layers(model), None
    if dtype is None and device.type == "cuda":
        autocast = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return model.to(device), autocast
    return model.to(device=device, dtype=dtype or torch.float32), None


def quantise_linear_layers(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch marks its eager quantisation API as deprecated in favour of torchao,
        # which has no CPU int8 dynamic path for nn.Linear in this release.
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
