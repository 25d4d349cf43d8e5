"""report.md of `demoprof eval`: results.json rendered for people, one section per data set."""
from __future__ import annotations

from typing import Any, Mapping

from .baselines import baseline_cells, group_order


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal ('n/a' for None)."""
    return "n/a" if value is None else f"{100 * value:.1f}"


def render_report(results: Mapping[str, Any]) -> str:
    """The human-readable report.md."""
    model = results["model"]
    lines = [f"# Evaluation of `{model['name']}`", ""]
    lines.append(f"- model: `{model['spec']}`" + (f" ({model['source']})" if model.get("source") else ""))
    if model.get("meta", {}).get("untrained"):
        lines.append("- **untrained model (random weights): these numbers only check the pipeline**")
    lines.append(f"- attributes: {', '.join(results['attributes'])}; created {results['created']}")
    detect = (results.get("settings") or {}).get("detect")
    lines.append(("- each image's largest detected face is scored, cropped as the profiler crops it (`--detect`); "
                  if detect else "- images are face crops scored whole (no detector); ") +
                 "labels are perceived attributes as "
                 "annotated in each data set; percentages below; baselines: *majority* always answers the set's "
                 "most frequent class, *chance* answers at random (expected value)")
    for name, ds in results["datasets"].items():
        lines += ["", f"## {name}", ""]
        lines += _reading(ds)
        lines += _attributes(ds)
        for key, title in (("joint", "Full description"), ("joint_coarse", "Full description, coarse vocabulary")):
            if ds.get(key):
                lines += _joint(ds[key], title)
        if ds.get("groups"):
            lines += _groups(ds["groups"])
        if ds.get("retrieval"):
            lines += _retrieval(ds["retrieval"])
    return "\n".join(lines) + "\n"


def _reading(ds: Mapping[str, Any]) -> list[str]:
    lines = [f"Source: `{ds['path']}`."]
    reader = ds["reader"]
    text = f"Read {reader['rows']} rows, kept {reader['kept']}, left out {reader['skipped']}"
    if reader["counts"]:
        text += " (" + ", ".join(f"{n} {r}" for r, n in reader["counts"].items()) + ")"
    lines.append(text + ".")
    if reader["counts"].get("label not in taxonomy"):
        lines.append(f"{reader['counts']['label not in taxonomy']} rows carry a label the FairFace taxonomy "
                     "lacks (e.g. 'Pacific Islander'); they are left out of every metric, never guessed.")
    if ds.get("subset"):
        lines.append(f"Evaluated on a {ds['subset']}.")
    images = ds["images"]
    lines.append(f"Scored {images['scored']} images" +
                 (f"; {images['unreadable']} unreadable, left out." if images["unreadable"] else "."))
    if ds.get("detection"):
        lines.append(detection_text(ds["detection"]))
    return lines


def detection_text(d: Mapping[str, Any]) -> str:
    """One sentence: the detector, the margin, and the faces it found, per group where it missed any."""
    text = (f"Faces: the largest one {d['detector']} finds, crop margin {d['margin']:g}; found in {d['found']} of "
            f"{d['images']} images" + (f", the other {d['no_face']} are left out of the metrics (accuracy with "
                                       "them counted wrong: column *misses wrong*)" if d["no_face"] else ""))
    for grouping, groups in d["found_by_group"].items():
        short = [f"{g} {c['found']}/{c['n']}" for g, c in groups.items() if c["found"] < c["n"]]
        if short:
            text += f"; found by {grouping} where any was missed: " + ", ".join(short)
    return text + "."


def _attributes(ds: Mapping[str, Any]) -> list[str]:
    detect = ds.get("detection") is not None
    lines = ["", "| attribute | vocabulary | n | accuracy |" + (" misses wrong |" if detect else "") +
             " majority / chance acc. | macro P | macro R | macro F1 | majority / chance F1 | ECE |",
             "|---|---|---:|---:|" + ("---:|" if detect else "") + "---:|---:|---:|---:|---:|---:|"]
    notes = []
    for a, e in ds["attributes"].items():
        m = e.get("metrics") or {}
        vocab = f"{len(e['vocabulary'])} classes" + (" (merged)" if e.get("merged") else "")
        base_acc, base_f1 = baseline_cells(m, len(e["vocabulary"]))
        wrong = e.get("misses_wrong")
        lines.append(f"| {a} | {vocab} | {e['n']} | {pct(m.get('accuracy'))} | "
                     + (f"{pct(wrong['accuracy'])} (n={wrong['n']}) | " if detect and wrong else "- | " if detect else "")
                     + f"{base_acc} | "
                     f"{pct(m.get('macro_precision'))} | {pct(m.get('macro_recall'))} | {pct(m.get('macro_f1'))} | "
                     f"{base_f1} | {pct(e.get('ece'))} |")
        if e.get("merged"):
            notes.append(f"{a} is scored in this data set's vocabulary ({', '.join(e['vocabulary'])}) by "
                         f"merging the model's probabilities: {e['merged']}.")
        if e.get("left_out"):
            notes.append(f"{a}: left out " + ", ".join(f"{n} rows ({r})" for r, n in e["left_out"].items())
                         + ".")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return lines


def _joint(j: Mapping[str, Any], title: str) -> list[str]:
    lines = ["", f"### {title}", "", f"Task: {j['task']}. Rows with every label known"
             f"{' and fine-grained' if j['vocabulary'] == 'fine' else ''}: **{j['n']} of {j['n_total']}**."]
    if j.get("note"):
        lines.append(j["note"] + ".")
    if j.get("metrics"):
        m = j["metrics"]
        lines.append(f"Accuracy {pct(m['accuracy'])}, top-5 accuracy {pct(j['top5_accuracy'])}, macro P/R/F1 "
                     f"{pct(m['macro_precision'])} / {pct(m['macro_recall'])} / {pct(m['macro_f1'])} "
                     f"(over the {len(m['macro_classes'])} descriptions that occur), ECE {pct(j['ece'])}. "
                     "Attributes read off the chosen description: " +
                     ", ".join(f"{a} {pct(v)}" for a, v in j["marginal_accuracy"].items()) + ".")
        lines.append("Majority / chance baselines: accuracy %s, macro F1 %s." % baseline_cells(m, j["n_descriptions"]))
    return lines


def _groups(groups: Mapping[str, Any]) -> list[str]:
    lines = ["", "### Groups", ""]
    for a, g in groups.items():
        for grouping, data in g["groupings"].items():
            if not data["groups"]:
                lines.append(f"- {a} accuracy by {grouping}: no row has a known {grouping} "
                             f"({data['left_out']} left out).")
                continue
            cells = ", ".join(f"{n} {pct(data['groups'][n]['accuracy'])} (n={data['groups'][n]['n']})"
                              for n in group_order(grouping, data["groups"]))
            gap = data["gap"]["accuracy"]
            gap_text = (f"no gap: fewer than two groups with n >= {g['min_count']}" if not gap else
                        f"no gap: the groups with n >= {g['min_count']} score the same" if not gap["gap"]
                        else f"largest accuracy gap {pct(gap['gap'])} points ({gap['best']} vs {gap['worst']})")
            lines.append(f"- {a} accuracy by {grouping}: {cells}. {gap_text}.")
    return lines


def _retrieval(r: Mapping[str, Any]) -> list[str]:
    lines = ["", f"### Retrieval precision@{r['k']} ({r['images']} images)", "",
             "| attribute | mean precision | chance | descriptions |", "|---|---:|---:|---:|"]
    for key, s in r["summary"].items():
        lines.append(f"| {key} | {pct(s['mean_precision'])} | {pct(s['chance'])} | {s['descriptions']} |")
    lines.append("")
    lines.append("For every full description, the top-k images by similarity; precision = share of them "
                 "with the description's class (images with that label unknown not counted); chance = the "
                 "class's share in the data set.")
    return lines
