"""ROS parameters <-> ProfilerConfig / TrackerConfig / ScheduleConfig / node settings.

Every parameter is declared with dynamic typing so that a wrong type in a params file or a `-p` override does
not kill the process at start-up with rclpy's terse type exception; instead `on_configure` checks each value
here and fails with a message naming the parameter, what was expected and what was given. The pipeline's
defaults come from ProfilerConfig and TrackerConfig, so config/profiler.yaml, the CLI and the node cannot drift.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..core.images import MAX_PIXELS
from ..core.profiler import ConfigError, ProfilerConfig
from ..core.prompts import PromptError, load_prompts
from ..core.schedule import ScheduleConfig
from ..core.taxonomy import ATTRIBUTE_NAMES
from ..core.tracking import TrackerConfig

RELIABILITY = ("best_effort", "reliable")
TRANSPORTS = ("auto", "raw", "compressed", "both")

_PROFILER_DOC = {
    "model": "'auto' (best present: farl, clip, fine-tuned, shipped, tiny), 'farl', 'clip', 'tiny', a checkpoint or a "
             "fine-tuned folder",
    "models_dir": "where model and detector files live ('' = the default models folder)",
    "device": "'cpu', 'cuda' or 'cuda:N'",
    "dtype": "fp32, fp16 or bf16",
    "min_confidence": "top probability below which an attribute is reported as 'undetermined'",
    "joint_top_k": "how many full descriptions (age + gender + race) to report per face (0 = none)",
    "prompts_file": "YAML prompt set ('' = the built-in prompts or the fine-tuned model's own)",
    "detectors": "face detector chain, first available wins: scrfd, yunet, mtcnn, blazeface, haar",
    "scrfd_path": "SCRFD onnx file ('' = look in models_dir)",
    "yunet_path": "YuNet onnx file ('' = look in models_dir)",
    "detection_threshold": "least detector score of a face",
    "min_face_size": "smallest face side in pixels",
    "max_faces": "most faces profiled per frame (largest first)",
    "max_side": "frames larger than this (pixels) are detected on a downscaled copy",
    "tiles": "blazeface: also detect in this many overlapping tiles along the shorter side (0 = whole frame)",
    "margin": "context around the face box in the crop, as a fraction of the box ('auto' = the model's own: "
              "meta.json crop_margin, else 0.25)",
    "align": "rotate crops upright from the eye landmarks (detectors with landmarks only)",
    "batch_size": "face crops per model batch",
}
_TRACKING_DOC = {
    "min_hits": "frames a face must be seen in before it is reported",
    "max_misses": "consecutive frames without the face after which its track (and id) is dropped",
    "iou_threshold": "least box overlap that matches a face to its track",
    "max_center_distance": "otherwise, largest centre distance (in track box diagonals) that still matches",
    "fusion": "how attribute estimates are fused over a track: ema, window or none (memory in camera frames, "
              "scored, skipped or dropped)",
    "alpha": "ema: weight of the newest frame (memory ~1/alpha frames)",
    "window": "window: number of latest frames averaged",
    "switch_margin": "a face's published label changes only when another class's fused probability beats it by "
                     "more than this (0 = always the arg-max)",
    "frame_rate": "camera rate (Hz) that turns the time between two scorings into frames for the fusion memory, "
                  "so dropped frames count too (0 = count processed frames)",
}
_SCHEDULE_DOC = {
    "enabled": "score a tracked face only when new, unsettled, moved or due for a refresh (false: every face, "
               "every frame)",
    "refresh_frames": "a settled face is re-scored at least every this many processed frames",
    "min_scores": "a face is unsettled until scored this many times",
    "stable_confidence": "... or while a fused attribute's top probability is below this (or its label just changed)",
    "unsettled_frames": "an unsettled face is re-scored every this many frames",
    "rescore_iou": "re-score when the box overlaps the box at the last scoring by less than this",
    "rescore_scale": "... or the face's size changed by more than this factor",
    "max_scored_per_frame": "most already-scored faces re-scored per frame (0 = no cap; new faces always are)",
}
#: Node settings: name -> (default, description).
_NODE_PARAMS: dict[str, tuple[Any, str]] = {
    "max_rate": (0.0, "most frames profiled per second (0 = as fast as the model allows)"),
    "reliability": ("best_effort", "QoS reliability of the image subscriptions: best_effort or reliable"),
    "transport": ("auto", "image input: auto (subscribe to image and image/compressed, keep the first that "
                          "delivers), raw, compressed or both"),
    "debug_image": (False, "publish ~/debug_image with boxes and labels drawn"),
    "publish_hri": (True, "publish ROS4HRI /humans/faces/... where hri_msgs is installed"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages"),
    "max_image_pixels": (MAX_PIXELS, "largest frame accepted, in pixels (width x height); a compressed frame "
                                      "declaring more is refused before decoding"),
    "autostart": (True, "configure and activate at start (false: wait for a lifecycle manager)"),
}
#: Parameters naming a file or folder: a bare "~" there is a YAML null, not the home directory.
_PATH_PARAMS = ("model", "models_dir", "prompts_file", "scrfd_path", "yunet_path")
#: Parameters that take 'auto' (the model decides) or a number.
_AUTO_OR_NUMBER = ("margin",)
_MODEL_EXPECTED = "'auto', 'farl', 'clip', 'shipped', 'tiny', a checkpoint file or a fine-tuned folder"
#: Parameters rclpy or ROS tools may set on any node; not ours, not an error.
_FOREIGN = ("use_sim_time", "start_type_description_service", "qos_overrides.")


def parameter_table() -> dict[str, tuple[Any, str]]:
    """Every parameter of the node: name -> (default, description)."""
    defaults = ProfilerConfig()
    table: dict[str, tuple[Any, str]] = {}
    for f in dataclasses.fields(ProfilerConfig):
        if f.name in ("extra", "attributes"):
            continue
        value = getattr(defaults, f.name)
        table[f.name] = (list(value) if isinstance(value, tuple) else value, _PROFILER_DOC.get(f.name, ""))
    for name in ATTRIBUTE_NAMES:
        table[f"attributes.{name}"] = (name in defaults.attributes, f"estimate {name} (false switches it off)")
    tracker = TrackerConfig()
    for f in dataclasses.fields(TrackerConfig):
        if f.name == "min_confidence":  # the same bar as the per-frame results
            continue
        table[f"tracking.{f.name}"] = (getattr(tracker, f.name), _TRACKING_DOC.get(f.name, ""))
    schedule = ScheduleConfig()
    for f in dataclasses.fields(ScheduleConfig):
        table[f"schedule.{f.name}"] = (getattr(schedule, f.name), _SCHEDULE_DOC.get(f.name, ""))
    table.update(_NODE_PARAMS)
    return table


@dataclass
class NodeSettings:
    """What on_configure needs, checked."""

    profiler: ProfilerConfig
    tracking: TrackerConfig
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    max_rate: float = 0.0
    reliability: str = "best_effort"
    transport: str = "auto"
    debug_image: bool = False
    publish_hri: bool = True
    diagnostics_period: float = 1.0
    max_image_pixels: int = MAX_PIXELS
    autostart: bool = True


def settings_from_values(values: Mapping[str, Any]) -> NodeSettings:
    """Check parameter values (name -> value, missing = default) and build the settings.

    Raises ConfigError naming the parameter; unknown names are an error too (see unknown_parameters for the
    lenient check the node does on overrides).
    """
    table = parameter_table()
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ConfigError(f"unknown parameters {unknown}")
    checked = {name: _check_type(name, values.get(name, default), default) for name, (default, _) in table.items()}
    _check_paths(checked)

    profiler_values: dict[str, Any] = {}
    tracking_values: dict[str, Any] = {}
    schedule_values: dict[str, Any] = {}
    node_values: dict[str, Any] = {}
    for name, value in checked.items():
        group, _, key = name.partition(".")
        if key and group == "attributes":
            profiler_values.setdefault("attributes", {})[key] = value
        elif key and group == "tracking":
            tracking_values[key] = value
        elif key and group == "schedule":
            schedule_values[key] = value
        elif name in _NODE_PARAMS:
            node_values[name] = value
        else:
            profiler_values[name] = value
    try:
        profiler = ProfilerConfig.from_dict(profiler_values)
    except ConfigError as exc:
        raise ConfigError(f"parameter {exc}") from None
    try:
        tracking = TrackerConfig.from_dict({**tracking_values, "min_confidence": profiler.min_confidence})
    except ValueError as exc:
        raise ConfigError(f"parameter {exc}") from None
    try:
        schedule = ScheduleConfig.from_dict(schedule_values)
    except ValueError as exc:
        raise ConfigError(f"parameter {exc}") from None
    if not profiler.attributes:
        raise ConfigError("parameters attributes.*: every attribute is switched off; enable at least one")
    settings = NodeSettings(profiler=profiler, tracking=tracking, schedule=schedule, **node_values)
    if settings.reliability not in RELIABILITY:
        raise ConfigError(f"parameter reliability: expected one of {RELIABILITY}, got {settings.reliability!r}")
    if settings.transport not in TRANSPORTS:
        raise ConfigError(f"parameter transport: expected one of {TRANSPORTS}, got {settings.transport!r}")
    if not (math.isfinite(settings.max_rate) and settings.max_rate >= 0):
        raise ConfigError(f"parameter max_rate: expected a number >= 0 (0 = unlimited), got {settings.max_rate!r}")
    if not (math.isfinite(settings.diagnostics_period) and settings.diagnostics_period > 0):
        raise ConfigError(f"parameter diagnostics_period: expected seconds > 0, got {settings.diagnostics_period!r}")
    if settings.max_image_pixels < 1:
        raise ConfigError(f"parameter max_image_pixels: expected a pixel count >= 1, got {settings.max_image_pixels}")
    return settings


def _check_paths(values: dict[str, Any]) -> None:
    """Path parameters are checked before any model loads: a YAML null is refused, the prompts file parsed."""
    for name in _PATH_PARAMS:
        if values[name].strip() in ("~", "null", "None"):
            expected = _MODEL_EXPECTED if name == "model" else "a path, or '' for the default"
            raise ConfigError(f"parameter {name}: got {values[name]!r}, which is how a YAML null (~) arrives; "
                              f"expected {expected}")
    if values["model"].strip() == "":
        raise ConfigError(f"parameter model: empty; expected {_MODEL_EXPECTED}")
    prompts_file = values["prompts_file"]
    if prompts_file:
        path = Path(prompts_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"parameter prompts_file: no such file: {path}")
        try:
            load_prompts(path)
        except PromptError as exc:
            raise ConfigError(f"parameter prompts_file: {exc}") from None


def unknown_parameters(names: Any) -> list[str]:
    """Override names that are neither ours nor rclpy's (typos in a params file)."""
    table = parameter_table()
    return sorted(n for n in names if n not in table and not n.startswith(_FOREIGN) and n not in _FOREIGN)


def check_autostart(value: Any) -> bool:
    """The autostart value, or ConfigError: main() reads it before configure (a string "true" would hang)."""
    return _check_type("autostart", value, True)


def _check_type(name: str, value: Any, default: Any) -> Any:
    """The value in the default's type (int accepted for floats), else ConfigError naming the parameter."""
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"parameter {name}: expected {expected}, got {value!r} ({type(value).__name__})")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if name in _AUTO_OR_NUMBER:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("'auto' or a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if isinstance(default, list):
        if isinstance(value, str):  # `-p detectors:=haar` or "yunet,haar"
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise fail("a list of strings")
        return list(value)
    raise AssertionError(f"no type rule for parameter {name}")


# --- rclpy glue -------------------------------------------------------------------------------------------


def declare_parameters(node: Any) -> None:
    """Declare every parameter on an rclpy node (dynamic typing: checked at configure, see module doc)."""
    from rcl_interfaces.msg import ParameterDescriptor

    for name, (default, doc) in parameter_table().items():
        node.declare_parameter(name, default, ParameterDescriptor(description=doc, dynamic_typing=True))


def read_settings(node: Any) -> NodeSettings:
    """The node's current parameter values, checked (ConfigError on a bad one)."""
    values = {name: node.get_parameter(name).value for name in parameter_table()}
    return settings_from_values(values)
