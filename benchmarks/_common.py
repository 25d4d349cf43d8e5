"""Shared pieces of the benchmark scripts: timing statistics, the machine, tables, random-weight models.

Every benchmark compares against a baseline measured in the same run because the machines these run on are
shared and noisy: a ratio measured side by side (interleaved runs) is worth more than an absolute figure.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/bench_x.py` from a checkout without installing
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RANDOM_WEIGHTS_NOTE = ("model weights are RANDOM (no pretrained weights exist here): speed does not depend on the "
                       "weight values, but the labels mean nothing")


# --- statistics ---------------------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of a non-empty sequence."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    pos = (len(data) - 1) * q / 100.0
    lo, hi = int(pos), min(int(pos) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95, min, max (milliseconds) and the sample count of a list of durations in seconds."""
    ms = [s * 1000.0 for s in seconds]
    return {"n": len(ms), "median_ms": statistics.median(ms), "p95_ms": percentile(ms, 95),
            "min_ms": min(ms), "max_ms": max(ms)}


def timed(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> tuple[float, Any]:
    """(seconds, result) of one call; `sync` (e.g. torch.cuda.synchronize) runs before both clock reads."""
    if sync:
        sync()
    start = time.perf_counter()
    result = fn()
    if sync:
        sync()
    return time.perf_counter() - start, result


def cuda_sync(device: str) -> Callable[[], None] | None:
    if str(device).startswith("cuda"):
        import torch
        return torch.cuda.synchronize
    return None


# --- the machine --------------------------------------------------------------------------------------------

def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What the figures were measured on (goes into every JSON and docs/performance.md)."""
    import torch
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host_cpu": cpu, "nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                                           "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
    try:
        import open_clip
        info["open_clip"] = open_clip.__version__
    except Exception:  # noqa: BLE001 - informative only
        pass
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    try:
        info["git"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def machine_line(m: dict[str, Any], with_threads: bool = True) -> str:
    """The one-line machine header of every report (threads only where this process does the work)."""
    threads = f" | torch threads {m['torch_threads']}" if with_threads else ""
    gpu = f" | {m['gpu']}" if m.get("gpu") else ""
    return (f"{m['date']} | {m['host_cpu']} | nproc {m['nproc']}{threads} | torch {m['torch']} | "
            f"load avg {m['load_avg_1m']}{gpu}")


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


# --- output -------------------------------------------------------------------------------------------------

def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike | None, payload: dict) -> None:
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


# --- models -------------------------------------------------------------------------------------------------

def random_checkpoint(arch: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A checkpoint directory (model.safetensors + meta.json) of architecture `arch` with random weights.

    load_model(out_dir) reads it back exactly as it reads a real fine-tuned model, so the benchmarks measure
    the production loading and inference path. Reused when already written for the same arch and seed.
    """
    import torch

    from demoprof_ros.core.models import CHECKPOINT_FILE, META_FILE, build_model, model_config, save_checkpoint
    out = Path(out_dir)
    marker = out / META_FILE
    if marker.is_file() and (out / CHECKPOINT_FILE).is_file():
        meta = json.loads(marker.read_text(encoding="utf-8"))
        if meta.get("bench_arch") == arch and meta.get("bench_seed") == seed:
            return out
    cfg = model_config(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    return save_checkpoint(out, model, cfg, {"name": f"random-{arch}", "bench_arch": arch, "bench_seed": seed,
                                             "untrained": True, "warning": RANDOM_WEIGHTS_NOTE})


def set_threads(threads: int | None) -> None:
    """torch intra-op threads (None = torch's default: one per physical core)."""
    if threads:
        import torch
        torch.set_num_threads(int(threads))


HOG_CODE = {
    # a plain busy loop: any other software keeping a core busy
    "python": "while True: pass",
    # another PyTorch process (a second model on the robot): small GEMMs on torch's default OpenMP threads
    "torch": "import torch\na = torch.randn(256, 256)\nwhile True:\n    a @ a",
}


class CpuHogs:
    """N busy child processes: the other software of a robot competing for its CPU cores.

    kind "python" is a plain busy loop; "torch" is another PyTorch process whose OpenMP threads compete
    with ours. Used as a context manager; the children are this object's own, ended by their process ids.
    """

    def __init__(self, n: int, kind: str = "python") -> None:
        if kind not in HOG_CODE:
            raise ValueError(f"hog kind must be one of {sorted(HOG_CODE)}, got {kind!r}")
        self.n, self.kind = n, kind
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "CpuHogs":
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", HOG_CODE[self.kind]],
                                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        if self.n and self.kind == "torch":
            time.sleep(3.0)  # let them import torch and start competing
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(10)
        self.procs.clear()
