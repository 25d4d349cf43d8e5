"""`demoprof card RESULTS`: a model card (Mitchell et al. 2019) for a checkpoint, from its evaluation results.

The card is written from results.json (demoprof eval / experiment) so every number in it was measured; the
fixed sections (intended use, out-of-scope uses, the EU AI Act note, known limits) are the project's
position and are always included, so a card can never be produced without them.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from ..core.outputs import output_file_arg
from .baselines import baseline_cells, class_order, group_order
from .report import detection_text

REQUIRED_SECTIONS = ("Model details", "Intended use", "Out-of-scope uses", "Evaluation data", "Results",
                     "Per-group results", "Calibration", "Known limits", "Ethical and legal considerations")

INTENDED_USE = """\
- Research and prototyping of social robots that adapt *how* they interact (speech rate, vocabulary, content
  suited to a child or an older adult) from the **perceived** age group, gender and ethnicity of the people in
  front of them, as studied in the seed paper (arXiv 2502.10642).
- Auditing: measuring how well, and how unevenly across groups, vision-language models perceive these
  attributes (the per-group tables below).
- Deployments must tell people that the robot estimates these attributes, keep every estimate on the robot
  (nothing stored by default), let any attribute be switched off (`attributes` parameter), and keep a human
  in charge of anything consequential."""

OUT_OF_SCOPE = """\
- **Surveillance**: monitoring, tracking or profiling people in public or at work, counting people by
  ethnicity, or any use on people who have not been told.
- **Decisions about people**: access to places, services, jobs, education, credit, housing, health care,
  benefits, policing or migration must never depend on these outputs, alone or in part.
- **Identification**: the model does not recognise who someone is and must not be combined with systems
  that do.
- **Self-identification**: the outputs are how a face *appears* to a model trained on annotators' labels,
  not a person's age, gender identity or ethnicity. They must not be presented back to a person as facts
  about them, nor stored as attributes of an identified person.
- Inferring ethnicity ("race") in the EU from biometric data (see the EU AI Act note), and any inference of
  other sensitive traits (religion, political opinion, sexual orientation, health)."""

EU_AI_ACT = """\
Regulation (EU) 2024/1689 (AI Act), Article 5(1)(g), prohibits placing on the market, putting into service for
this purpose, or using *biometric categorisation systems that categorise natural persons individually on the
basis of their biometric data to deduce or infer their race*, political opinions, trade-union membership,
religious or philosophical beliefs, sex life or sexual orientation (applicable since 2 February 2025; the
prohibition does not cover labelling or filtering lawfully acquired biometric data sets, nor categorising
biometric data in law enforcement). Estimating ethnicity from a face image falls under this description.
Biometric categorisation by other sensitive or protected attributes is high-risk (Annex III, point 1(b)), and
deployers must inform the people exposed to it (Article 50(3)). AI systems developed and put into service for
the sole purpose of scientific research and development are outside the Act (Article 2(6)). Practical
consequence: a robot deployed in the EU must run with `attributes: [age, gender]` (the ethnicity head switched
off) and tell people what it estimates; the ethnicity head is for research and bias auditing only. This note
is orientation, not legal advice."""


KNOWN_LIMITS = """\
- Gender is binary and ethnicity is FairFace's 7 categories: both are annotation conventions, not natural
  kinds; people outside or between them are misdescribed by construction.
- Age groups are 10-year bins; errors of one bin are common and count as wrong.
- Labels of the evaluation sets are themselves perceptions (annotators), or prompt intents for synthetic sets
  (SDFD / GenUser: the generator does not always follow the prompt).
- Data sets with a coarser vocabulary (UTKFace `Asian`, `Others`) are scored after merging the model's
  predictions; rows with labels outside the taxonomy (e.g. `Pacific Islander`) are left out and counted.
- Small groups give wide uncertainty: the 95 % Wilson interval of each accuracy is shown; groups smaller than
  the report's minimum are listed but not used for the largest gap.
- Faces were evaluated as given (cropped, mostly frontal, well lit), or, for a set with a "Faces:" line,
  as a detector crops them from those images. Robot cameras add blur, pose, distance, occlusion (masks,
  glasses) and lighting that lower accuracy, unevenly across groups.
- Zero-shot results depend on the prompt wording (config/prompts.yaml); fine-tuned models on their training
  data, which may not represent the people a robot meets."""


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (why: honest error bars on small test sets)."""
    if n <= 0:
        return (math.nan, math.nan)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _acc_ci(acc: float | None, n: int) -> str:
    if acc is None or not n:
        return "n/a"
    lo, hi = wilson(acc, n)
    return f"{_pct(acc)} [{_pct(lo)}, {_pct(hi)}]"


def _with_baselines(metrics: Mapping[str, Any], n_classes: int) -> str:
    """'major / chance | F1 | major / chance |': the rest of a results row, baselines beside each score."""
    base_acc, base_f1 = baseline_cells(metrics, n_classes or None)
    return f"{base_acc} | {_pct(metrics.get('macro_f1'))} | {base_f1} |"


def load_results(path: str | Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None, Path]:
    """(results or None, checkpoint meta or None, folder) from results.json, its folder, or a checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        if (path / "results.json").is_file():
            path = path / "results.json"
        elif (path / "meta.json").is_file():
            return None, json.loads((path / "meta.json").read_text(encoding="utf-8")), path
        else:
            raise FileNotFoundError(f"{path}: no results.json (from `demoprof eval`) and no meta.json "
                                    "(a fine-tuned checkpoint folder)")
    if not path.is_file():
        raise FileNotFoundError(f"results not found: {path}")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(results, dict) or "datasets" not in results or "model" not in results:
        raise ValueError(f"{path}: not a demoprof eval results.json (expected 'model' and 'datasets' keys)")
    return results, None, path.parent


def render_card(results: Mapping[str, Any] | None, checkpoint_meta: Mapping[str, Any] | None = None) -> str:
    """MODEL_CARD.md text. With no results (a bare checkpoint) the result sections say how to produce them."""
    model = dict((results or {}).get("model") or {})
    meta = {**(checkpoint_meta or {}), **(model.get("meta") or {})}
    name = model.get("name") or meta.get("name") or "unnamed model"
    lines = [f"# Model card: {name}", ""]
    lines.append(f"Generated by `demoprof card` on {time.strftime('%Y-%m-%d')}"
                 + (f" from evaluation results of {results.get('created', '?')}" if results else "")
                 + ". Numbers are percentages; brackets are 95 % Wilson intervals.")
    if meta.get("untrained"):
        lines += ["", "> **Untrained model (random weights).** Its outputs mean nothing; this card only shows the "
                      "format. Do not deploy it."]
    datasets = (results or {}).get("datasets") or {}
    lines += ["", "## Model details", "", *_model_details(model, meta, name)]
    lines += ["", "## Intended use", "", INTENDED_USE, "", "## Out-of-scope uses", "", OUT_OF_SCOPE]
    lines += ["", "## Evaluation data", "", *_evaluation_data(datasets)]
    lines += ["", "## Results", "", *_results(datasets)]
    lines += ["", "## Per-group results", "", *_per_group(datasets)]
    lines += ["", "## Calibration", "", *_calibration(datasets)]
    lines += ["", "## Known limits", "", KNOWN_LIMITS]
    lines += ["", "## Ethical and legal considerations", "",
              "Perceived, not self-identified: every output is an estimate of how a face looks to the model. "
              "Errors are not evenly spread (see the per-group results); a robot must degrade gracefully "
              "(`undetermined` below the confidence bar) rather than act on a wrong guess.", "",
              "**EU AI Act note on ethnicity.** " + EU_AI_ACT]
    return "\n".join(lines) + "\n"


def _model_details(model: Mapping[str, Any], meta: Mapping[str, Any], name: str) -> list[str]:
    lines = []
    base = meta.get("base_model") or meta.get("base") or meta.get("arch") or model.get("spec")
    lines.append(f"- Name: `{name}`; model spec `{model.get('spec', name)}`"
                 + (f"; weights `{model['source']}`" if model.get("source") else ""))
    cfg = meta.get("model_cfg") or {}
    size = model.get("image_size") or (cfg.get("vision_cfg") or {}).get("image_size", "?")
    timm = (cfg.get("vision_cfg") or {}).get("timm_model_name")
    tower = f"open_clip CLIP with timm image tower `{timm}`" if timm else "open_clip ViT architecture"
    lines.append(f"- Base model: {base}; {tower}, image size {size} px, "
                 f"embedding size {model.get('embed_dim') or cfg.get('embed_dim', '?')}")
    if meta.get("attribute_scoring"):
        lines.append(f"- Attributes scored by: {meta['attribute_scoring']} (prompts: each attribute's own prompts; "
                     "descriptions: marginals of the full descriptions, `core/scorer.py`)")
    lines.append("- Task: zero-shot scoring of face crops against caption embeddings: one softmax per attribute "
                 "(age group 9 classes, gender 2, ethnicity 7) and over the 126 full descriptions.")
    if meta.get("loss"):
        lines.append(f"- Fine-tuning objective: {json.dumps(meta['loss'])}")
    if meta.get("optimizer"):
        lines.append(f"- Optimiser: {json.dumps(meta['optimizer'])}")
    for key in ("seed", "best_epoch", "best_score", "selection", "stopped_early", "package_version", "created"):
        if meta.get(key) is not None:
            value = round(meta[key], 4) if isinstance(meta[key], float) else meta[key]
            lines.append(f"- {key.replace('_', ' ')}: {value}")
    train_data = meta.get("training_data")
    if train_data is None and isinstance(meta.get("data"), dict):  # a checkpoint's own meta.json
        train_data = {p: {k: v for k, v in (meta["data"].get(p) or {}).items() if k in ("sources", "n", "split")}
                      for p in ("train", "val")}
    if train_data:
        for part, info in train_data.items():
            text = f"- {part.capitalize()} data: {info.get('n', '?')} images from " + ", ".join(
                f"`{s}`" for s in info.get("sources") or []) if info.get("sources") else \
                f"- {part.capitalize()} data: {info.get('n', '?')} images ({info.get('split', 'split of train')})"
            if info.get("fingerprint"):
                text += f" (fingerprint {info['fingerprint']})"
            lines.append(text)
            for attribute, counts in (info.get("labels") or {}).items():
                lines.append(f"  - {attribute}: " + ", ".join(f"{k or 'unknown'} {counts[k]}"
                                                              for k in class_order(attribute, counts)))
    elif not meta.get("untrained") and base in ("clip", "farl"):
        lines.append("- Training data: the base model's pre-training data only (zero-shot use).")
    return lines


def _evaluation_data(datasets: Mapping[str, Any]) -> list[str]:
    if not datasets:
        return ["Not evaluated yet: run `demoprof eval --model <this checkpoint> --data <CSV...> --output DIR` "
                "and then `demoprof card DIR`."]
    lines = []
    for ds_name, ds in datasets.items():
        reader = ds.get("reader", {})
        text = (f"- **{ds_name}** (`{ds.get('path')}`): {ds['images']['scored']} images scored; read "
                f"{reader.get('rows', '?')} rows, {reader.get('skipped', 0)} left out")
        if reader.get("counts"):
            text += " (" + ", ".join(f"{n} {r}" for r, n in reader["counts"].items()) + ")"
        if ds.get("subset"):
            text += f"; {ds['subset']}"
        lines.append(text + ".")
        if ds.get("detection"):
            lines.append(f"  - {detection_text(ds['detection'])}")
        for a, e in ds.get("attributes", {}).items():
            if e.get("merged"):
                lines.append(f"  - {a} scored in the set's own vocabulary ({', '.join(e['vocabulary'])}): "
                             f"{e['merged']}.")
    return lines


def _results(datasets: Mapping[str, Any]) -> list[str]:
    if not datasets:
        return ["No results."]
    lines = ["Baselines: *majority* always answers the most frequent class of the set, *chance* answers "
             "uniformly at random (expected value); a score is only worth something above both.", "",
             "| data set | attribute | n | accuracy [95 % CI] | majority / chance acc. | macro F1 | "
             "majority / chance F1 |", "|---|---|---:|---|---:|---:|---:|"]
    for ds_name, ds in datasets.items():
        for a, e in ds.get("attributes", {}).items():
            m = e.get("metrics") or {}
            lines.append(f"| {ds_name} | {a} | {e.get('n', 0)} | {_acc_ci(m.get('accuracy'), e.get('n', 0))} | "
                         + _with_baselines(m, len(e.get("vocabulary") or m.get("classes") or ())))
        for key in ("joint", "joint_coarse"):
            j = ds.get(key)
            if j and j.get("metrics"):
                label = "full description" + (" (coarse)" if key == "joint_coarse" else "")
                lines.append(f"| {ds_name} | {label} ({j['n_descriptions']}-way) | {j['n']} | "
                             f"{_acc_ci(j['metrics']['accuracy'], j['n'])} | "
                             + _with_baselines(j["metrics"], j["n_descriptions"]))
    notes = []
    for ds_name, ds in datasets.items():
        wrong = {a: e["misses_wrong"] for a, e in ds.get("attributes", {}).items() if e.get("misses_wrong")}
        if wrong:
            notes.append(f"- {ds_name}, with the images where no face was found counted wrong: " + ", ".join(
                f"{a} {_acc_ci(w['accuracy'], w['n'])} (n={w['n']})" for a, w in wrong.items()) + ".")
    return lines + ([""] + notes if notes else [])


def _per_group(datasets: Mapping[str, Any]) -> list[str]:
    lines = []
    for ds_name, ds in datasets.items():
        for a, g in (ds.get("groups") or {}).items():
            for grouping, data in g["groupings"].items():
                groups = data["groups"]
                if not groups:
                    continue
                gap = data["gap"]["accuracy"]
                gap_text = (f"no gap computed (fewer than two groups with n >= {g['min_count']})" if not gap
                            else "groups with enough samples score the same" if not gap["gap"]
                            else f"largest gap {_pct(gap['gap'])} points: {gap['best']} vs {gap['worst']}")
                lines.append(f"- **{ds_name}, {a} by {grouping}** ({gap_text}): " + "; ".join(
                    f"{n} {_acc_ci(groups[n]['accuracy'], groups[n]['n'])} (n={groups[n]['n']})"
                    for n in group_order(grouping, groups)))
    return lines or ["No per-group results (not evaluated, or no group labels)."]


def _calibration(datasets: Mapping[str, Any]) -> list[str]:
    cal = []
    for ds_name, ds in datasets.items():
        for a, e in ds.get("attributes", {}).items():
            if e.get("ece") is not None:
                cal.append(f"| {ds_name} | {a} | {_pct(e['ece'])} | {_pct(e.get('mean_confidence'))} | "
                           f"{_pct((e.get('metrics') or {}).get('accuracy'))} |")
    if not cal:
        return ["Not measured."]
    return ["Expected calibration error (15 equal-width bins) of the top-1 probability; a confidence "
            "threshold (`min_confidence`) is only meaningful where it is low.", "",
            "| data set | attribute | ECE | mean confidence | accuracy |", "|---|---|---:|---:|---:|", *cal]


def write_card(source: str | Path, output: str | Path | None = None) -> Path:
    """Write MODEL_CARD.md (default: beside results.json, or in the checkpoint folder) and return its path."""
    results, meta, folder = load_results(source)
    out = Path(output) if output else folder / "MODEL_CARD.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_card(results, meta), encoding="utf-8")
    return out


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("card", help="write MODEL_CARD.md from evaluation results",
                              description=__doc__.splitlines()[0])
    p.add_argument("results", help="results.json, the folder holding it, or a fine-tuned checkpoint folder")
    p.add_argument("--output", type=output_file_arg("--output", (".md",)),
                   help="where to write (default: MODEL_CARD.md beside the results)")
    p.set_defaults(func=cmd_card)


def cmd_card(args: argparse.Namespace) -> int:
    try:
        out = write_card(args.results, args.output)
    except (FileNotFoundError, ValueError) as exc:
        print(f"demoprof card: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
