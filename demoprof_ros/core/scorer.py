"""Zero-shot demographic scoring: face crops against caption embeddings.

Each attribute is a softmax over its classes, each class represented by the mean of its normalised caption
embeddings (prompt ensembling). Joint scoring ranks the full descriptions of the enabled attributes
(9 x 2 x 7 = 126 with all on) the way the paper poses the task. A model fine-tuned on full descriptions
(FLYP) never saw single-attribute prompts, so it can score each attribute as the marginal of the joint
softmax instead (`attribute_scoring: descriptions`, declared in the checkpoint's meta.json): on the shipped
model's weights it lifted UTKFace age from 38 to 61 % (docs/evaluation.md). Text embeddings depend only on the model
and the prompts, so they are computed once per scorer (`refresh_text` after the text tower changes, as
training does each epoch); image crops are encoded in batches.

Speed (docs/performance.md has the measurements): captions are encoded only up to the longest end-of-text
token of each chunk (`encode_text_trimmed`, exact for CLIP's causal text tower, about 3x less work for the
~20-token prompts in a 77-token context), results leave the device in one transfer per frame, and the image
tower can be compiled for fixed batch sizes (`compile_image_encoder`, off by default).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .model_meta import ATTRIBUTE_SCORING, declared_attribute_scoring
from .models import LoadedModel
from .prompts import PromptSet
from .results import AttributeResult, FaceScores, JointCandidate
from .taxonomy import ATTRIBUTE_NAMES, CLASSES, Description, descriptions
from .transforms import preprocess_bgr


def validate_attributes(attributes: Sequence[str]) -> tuple[str, ...]:
    """Enabled attributes in canonical order; unknown names are an error, none enabled is allowed."""
    unknown = [a for a in attributes if a not in CLASSES]
    if unknown:
        raise ValueError(f"unknown attributes {unknown}; expected a subset of {list(ATTRIBUTE_NAMES)}")
    return tuple(a for a in ATTRIBUTE_NAMES if a in set(attributes))


def encode_text_trimmed(model: Any, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """open_clip `CLIP.encode_text`, computed only up to the longest end-of-text token of the batch.

    CLIP's text tower is causal and pools at the end-of-text token (the largest token id), so positions after
    the longest one cannot change any result: dropping them is exact, and CLIP prompts of ~20 tokens in a
    77-token context then cost about a third. Anything other than a stock open_clip CLIP (another text tower,
    no causal mask, other pooling, or an `encode_text` replaced on the instance) goes through
    `model.encode_text` unchanged.
    """
    import open_clip
    from open_clip.transformer import text_global_pool

    length = int(tokens.argmax(dim=-1).max()) + 1 if tokens.numel() else tokens.shape[-1]
    stock = (type(model).encode_text is open_clip.model.CLIP.encode_text and "encode_text" not in vars(model)
             and getattr(model, "attn_mask", None) is not None
             and getattr(model, "text_pool_type", "argmax") == "argmax"
             and tokens.shape[-1] == model.positional_embedding.shape[0])
    if not stock or length >= tokens.shape[-1]:
        return model.encode_text(tokens, normalize=normalize)
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = text_global_pool(x, tokens, "argmax")
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) \
            else x @ model.text_projection
    return torch.nn.functional.normalize(x, dim=-1) if normalize else x


def batch_buckets(batch_size: int) -> tuple[int, ...]:
    """Fixed batch sizes for a compiled image tower: powers of two below batch_size, and batch_size."""
    sizes, n = {batch_size}, 1
    while n < batch_size:
        sizes.add(n)
        n *= 2
    return tuple(sorted(sizes))


class ZeroShotScorer:
    """Scores face crops with a CLIP-like model and a prompt set.

    attribute_scoring: one of ATTRIBUTE_SCORING; None = the checkpoint's meta.json `attribute_scoring`, else
    "prompts" (what zero-shot CLIP / FaRL are scored with).
    """

    def __init__(self, loaded: LoadedModel, prompts: PromptSet | None = None,
                 attributes: Sequence[str] = ATTRIBUTE_NAMES, min_confidence: float = 0.4,
                 joint_top_k: int = 3, batch_size: int = 32, text_cache: Any = None,
                 attribute_scoring: str | None = None) -> None:
        if attribute_scoring is None:
            attribute_scoring = declared_attribute_scoring(loaded.meta)
        if attribute_scoring not in ATTRIBUTE_SCORING:
            raise ValueError(f"attribute_scoring must be one of {ATTRIBUTE_SCORING}, got {attribute_scoring!r}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if joint_top_k < 0 or batch_size < 1:
            raise ValueError("joint_top_k must be >= 0 and batch_size >= 1")
        self.loaded = loaded
        self.prompts = prompts or PromptSet()
        self.attributes = validate_attributes(attributes)
        self.min_confidence = min_confidence
        self.joint_top_k = joint_top_k
        self.batch_size = batch_size
        self.attribute_scoring = attribute_scoring
        # Optional on-disk cache of caption embeddings (text_cache.TextEmbeddingCache), valid only for the
        # weights the model was loaded with: refresh_text() drops it.
        self.text_cache = text_cache
        self.descriptions: list[Description] = descriptions(self.attributes) if self.attributes else []
        self._heads: dict[str, torch.Tensor] | None = None
        self._joint_head: torch.Tensor | None = None
        self._membership: dict[str, torch.Tensor] | None = None
        self._compiled: Any = None       # torch.compile'd encode_image, or None (eager)
        self._compile_mode = ""
        self.buckets: tuple[int, ...] = ()  # fixed batch sizes of the compiled tower (empty: eager)

    @property
    def device(self) -> torch.device:
        return next(self.loaded.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.loaded.model.parameters()).dtype

    # --- text side -------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_ensembles(self, ensembles: Sequence[Sequence[str]]) -> torch.Tensor:
        """One normalised embedding per ensemble: the re-normalised mean of its normalised captions."""
        if self.text_cache is not None:
            cached = self.text_cache.get(ensembles)
            if cached is not None:
                return cached.to(self.device)
        flat = [text for ensemble in ensembles for text in ensemble]
        tokens = self.loaded.tokenizer(flat).to(self.device)
        chunks = [encode_text_trimmed(self.loaded.model, tokens[i:i + 256], normalize=True)
                  for i in range(0, len(flat), 256)]
        embeddings = torch.cat(chunks).float()
        out, start = [], 0
        for ensemble in ensembles:
            mean = embeddings[start:start + len(ensemble)].mean(dim=0)
            out.append(mean / mean.norm())
            start += len(ensemble)
        result = torch.stack(out)
        if self.text_cache is not None:
            self.text_cache.put(ensembles, result)
        return result

    def refresh_text(self) -> None:
        """Forget cached text embeddings (after the text tower was changed, e.g. by fine-tuning)."""
        self.text_cache = None  # keyed by the weights as loaded, which no longer hold
        self._heads = None
        self._joint_head = None

    @property
    def heads(self) -> dict[str, torch.Tensor]:
        """Per attribute, a C x D matrix of class embeddings (computed on first use)."""
        if self._heads is None:
            self._heads = {
                attribute: self.encode_ensembles(
                    [self.prompts.class_prompts(attribute, c) for c in CLASSES[attribute]])
                for attribute in self.attributes
            }
        return self._heads

    @property
    def joint_head(self) -> torch.Tensor:
        """K x D embeddings of the full descriptions (K = 126 with all attributes on)."""
        if self._joint_head is None:
            self._joint_head = self.encode_ensembles(
                [self.prompts.description_prompts(d) for d in self.descriptions])
        return self._joint_head

    # --- image side ------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_images(self, crops_bgr: Sequence[np.ndarray]) -> torch.Tensor:
        """N x D normalised float32 image embeddings, encoded `batch_size` crops at a time."""
        loaded = self.loaded
        if not crops_bgr:
            return torch.empty(0, int(loaded.model_cfg.get("embed_dim", 0)), device=self.device)
        parts = []
        for i in range(0, len(crops_bgr), self.batch_size):
            batch = preprocess_bgr(crops_bgr[i:i + self.batch_size], loaded.image_size, loaded.mean,
                                   loaded.std, device=self.device, dtype=self.dtype)
            if self._compiled is None:
                parts.append(loaded.model.encode_image(batch, normalize=True).float())
            else:
                parts.append(self._encode_compiled(batch))
        return parts[0] if len(parts) == 1 and self._compiled is None else torch.cat(parts)

    def _encode_compiled(self, batch: torch.Tensor) -> torch.Tensor:
        n = batch.shape[0]
        size = next(b for b in self.buckets if b >= n)
        if size > n:  # zero rows: ViT rows are independent in eval, so the padding changes nothing else
            batch = torch.cat([batch, batch.new_zeros((size - n, *batch.shape[1:]))])
        if self._compile_mode == "reduce-overhead" and batch.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        # clone: CUDA-graph outputs are overwritten by the next replay
        return self._compiled(batch, normalize=True)[:n].float().clone()

    def compile_image_encoder(self, mode: str = "default", buckets: Sequence[int] | None = None) -> None:
        """torch.compile the image tower for fixed batch sizes (opt-in; call Profiler.warmup afterwards).

        Batches are zero-padded up to the next of `buckets` (default: batch_buckets(batch_size)), so each
        size compiles once instead of on every new face count; mode "reduce-overhead" also replays them as
        CUDA graphs on a GPU. Compiling takes tens of seconds per size and needs a C++ compiler on CPU.
        """
        sizes = tuple(sorted({int(b) for b in (buckets or batch_buckets(self.batch_size))}))
        if not sizes or sizes[0] < 1 or sizes[-1] < self.batch_size:
            raise ValueError(f"buckets must be integers >= 1 reaching batch_size={self.batch_size}, got {buckets}")
        self._compiled = torch.compile(self.loaded.model.encode_image, mode=mode, dynamic=False)
        self._compile_mode, self.buckets = mode, sizes

    @property
    def logit_scale(self) -> float:
        return float(self.loaded.model.logit_scale.detach().float().exp().clamp(max=100.0))

    # --- scoring ---------------------------------------------------------------------------------
    def attribute_probs(self, embeddings: torch.Tensor, joint: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per enabled attribute, N x C class probabilities (CLASSES order). `joint`: joint_probs(embeddings) when
        the caller has it already (description scoring reuses it instead of computing it again)."""
        if self.attribute_scoring == "descriptions":
            joint = self.joint_probs(embeddings) if joint is None else joint
            return {a: joint @ member.to(joint) for a, member in self.membership.items()}
        scale = self.logit_scale
        return {a: (scale * embeddings @ head.T).softmax(dim=-1) for a, head in self.heads.items()}

    @property
    def membership(self) -> dict[str, torch.Tensor]:
        """Per enabled attribute, a K x C 0/1 matrix: full description k carries class c (joint -> marginal)."""
        if self._membership is None:
            self._membership = {}
            for a in self.attributes:
                member = torch.zeros(len(self.descriptions), len(CLASSES[a]), device=self.device)
                for k, d in enumerate(self.descriptions):
                    member[k, CLASSES[a].index(d.as_dict()[a])] = 1.0
                self._membership[a] = member
        return self._membership

    def joint_probs(self, embeddings: torch.Tensor) -> torch.Tensor:
        """N x K probabilities over the full descriptions (`self.descriptions` order)."""
        return (self.logit_scale * embeddings @ self.joint_head.T).softmax(dim=-1)

    def score_embeddings(self, embeddings: torch.Tensor) -> list[FaceScores]:
        n = embeddings.shape[0]
        if n == 0 or not self.attributes:
            return [FaceScores(attributes={}) for _ in range(n)]
        # Everything leaves the device in one transfer (one sync per frame on a GPU, not one per head).
        jp = self.joint_probs(embeddings) if self.joint_top_k or self.attribute_scoring == "descriptions" else None
        parts = list(self.attribute_probs(embeddings, jp).values())
        if self.joint_top_k:
            values, indices = jp.topk(min(self.joint_top_k, jp.shape[1]), dim=-1)
            parts += [values, indices.float()]  # indices < 2**24: exact in float32
        host = torch.cat(parts, dim=1).cpu().numpy()
        probs, start = {}, 0
        for a in self.attributes:
            probs[a] = host[:, start:start + len(CLASSES[a])]
            start += len(CLASSES[a])
        joint = None
        if self.joint_top_k:
            k = (host.shape[1] - start) // 2
            joint = (host[:, start:start + k], host[:, start + k:].astype(np.int64))
        results = []
        for i in range(n):
            attributes = {
                a: AttributeResult.from_distribution(dict(zip(CLASSES[a], map(float, p[i]))), self.min_confidence)
                for a, p in probs.items()
            }
            candidates = []
            if joint is not None:
                for value, index in zip(joint[0][i], joint[1][i]):
                    d = self.descriptions[int(index)]
                    candidates.append(JointCandidate(classes=d.as_dict(), text=self.prompts.description_text(d),
                                                     probability=float(value)))
            results.append(FaceScores(attributes=attributes, joint=candidates))
        return results

    def score(self, crops_bgr: Sequence[np.ndarray]) -> list[FaceScores]:
        """Profiles for a list of BGR face crops (one FaceScores each, same order)."""
        if not self.attributes:
            return [FaceScores(attributes={}) for _ in crops_bgr]
        return self.score_embeddings(self.encode_images(crops_bgr))
