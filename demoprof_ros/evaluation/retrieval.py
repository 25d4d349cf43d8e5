"""Text-to-image retrieval over face crops, its on-disk embedding cache, and the paper's retrieval analysis.

`demoprof retrieve "a photo of a 60-69 year old Indian man" --images DIR -k 10` ranks the images of a folder
by cosine similarity to the query. Images are taken whole (they are expected to be face crops, as in the
evaluation sets); no detector runs.

Image embeddings are personal data (they describe a face), so the cache is explicit: its location is printed
on every run, `--no-cache` writes nothing, and entries whose file has gone are dropped when the cache is saved.
It is keyed by a fingerprint of the model (weights sample + preprocessing) and, per image, by the resolved
path, size and modification time, so an edited or replaced image is re-encoded.

`retrieval_precision_at_k` is the paper's Table II analysis: for every full description, the share of the
top-k retrieved images that carry each of the description's attributes (evaluate.py puts it in the report).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..core.images import IMAGE_EXTENSIONS, ImageError, load_image
from ..core.outputs import output_dir_arg, output_file_arg
from ..core.taxonomy import Description

log = logging.getLogger("demoprof.retrieval")

CACHE_FORMAT = 1
SHEET_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")  # what matplotlib's savefig writes
NO_FACE = "no face found"  # encode_paths' failure reason where its `crop` found no face


# --- image embeddings ---------------------------------------------------------------------------------------


def list_images(folder: str | Path) -> list[Path]:
    """Image files under a folder (recursive, sorted), or the one file given."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def encode_paths(scorer, paths: Sequence[str | Path], progress: bool = True, desc: str = "images",
                 crop: Callable[[np.ndarray], np.ndarray | None] | None = None,
                 ) -> tuple[torch.Tensor, np.ndarray, list[tuple[str, str]]]:
    """Embeddings of image files, `scorer.batch_size` at a time, with a progress bar.

    Images are read whole (face crops), or passed through `crop` (detected_crops.FaceCropper: None = no face).
    Returns (M x D embeddings of the images scored, bool mask over `paths` of those, [(path, reason)] for the
    others: unreadable, or NO_FACE). Such an image is skipped and reported, never fatal.
    """
    from tqdm import tqdm

    ok = np.zeros(len(paths), dtype=bool)
    failures: list[tuple[str, str]] = []
    parts: list[torch.Tensor] = []
    step = max(1, int(scorer.batch_size))
    with tqdm(total=len(paths), unit="img", desc=desc, disable=not progress, file=sys.stderr,
              leave=False) as bar:
        for start in range(0, len(paths), step):
            crops = []
            for i in range(start, min(start + step, len(paths))):
                try:
                    image = load_image(paths[i])
                except ImageError as exc:
                    failures.append((str(paths[i]), str(exc)))
                    log.warning("skipped unreadable image: %s", exc)
                    continue
                face = image if crop is None else crop(image)
                if face is None:
                    failures.append((str(paths[i]), NO_FACE))
                    continue
                crops.append(face)
                ok[i] = True
            if crops:
                parts.append(scorer.encode_images(crops).float().cpu())
            bar.update(min(step, len(paths) - start))
    dim = int(scorer.loaded.model_cfg.get("embed_dim", 0)) if not parts else parts[0].shape[1]
    return (torch.cat(parts) if parts else torch.empty(0, dim)), ok, failures


def model_fingerprint(loaded) -> str:
    """16 hex digits that change with the image tower's weights or the preprocessing.

    Hashes a slice of every image-tower tensor (cheap even for ViT-L) rather than the name, so a re-trained
    checkpoint saved under the same name still gets a new cache.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([loaded.name, int(loaded.image_size), list(map(float, loaded.mean)),
                              list(map(float, loaded.std))]).encode())
    visual = getattr(loaded.model, "visual", loaded.model)
    for name, tensor in visual.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = torch.cat([flat[:512], flat[-512:]]).float().cpu().numpy()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    """$DEMOPROF_CACHE/embeddings, else $XDG_CACHE_HOME/demoprof/embeddings, else ~/.cache/demoprof/embeddings."""
    if os.environ.get("DEMOPROF_CACHE"):
        return Path(os.environ["DEMOPROF_CACHE"]).expanduser() / "embeddings"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "demoprof" / "embeddings"


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), int(stat.st_size), int(stat.st_mtime_ns)


class EmbeddingCache:
    """Image embeddings of one model on disk: `<root>/<fingerprint>/{index.json, vectors.npy}`."""

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint
        self.fingerprint = fingerprint
        self._entries: dict[str, tuple[int, int, np.ndarray]] = {}
        self._load()

    def _load(self) -> None:
        index, vectors = self.dir / "index.json", self.dir / "vectors.npy"
        if not (index.is_file() and vectors.is_file()):
            return
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
            array = np.load(vectors, allow_pickle=False)
            if meta.get("format") != CACHE_FORMAT or meta.get("fingerprint") != self.fingerprint:
                raise ValueError("format or fingerprint mismatch")
            self._entries = {path: (int(size), int(mtime), array[int(row)])
                             for path, (size, mtime, row) in meta["entries"].items()}
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("ignoring unreadable embedding cache %s (%s); it will be rebuilt", self.dir, exc)
            self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: Path) -> np.ndarray | None:
        """The cached vector when the file's path, size and mtime are unchanged, else None."""
        try:
            key, size, mtime = _file_key(path)
        except OSError:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[0] != size or entry[1] != mtime:
            return None
        return entry[2]

    def stale(self) -> int:
        """How many entries belong to files that no longer exist."""
        return sum(1 for p in self._entries if not Path(p).is_file())

    def put(self, path: Path, vector: np.ndarray) -> None:
        key, size, mtime = _file_key(path)
        self._entries[key] = (size, mtime, np.asarray(vector, dtype=np.float32))

    def save(self) -> None:
        """Write atomically, dropping entries whose file no longer exists (embeddings of deleted images)."""
        live = {p: e for p, e in self._entries.items() if Path(p).is_file()}
        self._entries = live
        self.dir.mkdir(parents=True, exist_ok=True)
        paths = sorted(live)
        dim = len(next(iter(live.values()))[2]) if live else 0
        array = np.stack([live[p][2] for p in paths]).astype(np.float32) if live else np.zeros((0, dim), np.float32)
        meta = {"format": CACHE_FORMAT, "fingerprint": self.fingerprint,
                "entries": {p: [live[p][0], live[p][1], i] for i, p in enumerate(paths)}}
        tmp_vec = self.dir / f"vectors.npy.tmp{os.getpid()}"
        tmp_idx = self.dir / f"index.json.tmp{os.getpid()}"
        with open(tmp_vec, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        tmp_idx.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp_vec, self.dir / "vectors.npy")
        os.replace(tmp_idx, self.dir / "index.json")


def embed_images(scorer, paths: Sequence[Path], cache: EmbeddingCache | None = None, progress: bool = True,
                 ) -> tuple[list[Path], torch.Tensor, list[tuple[str, str]], dict[str, int]]:
    """(readable paths, their embeddings, failures, {"reused": n, "computed": m}), using the cache when given."""
    vectors: dict[int, np.ndarray] = {}
    if cache is not None:
        for i, path in enumerate(paths):
            hit = cache.get(Path(path))
            if hit is not None:
                vectors[i] = hit
    todo = [i for i in range(len(paths)) if i not in vectors]
    emb, ok, failures = encode_paths(scorer, [paths[i] for i in todo], progress=progress)
    for row, i in enumerate(i for i, good in zip(todo, ok) if good):
        vectors[i] = emb[row].numpy()
        if cache is not None:
            cache.put(Path(paths[i]), vectors[i])
    if cache is not None and (ok.any() or cache.stale()):
        cache.save()
    kept = sorted(vectors)
    dim = emb.shape[1] if emb.numel() else (len(next(iter(vectors.values()))) if vectors else 0)
    stacked = torch.from_numpy(np.stack([vectors[i] for i in kept])) if kept else torch.empty(0, dim)
    stats = {"reused": len(paths) - len(todo), "computed": int(ok.sum())}
    return [Path(paths[i]) for i in kept], stacked.float(), failures, stats


# --- ranking --------------------------------------------------------------------------------------------------


@dataclass
class Hit:
    """One retrieved image."""

    rank: int
    path: Path
    score: float  # cosine similarity between the query and the image embedding

    def to_dict(self) -> dict:
        return {"rank": self.rank, "path": str(self.path), "score": round(self.score, 6)}


def rank_images(scorer, query: str, paths: Sequence[Path], embeddings: torch.Tensor, k: int = 10) -> list[Hit]:
    """The k images most similar to the query text (best first)."""
    if not query.strip():
        raise ValueError("empty query; expected a description such as 'a photo of a 60-69 year old Indian man'")
    if len(paths) != embeddings.shape[0]:
        raise ValueError(f"{len(paths)} paths but {embeddings.shape[0]} embeddings")
    if not len(paths):
        return []
    text = scorer.encode_ensembles([[query]]).float().cpu()
    scores = (embeddings.float() @ text[0]).numpy()
    order = np.argsort(-scores, kind="stable")[:max(0, k)]
    return [Hit(rank=r + 1, path=Path(paths[i]), score=float(scores[i])) for r, i in enumerate(order)]


# --- the paper's retrieval analysis -----------------------------------------------------------------------------


def retrieval_precision_at_k(similarity: torch.Tensor | np.ndarray, descriptions: Sequence[Description],
                             labels: Mapping[str, Sequence[str | None]], owners: Mapping[str, Mapping[str, str]],
                             k: int = 10) -> dict:
    """For every description, precision@k of each attribute among its top-k images, and averages.

    similarity: K x N (description x image) scores. labels: per attribute, the image labels in the data set's
    vocabulary (None = unknown). owners: per attribute, fine class -> vocabulary entry (identity for fine
    vocabularies; 'East Asian' -> 'Asian' for UTKFace), so a coarse label matches the descriptions it covers.
    An image whose label is unknown for an attribute does not count for that attribute; `full` counts images
    with every attribute known. `chance` is what a random ranking would give (the label's share).
    """
    sim = similarity.detach().float().cpu().numpy() if isinstance(similarity, torch.Tensor) else np.asarray(similarity)
    n_desc, n = sim.shape
    if n_desc != len(descriptions):
        raise ValueError(f"{n_desc} similarity rows but {len(descriptions)} descriptions")
    attributes = [a for a in labels if a in owners]
    k = min(k, n)
    if k < 1:
        raise ValueError("retrieval needs at least one image")
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    label_arrays = {a: np.array([v if v is not None else "" for v in labels[a]], dtype=object) for a in attributes}
    known = {a: label_arrays[a] != "" for a in attributes}
    rows = []
    for j, description in enumerate(descriptions):
        target = {a: owners[a][getattr(description, a)] for a in attributes if getattr(description, a) is not None}
        idx = top[j]
        entry: dict = {"description": description.as_dict(), "precision": {}, "chance": {}}
        match_all, all_known = np.ones(k, dtype=bool), np.ones(k, dtype=bool)
        pool_match, pool_known = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
        for a, want in target.items():
            hit = label_arrays[a][idx] == want
            kn = known[a][idx]
            entry["precision"][a] = float(hit[kn].mean()) if kn.any() else None
            entry["chance"][a] = float((label_arrays[a][known[a]] == want).mean()) if known[a].any() else None
            match_all &= hit
            all_known &= kn
            pool_match &= label_arrays[a] == want
            pool_known &= known[a]
        entry["precision"]["full"] = float(match_all[all_known].mean()) if all_known.any() else None
        entry["chance"]["full"] = float(pool_match[pool_known].mean()) if pool_known.any() else None
        rows.append(entry)
    summary = {}
    for key in [*attributes, "full"]:
        values = [r["precision"].get(key) for r in rows if r["precision"].get(key) is not None]
        chance = [r["chance"].get(key) for r in rows if r["chance"].get(key) is not None]
        summary[key] = {"mean_precision": float(np.mean(values)) if values else None,
                        "descriptions": len(values),
                        "chance": float(np.mean(chance)) if chance else None}
    by_class = {}
    for a in attributes:
        groups: dict[str, list[float]] = {}
        for description, r in zip(descriptions, rows):
            value = r["precision"].get(a)
            if getattr(description, a) is not None and value is not None:
                groups.setdefault(getattr(description, a), []).append(value)
        by_class[a] = {c: float(np.mean(v)) for c, v in groups.items()}
    return {"k": int(k), "images": int(n), "summary": summary, "by_class": by_class, "per_description": rows}


# --- CLI ------------------------------------------------------------------------------------------------------


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "retrieve", help="rank face images by a text description",
        description="Rank the images of a folder (face crops, taken whole) by similarity to a description. "
                    "Image embeddings are cached on disk (personal data: the location is printed; --no-cache "
                    "writes nothing).")
    p.add_argument("query", type=_query, help='e.g. "a photo of a 60-69 year old Indian man"')
    p.add_argument("--images", required=True, help="folder of face images (searched recursively) or one image")
    p.add_argument("-k", type=int, default=10, help="how many images to return (default 10)")
    p.add_argument("--model", default="auto", help="auto | farl | clip | tiny | checkpoint file or fine-tuned folder")
    p.add_argument("--models-dir", help="folder with downloaded weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--sheet", metavar="OUT.png", type=output_file_arg("--sheet", SHEET_SUFFIXES),
                   help="also draw the top-k as a contact sheet (writes face images)")
    p.add_argument("--cache-dir", type=output_dir_arg("--cache-dir"),
                   help=f"embedding cache folder (default {default_cache_dir()})")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached embeddings")
    p.add_argument("--json", action="store_true", help="print the hits as JSON")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_retrieve)


def _query(text: str) -> str:
    """argparse `type=` of the query: an empty or blank description is a usage error, not a random ranking."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the query is empty; give a description such as "
                                         "\"a photo of a 60-69 year old Indian man\"")
    return text


def cmd_retrieve(args: argparse.Namespace) -> int:
    from ..core.models import ModelLoadError, load_model
    from ..core.prompts import prompts_from_dict
    from ..core.scorer import ZeroShotScorer

    if args.k < 1:
        print("demoprof retrieve: error: -k must be >= 1", file=sys.stderr)
        return 2
    try:
        paths = list_images(args.images)
    except FileNotFoundError as exc:
        print(f"demoprof retrieve: error: {exc}", file=sys.stderr)
        return 2
    if not paths:
        print(f"demoprof retrieve: error: no images in {args.images} (looked for {sorted(IMAGE_EXTENSIONS)})",
              file=sys.stderr)
        return 2
    try:
        loaded = load_model(args.model, device=args.device, models_dir=args.models_dir)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        print(f"demoprof retrieve: error: {exc}", file=sys.stderr)
        return 2
    scorer = ZeroShotScorer(loaded, prompts_from_dict(loaded.meta.get("prompts")), batch_size=args.batch_size)
    cache = None
    if not args.no_cache:
        cache = EmbeddingCache(args.cache_dir or default_cache_dir(), model_fingerprint(loaded))
    found, embeddings, failures, stats = embed_images(scorer, paths, cache, progress=args.progress)
    if cache is not None:
        print(f"embedding cache: {cache.dir} ({stats['reused']} reused, {stats['computed']} computed; "
              "face embeddings are personal data: delete the folder or use --no-cache)", file=sys.stderr)
    for path, reason in failures:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    hits = rank_images(scorer, args.query, found, embeddings, args.k)
    if args.json:
        print(json.dumps({"query": args.query, "model": loaded.name, "hits": [h.to_dict() for h in hits],
                          "skipped": [{"path": p, "reason": r} for p, r in failures]}, indent=2))
    else:
        for hit in hits:
            print(f"{hit.rank:>3}  {hit.score:+.4f}  {hit.path}")
    if args.sheet and hits:
        from .plots import contact_sheet

        images = [load_image(h.path) for h in hits]
        out = contact_sheet(images, [f"{h.rank}. {h.score:.3f}\n{h.path.name[:22]}" for h in hits], args.sheet,
                            title=args.query)
        print(f"contact sheet: {out}", file=sys.stderr)
    return 1 if failures else 0
