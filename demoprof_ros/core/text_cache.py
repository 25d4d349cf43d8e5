"""On-disk cache of caption embeddings, so that a CLI call does not re-encode the 441 prompts every time.

Encoding the prompt ensembles is the slow part of start-up (about 18 s with ViT-B/16 on a 2-core CPU), and the
result depends only on the model and the texts. Entries are keyed by

- the model: sha256 of its weights file (remembered per resolved path, size and mtime, so a 600 MB file is
  hashed once), or of its tensors when it has no file (the tiny test models); its architecture (model_cfg);
  its parameter dtype and device type; the open_clip and torch versions (tokenizer and kernels);
- the exact list of caption ensembles encoded (so any prompt edit, attribute switch or taxonomy change is a
  new entry).

Only caption embeddings are stored, never anything computed from a face. A missing, unreadable or corrupt
entry is ignored (and rewritten); a cache folder that cannot be written only costs the speed-up, with one
warning. Location: `$DEMOPROF_CACHE/text`, else `$XDG_CACHE_HOME/demoprof/text`, else `~/.cache/demoprof/text`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

log = logging.getLogger("demoprof.text_cache")

FORMAT = "1"
_HASH_INDEX = "file_hashes.json"


def default_text_cache_dir() -> Path:
    """$DEMOPROF_CACHE/text, else $XDG_CACHE_HOME/demoprof/text, else ~/.cache/demoprof/text."""
    if os.environ.get("DEMOPROF_CACHE"):
        return Path(os.environ["DEMOPROF_CACHE"]).expanduser() / "text"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "demoprof" / "text"


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_sha256(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """sha256 of a file, remembered in `root`/file_hashes.json by resolved path, size and mtime."""
    path = Path(path).resolve()
    stat = path.stat()
    index_path = Path(root) / _HASH_INDEX
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path))
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns \
            and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    index[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
    try:
        _atomic_write(index_path, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1), encoding="utf-8"))
    except OSError as exc:
        log.debug("could not remember the hash of %s: %s", path, exc)
    return digest.hexdigest()


def _tensor_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_key(loaded: Any, root: str | os.PathLike) -> str:
    """Everything the caption embeddings of `loaded` (a LoadedModel) depend on, hashed."""
    import open_clip

    source = Path(loaded.source) if loaded.source else None
    weights = file_sha256(source, root) if source is not None and source.is_file() else _tensor_sha256(loaded.model)
    param = next(loaded.model.parameters())
    parts = {"weights": weights, "model_cfg": loaded.model_cfg, "dtype": str(param.dtype),
             "device": param.device.type, "open_clip": open_clip.__version__, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class TextEmbeddingCache:
    """Caption-ensemble embeddings of one model on disk: `<root>/<sha256(model key, texts)>.safetensors`."""

    def __init__(self, root: str | os.PathLike, model_key: str) -> None:
        self.root = Path(root)
        self.model_key = model_key
        self.hits = 0
        self.misses = 0
        self._warned = False

    @classmethod
    def for_model(cls, loaded: Any, root: str | os.PathLike | None = None) -> "TextEmbeddingCache":
        root = Path(root) if root is not None else default_text_cache_dir()
        return cls(root, model_key(loaded, root))

    def path_for(self, ensembles: Sequence[Sequence[str]]) -> Path:
        texts = json.dumps([list(e) for e in ensembles], ensure_ascii=False)
        return self.root / (hashlib.sha256((self.model_key + "\n" + texts).encode()).hexdigest()[:40]
                            + ".safetensors")

    def get(self, ensembles: Sequence[Sequence[str]]) -> torch.Tensor | None:
        """The cached N x D float32 embeddings, or None (absent, unreadable or not what was asked for)."""
        path = self.path_for(ensembles)
        if not path.is_file():
            self.misses += 1
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensor = load_file(str(path))["embeddings"]
            ok = (tensor.ndim == 2 and tensor.shape[0] == len(ensembles) and tensor.dtype == torch.float32
                  and bool(torch.isfinite(tensor).all()))
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as exc:
            log.warning("ignoring unreadable text-embedding cache entry %s (%s); it will be rebuilt", path, exc)
            ok = False
        if not ok:
            self.misses += 1
            return None
        self.hits += 1
        return tensor

    def put(self, ensembles: Sequence[Sequence[str]], embeddings: torch.Tensor) -> None:
        """Store (atomically); a folder that cannot be written is logged once, never fatal."""
        from safetensors.torch import save_file

        path = self.path_for(ensembles)
        tensor = embeddings.detach().to("cpu", torch.float32).contiguous()
        try:
            _atomic_write(path, lambda tmp: save_file({"embeddings": tensor}, tmp,
                                                      metadata={"format": FORMAT, "n": str(len(ensembles))}))
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write the text-embedding cache in %s (%s); continuing without it", self.root,
                            exc)
                self._warned = True
