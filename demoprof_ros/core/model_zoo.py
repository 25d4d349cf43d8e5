"""`demoprof models fetch|convert|list`: put checked, safe model files into models_dir.

Nothing downloads at run time: a machine with internet runs `fetch` once (or the user copies files in and
runs `convert`); the profiler then reads only local files. Weights are checked against the published
sha256 where one exists, converted to safetensors (so later loads never unpickle), and recorded in
`manifest.json` with their source and digest.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import models
from .checkpoints import OPENAI_CLIP_SHA256, sha256_file
from .model_meta import fix_for
from .models import ModelLoadError
from .shipped_model import SHIPPED_LICENCE, SHIPPED_NAME, find_shipped

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Asset:
    """One downloadable model file and where it ends up in models_dir."""

    name: str
    title: str
    url: str
    sha256: str | None          # published digest of the download; None: record the computed one
    target: str                 # path in models_dir after fetch
    licence: str
    member: str | None = None   # file to take out of a zip download
    member_sha256: str | None = None


ASSETS: dict[str, Asset] = {
    "clip": Asset(
        "clip", "OpenAI CLIP ViT-B/16",
        "https://openaipublic.azureedge.net/clip/models/"
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
        # OpenAI publishes the digest as the URL path (openai/CLIP checks it the same way).
        OPENAI_CLIP_SHA256,
        models.MODEL_FILES["clip"][0], "MIT (OpenAI CLIP)"),
    "farl": Asset(
        "farl", "FaRL-Base-Patch16-LAIONFace20M-ep64",
        "https://github.com/FacePerceiver/FaRL/releases/download/pretrained_weights/"
        "FaRL-Base-Patch16-LAIONFace20M-ep64.pth",
        None,  # FaRL publishes no digest
        models.MODEL_FILES["farl"][0], "MIT (FaRL, Microsoft); trained on LAION-Face web images"),
    "insightface": Asset(
        "insightface", "insightface buffalo_l (SCRFD-10GF detector)",
        "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f",
        "buffalo_l/det_10g.onnx", "non-commercial research only (insightface pretrained models)",
        member="det_10g.onnx",
        member_sha256="5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91"),
    "yunet": Asset(
        "yunet", "OpenCV YuNet face detector (2023mar)",
        "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
        "face_detection_yunet_2023mar.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        "face_detection_yunet_2023mar.onnx", "MIT (OpenCV Zoo)"),
}
CONVERTIBLE = ("clip", "farl")
#: The architecture each kind must have: both are ViT-B/16 (FaRL shares CLIP's). `convert` refuses others,
#: so a small or foreign model is never installed and reported under CLIP's or FaRL's name.
KIND_ARCHS: dict[str, tuple[str, ...]] = {"clip": (models.OPENAI_ARCH,), "farl": (models.OPENAI_ARCH,)}


class FetchError(RuntimeError):
    """A download or check failed; the message says what to do instead."""


def download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream `url` into `dest`. The project's only network access (tests replace it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "demoprof-models/0.1"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        try:
            from tqdm import tqdm
            bar = tqdm(total=total or None, unit="B", unit_scale=True, desc=Path(url).name, file=sys.stderr)
        except ImportError:  # pragma: no cover
            bar = None
        while chunk := response.read(1 << 20):
            out.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- manifest --------------------------------------------------------------------------------------------

def read_manifest(models_dir: Path) -> dict:
    path = Path(models_dir) / MANIFEST
    if not path.is_file():
        return {"models": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FetchError(f"{path}: not valid JSON ({exc}); expected the manifest `demoprof models` writes. "
                         f"Fix: delete it and run `demoprof models convert` / `fetch` again") from exc
    data.setdefault("models", {})
    return data


def record(models_dir: Path, name: str, entry: dict) -> None:
    """Add or replace one entry in manifest.json (written atomically)."""
    models_dir = Path(models_dir)
    data = read_manifest(models_dir)
    data["models"][name] = entry
    tmp = models_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, models_dir / MANIFEST)


# --- convert ---------------------------------------------------------------------------------------------

def convert(source: str | Path, kind: str, models_dir: str | Path | None = None, out: str | Path | None = None,
            allow_unsafe: bool = False, source_url: str | None = None, source_sha256: str | None = None,
            sha256_source: str = "computed") -> dict:
    """Check a CLIP/FaRL file, write it as safetensors (MIM keys kept) and record it in the manifest."""
    if kind not in CONVERTIBLE:
        raise ValueError(f"--kind must be one of {CONVERTIBLE}, got {kind!r}")
    source = Path(source).expanduser()
    mdir = Path(models_dir).expanduser() if models_dir else models.default_models_dir()
    target = Path(out).expanduser() if out else mdir / ASSETS[kind].target
    ckpt = models.read_checkpoint(source, kind, allow_unsafe=allow_unsafe)
    if ckpt.arch not in KIND_ARCHS[kind]:
        size = sum(t.numel() for t in ckpt.state_dict.values())
        raise ModelLoadError(
            f"{source}: a {ckpt.arch} model ({size / 1e6:.1f} M parameters), not {ASSETS[kind].title} "
            f"({' or '.join(KIND_ARCHS[kind])}); nothing was installed; expected the {models.ORIGINAL_FILES[kind]} "
            f"download. Fix: {fix_for(kind)}")
    if source_sha256 is None:
        source_sha256 = sha256_file(source)
        published = ASSETS[kind].sha256
        sha256_source = "published (matches)" if published and published == source_sha256 else "computed"
    tensors = {**ckpt.state_dict, **ckpt.mim_state}
    models.write_safetensors(target, tensors, {"name": kind, "model_cfg": ckpt.model_cfg, "arch": ckpt.arch,
                                               "source": source_url or source.name, "source_sha256": source_sha256})
    entry = {"name": kind, "title": ASSETS[kind].title, "file": _rel(target, mdir), "sha256": sha256_file(target),
             "source_url": source_url or str(source.resolve()),
             "source_file": source_url.rsplit("/", 1)[-1] if source_url else source.name,
             "source_sha256": source_sha256, "source_sha256_origin": sha256_source, "arch": ckpt.arch,
             "mim_keys": len(ckpt.mim_state), "licence": ASSETS[kind].licence, "date": _now()}
    if target.parent.resolve() == mdir.resolve() or out is None:
        mdir.mkdir(parents=True, exist_ok=True)
        record(mdir, kind, entry)
    return entry


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


# --- fetch -----------------------------------------------------------------------------------------------

def fetch(name: str, models_dir: str | Path | None = None, keep_download: bool = False, log=print) -> dict:
    """Download, check and install one asset; returns its manifest entry."""
    asset = ASSETS[name]
    mdir = Path(models_dir).expanduser() if models_dir else models.default_models_dir()
    mdir.mkdir(parents=True, exist_ok=True)
    filename = asset.url.rsplit("/", 1)[-1]
    fd, tmp_name = tempfile.mkstemp(prefix=filename + ".", suffix=".part", dir=mdir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        log(f"downloading {asset.title} from {asset.url}")
        try:
            download(asset.url, tmp)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(
                f"could not download {asset.url} ({reason}); this machine may be offline. Fix: download that URL "
                f"on a machine with internet and copy it here, then run "
                + (f"`demoprof models convert {filename} --kind {name} --models-dir {mdir}`" if name in CONVERTIBLE
                   else f"`demoprof models fetch {name}` there and copy {mdir / asset.target} over")) from exc
        digest = sha256_file(tmp)
        if asset.sha256 is not None and digest != asset.sha256:
            raise FetchError(
                f"sha256 mismatch for {filename} from {asset.url}: expected {asset.sha256}, got {digest}; the "
                f"download was removed. Fix: run `demoprof models fetch {name}` again; if it keeps failing the "
                f"file changed upstream or was altered on the way, so do not use it")
        if asset.sha256 is None:
            log(f"note: {asset.title} has no published sha256; recorded the computed one, {digest}, in "
                f"{mdir / MANIFEST} (compare it with a copy from another machine)")
        origin = "published (verified)" if asset.sha256 else "computed (no published digest)"
        if name in CONVERTIBLE:
            log(f"checking and converting to {asset.target}")
            entry = convert(tmp, name, mdir, source_url=asset.url, source_sha256=digest, sha256_source=origin)
            kept = mdir / filename
            if keep_download and not kept.exists():
                os.replace(tmp, kept)
                log(f"kept the original download: {kept}")
        else:
            entry = _install_file(asset, tmp, mdir, digest, origin)
        log(f"{asset.title}: {mdir / asset.target} (sha256 {entry['sha256']})")
        return entry
    except ModelLoadError as exc:
        raise FetchError(f"{asset.url} downloaded but is not a usable {asset.title}: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def _install_file(asset: Asset, download_path: Path, mdir: Path, digest: str, origin: str) -> dict:
    target = mdir / asset.target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if asset.member:
        try:
            with zipfile.ZipFile(download_path) as zf:
                names = [n for n in zf.namelist() if Path(n).name == asset.member]
                if not names:
                    raise FetchError(f"{asset.url}: the archive has no {asset.member}; expected the "
                                     f"{asset.title} pack. Fix: check the URL / release, then fetch again")
                with zf.open(names[0]) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile as exc:
            raise FetchError(f"{asset.url}: not a valid zip archive ({exc}). Fix: run "
                             f"`demoprof models fetch {asset.name}` again") from exc
        member_digest = sha256_file(part)
        if asset.member_sha256 and member_digest != asset.member_sha256:
            part.unlink()
            raise FetchError(f"sha256 mismatch for {asset.member} inside {asset.url}: expected "
                             f"{asset.member_sha256}, got {member_digest}; nothing was installed")
    else:
        shutil.copyfile(download_path, part)
    os.replace(part, target)
    entry = {"name": asset.name, "title": asset.title, "file": asset.target, "sha256": sha256_file(target),
             "source_url": asset.url, "source_file": asset.url.rsplit("/", 1)[-1], "source_sha256": digest,
             "source_sha256_origin": origin, "licence": asset.licence, "date": _now()}
    record(mdir, asset.name, entry)
    return entry


# --- list ------------------------------------------------------------------------------------------------

def status(models_dir: str | Path | None = None) -> list[dict]:
    """What is present in models_dir: one row per asset (with the file found, if any) and fine-tuned dir."""
    mdir = Path(models_dir).expanduser() if models_dir else models.default_models_dir()
    manifest = read_manifest(mdir)["models"] if mdir.is_dir() else {}
    rows = []
    for name, asset in ASSETS.items():
        if name in models.MODEL_FILES:
            path = models.find_model_file(name, mdir)
        else:
            path = mdir / asset.target if (mdir / asset.target).is_file() else None
        rows.append({"name": name, "title": asset.title, "present": path is not None,
                     "path": str(path) if path else str(mdir / asset.target),
                     "sha256": manifest.get(name, {}).get("sha256"), "licence": asset.licence,
                     "fix": None if path else f"demoprof models fetch {name}"})
    for directory in models.find_finetuned(mdir):
        rows.append({"name": directory.name, "title": "fine-tuned checkpoint", "present": True,
                     "path": str(directory), "sha256": None, "licence": "as its base model", "fix": None})
    shipped = find_shipped(mdir, package_copies=models_dir is None)
    if shipped is not None:
        rows.append({"name": "shipped", "title": f"{SHIPPED_NAME}, trained here (used by auto without CLIP/FaRL)",
                     "present": True, "path": str(shipped), "sha256": models.read_meta(shipped).get("sha256"),
                     "licence": SHIPPED_LICENCE, "fix": None, "note": f"licence: {SHIPPED_LICENCE}"})
    return rows


# --- CLI -------------------------------------------------------------------------------------------------

def register_cli(subparsers) -> None:
    """Add `models fetch|convert|list` to the `demoprof` argparse subcommands."""
    parser = subparsers.add_parser(
        "models", help="fetch, convert and list model weights",
        description="Put checked, safe model files into the models folder (see models/README.md). Nothing is "
                    "downloaded at run time: fetch once on a machine with internet, or convert files you have.")
    sub = parser.add_subparsers(dest="models_command", metavar="{fetch,convert,list}")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", default=None,
                        help="where weights live (default: $DEMOPROF_MODELS, else the checkout's models/, "
                             "else ~/.cache/demoprof/models)")

    p_fetch = sub.add_parser("fetch", parents=[common], help="download, check and convert weights (needs internet)")
    p_fetch.add_argument("names", nargs="*", metavar="NAME",
                         help=f"what to fetch: {', '.join(ASSETS)} or all (default: all)")
    p_fetch.add_argument("--keep-download", action="store_true",
                         help="keep the original CLIP/FaRL download next to the converted file")
    p_fetch.set_defaults(func=_cmd_fetch)

    p_conv = sub.add_parser("convert", parents=[common], help="check a CLIP/FaRL file you have and convert it")
    p_conv.add_argument("path", help="ViT-B-16.pt, an open_clip .bin/.pt/.safetensors, or a FaRL .pth")
    p_conv.add_argument("--kind", required=True, choices=CONVERTIBLE)
    p_conv.add_argument("--out", default=None, help="output file (default: the standard name in --models-dir)")
    p_conv.add_argument("--allow-unsafe", action="store_true",
                        help="allow full unpickling of a file that is not weights-only (trusted files only)")
    p_conv.set_defaults(func=_cmd_convert)

    p_list = sub.add_parser("list", parents=[common], help="show which weights are present")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_list.set_defaults(func=_cmd_list)


def _cmd_fetch(args) -> int:
    unknown = [n for n in args.names if n not in ASSETS and n != "all"]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; expected {', '.join(ASSETS)} or all", file=sys.stderr)
        return 2
    names = list(ASSETS) if not args.names or "all" in args.names else list(dict.fromkeys(args.names))
    failed = 0
    for name in names:
        try:
            fetch(name, args.models_dir, keep_download=args.keep_download)
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _cmd_convert(args) -> int:
    try:
        entry = convert(args.path, args.kind, args.models_dir, out=args.out, allow_unsafe=args.allow_unsafe)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FetchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    note = {"published (matches)": "matches the published sha256"}.get(entry["source_sha256_origin"],
                                                                       "no published sha256 matched; recorded")
    print(f"{args.kind}: wrote {entry['file']} (sha256 {entry['sha256']}); source sha256 {entry['source_sha256']} "
          f"({note}); {entry['mim_keys']} FaRL MIM tensors kept")
    return 0


def _cmd_list(args) -> int:
    try:
        rows = status(args.models_dir)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    mdir = Path(args.models_dir).expanduser() if args.models_dir else models.default_models_dir()
    print(f"models dir: {mdir}")
    for row in rows:
        state = "present" if row["present"] else "MISSING"
        hint = f"  -> {row['fix']}" if row["fix"] else ""
        print(f"  {row['name']:<12} {state:<8} {row['path']}{hint}")
        if row["present"] and row["sha256"]:
            print(f"  {'':<12} {'':<8} sha256 {row['sha256']}")
        if row.get("note"):
            print(f"  {'':<12} {'':<8} {row['note']}")
    return 0
