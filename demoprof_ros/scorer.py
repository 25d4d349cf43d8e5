"""Zero-shot demographic scoring: face crops against caption embeddings.

Each attribute is a softmax over its classes, each class represented by the mean of its normalised caption
embeddings (prompt ensembling). Joint scoring ranks the full descriptions of the enabled attributes
(9 x 2 x 7 = 126 with all on) the way the paper poses the task. Text embeddings depend only on the model
and the prompts, so they are computed once per scorer (`refresh_text` after the text tower changes, as
training does each epoch); image crops are encoded in batches.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

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


class ZeroShotScorer:
    """Scores face crops with a CLIP-like model and a prompt set."""

    def __init__(self, loaded: LoadedModel, prompts: PromptSet | None = None,
                 attributes: Sequence[str] = ATTRIBUTE_NAMES, min_confidence: float = 0.4,
                 joint_top_k: int = 3, batch_size: int = 32) -> None:
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
        self.descriptions: list[Description] = descriptions(self.attributes) if self.attributes else []
        self._heads: dict[str, torch.Tensor] | None = None
        self._joint_head: torch.Tensor | None = None

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
        flat = [text for ensemble in ensembles for text in ensemble]
        tokens = self.loaded.tokenizer(flat).to(self.device)
        chunks = [self.loaded.model.encode_text(tokens[i:i + 256], normalize=True)
                  for i in range(0, len(flat), 256)]
        embeddings = torch.cat(chunks).float()
        out, start = [], 0
        for ensemble in ensembles:
            mean = embeddings[start:start + len(ensemble)].mean(dim=0)
            out.append(mean / mean.norm())
            start += len(ensemble)
        return torch.stack(out)

    def refresh_text(self) -> None:
        """Forget cached text embeddings (after the text tower was changed, e.g. by fine-tuning)."""
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
            parts.append(loaded.model.encode_image(batch, normalize=True).float())
        return torch.cat(parts)

    @property
    def logit_scale(self) -> float:
        return float(self.loaded.model.logit_scale.detach().float().exp().clamp(max=100.0))

    # --- scoring ---------------------------------------------------------------------------------
    def attribute_probs(self, embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per enabled attribute, N x C class probabilities."""
        scale = self.logit_scale
        return {a: (scale * embeddings @ head.T).softmax(dim=-1) for a, head in self.heads.items()}

    def joint_probs(self, embeddings: torch.Tensor) -> torch.Tensor:
        """N x K probabilities over the full descriptions (`self.descriptions` order)."""
        return (self.logit_scale * embeddings @ self.joint_head.T).softmax(dim=-1)

    def score_embeddings(self, embeddings: torch.Tensor) -> list[FaceScores]:
        n = embeddings.shape[0]
        if n == 0 or not self.attributes:
            return [FaceScores(attributes={}) for _ in range(n)]
        probs = {a: p.cpu().numpy() for a, p in self.attribute_probs(embeddings).items()}
        joint = None
        if self.joint_top_k:
            jp = self.joint_probs(embeddings)
            values, indices = jp.topk(min(self.joint_top_k, jp.shape[1]), dim=-1)
            joint = (values.cpu().numpy(), indices.cpu().numpy())
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
