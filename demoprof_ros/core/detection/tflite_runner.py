"""Run a .tflite model on CPU: LiteRT (Google's TFLite runtime, XNNPACK kernels) when installed, else OpenCV dnn.

LiteRT (`ai-edge-litert`, Apache-2.0, installed `--no-deps` from requirements-detect.txt; its interpreter needs
only numpy) is the runtime the MediaPipe models were built for, and about twice as fast as cv2.dnn on them
(BlazeFace full-range, one thread: 7.0 vs 14.1 ms per run, docs/performance.md §5). OpenCV's reader stays as
the fallback so a machine without the wheel still detects faces; the runner's `name` says which one runs.

Both follow the process's OpenCV thread setting (cv2.setNumThreads, read on every call), so one knob sets the
threads of every detector. Inputs are NHWC float32; outputs are returned by output name.
"""
from __future__ import annotations

import logging
import os
from importlib import metadata
from typing import Any

import cv2
import numpy as np

_log = logging.getLogger(__name__)

RUNTIMES = ("auto", "litert", "opencv")


class RuntimeUnavailable(RuntimeError):
    """The asked-for runtime cannot run here (package missing, model unreadable by it)."""


class LiteRTRunner:
    """ai_edge_litert.Interpreter; its thread count is fixed, so it is rebuilt when cv2.getNumThreads() changes."""

    fallback = ""  # why a slower runtime runs instead (load_tflite sets it on the OpenCV runner)

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise RuntimeUnavailable(f"ai-edge-litert is not installed ({error})") from error
        self._interpreter_class = Interpreter
        self.path = str(path)
        self.name = f"LiteRT {metadata.version('ai-edge-litert')}"
        self._threads = -1
        self._load(max(1, cv2.getNumThreads()))

    def _load(self, threads: int) -> None:
        try:
            interpreter = self._interpreter_class(model_path=self.path, num_threads=threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise RuntimeUnavailable(f"LiteRT cannot load {self.path} ({error})") from error
        self._interpreter, self._threads = interpreter, threads
        self._input = interpreter.get_input_details()[0]["index"]
        self._outputs = [(d["name"], d["index"]) for d in interpreter.get_output_details()]

    def __call__(self, nhwc: np.ndarray) -> dict[str, np.ndarray]:
        threads = max(1, cv2.getNumThreads())
        if threads != self._threads:
            self._load(threads)
        self._interpreter.set_tensor(self._input, nhwc)
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(index) for name, index in self._outputs}


class OpenCVRunner:
    """cv2.dnn.readNetFromTFLite (OpenCV >= 4.8); NCHW inside, so the NHWC input is transposed."""

    fallback = ""

    def __init__(self, path: str | os.PathLike) -> None:
        if not hasattr(cv2.dnn, "readNetFromTFLite"):
            raise RuntimeUnavailable(f"OpenCV {cv2.__version__} cannot read .tflite models (needs >= 4.8)")
        try:
            self.net = cv2.dnn.readNetFromTFLite(str(path))
        except cv2.error as error:
            raise RuntimeUnavailable(f"{path}: OpenCV cannot load it as a TFLite model "
                                     f"({str(error).strip().splitlines()[-1]})") from error
        self.path = str(path)
        self.name = f"OpenCV dnn {cv2.__version__}"
        self._outputs = list(self.net.getUnconnectedOutLayersNames())

    def __call__(self, nhwc: np.ndarray) -> dict[str, np.ndarray]:
        self.net.setInput(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))
        return dict(zip(self._outputs, self.net.forward(self._outputs)))


def load_tflite(path: str | os.PathLike, runtime: str = "auto") -> Any:
    """A runner for `path`: "litert", "opencv", or "auto" = LiteRT, else OpenCV with the reason in `fallback`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "opencv":
        return OpenCVRunner(path)
    try:
        return LiteRTRunner(path)
    except RuntimeUnavailable as error:
        if runtime == "litert":
            raise
        runner = OpenCVRunner(path)
        runner.fallback = str(error)
        _log.warning("%s: %s; running it on %s instead (about 2x slower; `make venv` installs LiteRT from "
                     "requirements-detect.txt)", path, error, runner.name)
        return runner
