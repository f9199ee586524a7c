"""Where models run and in which precision: the one place that turns ``--device`` / ``--dtype`` into torch objects.

Several processes (``accelerate launch --multi_gpu --num_processes N python -m backdoor_core sanitize ...`` on
GPUs, ``torchrun --nproc_per_node N`` on CPUs): ``auto``/``cuda`` give each process its own GPU (``LOCAL_RANK``),
training shards the batches and averages gradients through Accelerate, and only the main process saves and
prints (``is_main_process``). The non-training forward passes (scan statistics, evaluation) run in full on every
process.

``auto`` picks CUDA when a GPU is visible, else Apple's MPS, else the CPU. The default dtype is float32 on every
device (our choice: the attention statistics, the KL alignment term and small-batch fine-tuning are all
numerically delicate; half precision is an explicit opt-in for large models on a GPU).
"""

from __future__ import annotations

import os

import torch

from . import settings as S

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_DEVICE = S.DEVICE
DEFAULT_DTYPE = S.DTYPE


class DeviceError(ValueError):
    """The requested device or dtype is unknown or not available on this machine."""


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity set where the system has one (a container or ``taskset``
    limit), else ``os.cpu_count()``; at least 1. The one count the busy-machine check and the app's job slots read."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The concrete devices usable here, best first (always ends with ``"cpu"``)."""
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if _mps_available():
        out.append("mps")
    return out + ["cpu"]


def resolve_device(name: str | torch.device | None = DEFAULT_DEVICE) -> torch.device:
    """``"auto"``/``None`` -> the best available device; ``"cpu"``/``"cuda"``/``"cuda:1"``/``"mps"`` checked.

    Raises ``DeviceError`` with one plain line when the device is unknown or absent.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        name = available_devices()[0]
    kind = name.split(":", 1)[0]
    if kind == "cuda" and ":" not in name and torch.cuda.is_available() and local_rank() is not None:
        name = f"cuda:{local_rank() % torch.cuda.device_count()}"  # one GPU per process under a launcher
    if kind not in DEVICE_CHOICES:
        raise DeviceError(f"Unknown device '{name}': choose one of {', '.join(DEVICE_CHOICES)}.")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("The CUDA device was asked for, but no CUDA GPU is visible to torch here; use auto or cpu.")
        if ":" in name:
            index = int(name.split(":", 1)[1]) if name.split(":", 1)[1].isdigit() else -1
            if not 0 <= index < torch.cuda.device_count():
                raise DeviceError(f"'{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
    if kind == "mps" and not _mps_available():
        raise DeviceError("The MPS device was asked for, but Apple's MPS backend is not available here; use auto or cpu.")
    return torch.device(name)


def local_rank() -> int | None:
    """This process's rank on its machine under ``accelerate launch`` / ``torchrun`` (None when not launched)."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None and value.isdigit() else None


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a multi-process launch: only the main process saves and prints."""
    rank = os.environ.get("RANK")
    return rank is None or not rank.isdigit() or int(rank) == 0


def resolve_dtype(name: str | torch.dtype | None = DEFAULT_DTYPE, device: torch.device | None = None) -> torch.dtype:
    """``"auto"``/``None`` -> float32; ``"float16"`` is refused on the CPU (slow and unsupported by many ops)."""
    if isinstance(name, torch.dtype):
        return name
    name = (name or "auto").strip().lower()
    if name not in DTYPE_CHOICES:
        raise DeviceError(f"Unknown dtype '{name}': choose one of {', '.join(DTYPE_CHOICES)}.")
    if name == "auto":
        return torch.float32
    if name == "float16" and device is not None and torch.device(device).type == "cpu":
        raise DeviceError("float16 is not supported on the CPU; use float32 or bfloat16.")
    return getattr(torch, name)


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux); empty elsewhere or when unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device | str) -> bool:
    """True where bfloat16 matrix products run in hardware: a CUDA GPU that supports bf16, or a CPU with AMX
    (``amx_bf16``) or AVX512-BF16 (``avx512_bf16``). On other CPUs bf16 is emulated and slower than float32."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())
    return False


def resolve_precision(name: str | None, model) -> str:
    """A training precision of ``settings.PRECISIONS`` for ``model`` -> ``"fp32"`` or ``"bf16-mixed"``.

    ``"auto"``/``None``: bf16-mixed when the model's weights are float32 and its device multiplies bf16 natively
    (``native_bf16``), else fp32. Mixed precision needs float32 weights: a model loaded in half precision trains
    in its own dtype (``"fp32"`` here means "no autocast")."""
    name = (name or "auto").strip().lower()
    if name not in S.PRECISIONS:
        raise DeviceError(f"Unknown precision '{name}': choose one of {', '.join(S.PRECISIONS)}.")
    param = next(model.parameters())
    if name == "auto":
        name = "bf16-mixed" if param.dtype == torch.float32 and native_bf16(param.device) else "fp32"
    if name == "bf16-mixed" and param.dtype != torch.float32:
        return "fp32"
    return name


def add_device_args(parser) -> None:
    """``--device`` and ``--dtype`` for a CLI verb (``resolve_device`` / ``resolve_dtype`` read them)."""
    parser.add_argument("--device", default=DEFAULT_DEVICE, metavar="{auto,cpu,cuda,cuda:N,mps}",
                        help="where the model runs (default auto: CUDA, else MPS, else CPU)")
    parser.add_argument("--dtype", default=DEFAULT_DTYPE, choices=DTYPE_CHOICES,
                        help="model precision (default auto = float32)")
