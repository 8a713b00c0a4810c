"""Reference workloads: small torch.nn models with seeded weights, compared with a CPU float64 reference.

Imported only by the worker process (it imports torch). Every model is built
in code from ``torch.nn`` with a fixed seed, so a run needs no download and
two runs on two machines compute the same function.

Tolerances (``|device - reference| <= atol + rtol * |reference|`` for every
element; the reference is the same model in float64 on the CPU, its weights
and inputs first rounded to the tested dtype so that only the arithmetic is
measured, not the rounding of the weights):

========  ======  ======  ==========================================================
dtype     atol    rtol    why
========  ======  ======  ==========================================================
float32   1e-4    1e-3    ~1000 ulp of float32 after a dozen layers, TF32 switched off
float16   1e-2    1e-2    ~10 ulp of float16 (eps 9.8e-4), accumulations in half
bfloat16  6e-2    6e-2    ~8 ulp of bfloat16 (eps 7.8e-3), accumulations in bfloat16
========  ======  ======  ==========================================================
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (1e-4, 1e-3),
    "float16": (1e-2, 1e-2),
    "bfloat16": (6e-2, 6e-2),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SEED = 20261122
MIN_ITERATIONS = 3
STEADY_BUDGET_S = 1.0


class SmallCNN(nn.Module):
    """An image classifier of the size that keeps a CPU run short: conv-BN-ReLU blocks, pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 16, 64), nn.GELU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EncoderBlock(nn.Module):
    """One transformer encoder block (self-attention, feed-forward, layer norms), as in speech and text models."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, dropout=0.0,
                                                activation="gelu", batch_first=True, norm_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class AudioNet(nn.Module):
    """A Demucs-like waveform network: strided 1-D conv encoder with GLU, a bidirectional LSTM, a transposed-conv decoder."""

    def __init__(self, channels: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv1d(2, channels, 8, stride=4, padding=2), nn.ReLU(), nn.Conv1d(channels, 2 * channels, 1), nn.GLU(1))
        self.enc2 = nn.Sequential(nn.Conv1d(channels, hidden, 8, stride=4, padding=2), nn.ReLU(), nn.Conv1d(hidden, 2 * hidden, 1), nn.GLU(1))
        self.lstm = nn.LSTM(hidden, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.proj = nn.Linear(2 * hidden, hidden)
        self.dec2 = nn.Sequential(nn.Conv1d(hidden, 2 * hidden, 3, padding=1), nn.GLU(1), nn.ConvTranspose1d(hidden, channels, 8, stride=4, padding=2))
        self.dec1 = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, 2 * channels, 3, padding=1), nn.GLU(1),
                                  nn.ConvTranspose1d(channels, 2, 8, stride=4, padding=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        y, _ = self.lstm(e2.transpose(1, 2))
        y = self.proj(y).transpose(1, 2) + e2
        y = self.dec2(y)
        return self.dec1(y + e1)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    make_model: Callable[[], nn.Module]
    input_shape: tuple[int, ...]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("cnn", "small CNN, 3x32x32 images, batch 4", SmallCNN, (4, 3, 32, 32)),
        Workload("transformer", "transformer encoder block, d_model 64, 4 heads, 4x32 tokens", EncoderBlock, (4, 32, 64)),
        Workload("audio", "Demucs-like conv1d + BiLSTM + transposed conv, stereo 2048 samples", AudioNet, (1, 2, 2048)),
    )
}


def build(workload: Workload) -> tuple[nn.Module, torch.Tensor]:
    """The model with seeded weights (BatchNorm statistics too) and a seeded input, in float32 on the CPU."""
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    model = workload.make_model().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                # BatchNorm2d's statistics are None only with track_running_stats=False, which no workload sets.
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
    x = torch.randn(workload.input_shape, generator=gen)
    return model, x


def compare(result: torch.Tensor, reference: torch.Tensor, atol: float, rtol: float) -> dict[str, Any]:
    """Max abs/rel error, the worst element (largest error measured against its own tolerance) and the verdict."""
    out = result.detach().to("cpu", torch.float64)
    ref = reference.detach().to("cpu", torch.float64)
    if out.shape != ref.shape:
        return {"pass": False, "error": f"shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}"}
    diff = (out - ref).abs()
    finite = bool(torch.isfinite(out).all())
    diff = torch.where(torch.isfinite(diff), diff, torch.full_like(diff, float("inf")))
    rel = diff / ref.abs().clamp_min(1e-12)
    ratio = diff / (atol + rtol * ref.abs())
    flat = int(torch.argmax(ratio).item())
    index = _unravel(flat, tuple(out.shape))
    return {
        "pass": finite and bool((ratio <= 1.0).all()),
        "finite": finite,
        "max_abs_err": float(diff.max()),
        "max_rel_err": float(rel.max()),
        "worst_index": list(index),
        "worst_value": float(out.reshape(-1)[flat]),
        "worst_reference": float(ref.reshape(-1)[flat]),
        "worst_ratio": float(ratio.reshape(-1)[flat]),
        "reference_max_abs": float(ref.abs().max()),
        "elements": int(out.numel()),
    }


def _unravel(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    # torch.unravel_index is not in the torch 2.1 that IPEX 2.1 pairs with.
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return tuple(reversed(index))


def _round_to(model: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor]:
    """float64 copies of the model and input whose values are exactly representable in ``dtype``."""
    import copy

    ref_model = copy.deepcopy(model).to(dtype).to(torch.float64)
    return ref_model, x.to(dtype).to(torch.float64)


def run_workload(
    workload: Workload,
    device: str,
    dtypes: Sequence[str],
    *,
    iterations: int,
    sync: Callable[[], None],
    perturb: float = 0.0,
) -> list[dict[str, Any]]:
    """One entry per dtype: errors against the float64 reference, first-call and steady-state time."""
    model, x = build(workload)
    results = []
    for name in dtypes:
        dtype = DTYPES[name]
        atol, rtol = TOLERANCES[name]
        entry: dict[str, Any] = {"workload": workload.name, "dtype": name, "device": device,
                                 "tolerance": {"atol": atol, "rtol": rtol}, "description": workload.description}
        try:
            with torch.inference_mode():
                ref_model, ref_x = _round_to(model, x, dtype)
                reference = ref_model(ref_x)
                dev_model = _to_device(model, device, dtype)
                dev_x = x.to(device=device, dtype=dtype)
                start = time.perf_counter()
                out = dev_model(dev_x)
                sync()
                entry["first_call_s"] = time.perf_counter() - start
                times: list[float] = []
                # Up to `iterations`, but a slow dtype (bfloat16 LSTM on a CPU) stops after STEADY_BUDGET_S once
                # it has MIN_ITERATIONS: the suite must stay under a minute on a busy 2-core CI machine.
                while len(times) < iterations and (len(times) < MIN_ITERATIONS or sum(times) < STEADY_BUDGET_S):
                    start = time.perf_counter()
                    dev_model(dev_x)
                    sync()
                    times.append(time.perf_counter() - start)
                entry["steady_s"] = statistics.median(times) if times else None
                entry["steady_min_s"] = min(times) if times else None
                entry["iterations"] = len(times)
                if perturb:
                    out = out + perturb  # test hook: a deliberately wrong result
                entry.update(compare(out, reference, atol, rtol))
        except Exception as e:  # a kernel that fails is a result to report, not a crash
            entry.update({"pass": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
        results.append(entry)
    return results


def _to_device(model: nn.Module, device: str, dtype: torch.dtype) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(device=device, dtype=dtype).eval()
