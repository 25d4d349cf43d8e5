"""Per-epoch validation: contrastive loss and zero-shot macro-F1 per attribute and for the full description.

The text head is rebuilt from the model's current text tower every time (a fresh scorer.ZeroShotScorer), so
what is measured is what the fine-tuned checkpoint will do. Coarse validation labels (UTKFace race 'Asian',
'Others') are scored in their coarse vocabulary with the probabilities merged into it (evaluation.coarse);
samples without a label for an attribute do not count for it.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.models import LoadedModel
from ..core.prompts import PromptSet
from ..core.scorer import ZeroShotScorer, encode_text_trimmed
from ..core.taxonomy import CLASSES, Description
from ..core.transforms import normalize_uint8
from ..evaluation.coarse import in_vocabulary
from ..evaluation.metrics import classification_report
from .datasets import Sample
from .losses import ContrastiveLoss


@torch.no_grad()
def validate(loaded: LoadedModel, prompts: PromptSet, attributes: Sequence[str], samples: Sequence[Sample],
             loader: Iterable, device: torch.device, autocast_dtype: torch.dtype | None,
             loss_batch_size: int = 64, attribute_scoring: str = "prompts") -> dict[str, Any]:
    """Validation loss and zero-shot macro-F1 per attribute and for the joint description, with the text
    head rebuilt from the model's current text tower (a fresh ZeroShotScorer).

    The loss uses fixed captions (first template) over chunks of `loss_batch_size` (pass the training batch
    size: the contrastive loss grows with the number of negatives, so only equal sizes compare). Attributes are
    scored as the model will be (`attribute_scoring`, core/scorer.py), so selection picks the epoch users get."""
    model = loaded.model
    was_training = model.training
    model.eval()
    scorer = ZeroShotScorer(loaded, prompts, attributes=attributes, joint_top_k=0,
                            attribute_scoring=attribute_scoring)
    loss_fn = ContrastiveLoss()
    probs: dict[str, list[torch.Tensor]] = {a: [] for a in scorer.attributes}
    joint: list[torch.Tensor] = []
    order: list[torch.Tensor] = []
    loss_sum, n = 0.0, 0
    for images, index, captions in loader:
        x = normalize_uint8(images.to(device, non_blocking=True), loaded.mean, loaded.std)
        tokens = loaded.tokenizer(captions).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            image_features = model.encode_image(x)
            text_features = encode_text_trimmed(model, tokens, normalize=False)
        for i in range(0, len(captions), loss_batch_size):  # the training batch size: comparable losses
            if len(captions[i:i + loss_batch_size]) > 1:
                chunk = slice(i, i + loss_batch_size)
                loss_sum += float(loss_fn(image_features[chunk], text_features[chunk], model.logit_scale)) \
                    * len(captions[chunk])
                n += len(captions[chunk])
        embeddings = F.normalize(image_features.float(), dim=-1)
        jp = scorer.joint_probs(embeddings)
        for attribute, p in scorer.attribute_probs(embeddings, jp).items():
            probs[attribute].append(p.cpu())
        joint.append(jp.argmax(dim=-1).cpu())
        order.append(index)
    model.train(was_training)
    index = torch.cat(order).tolist()
    ordered = [samples[i] for i in index]
    result: dict[str, Any] = {"val_loss": loss_sum / n if n else float("nan")}
    for attribute in scorer.attributes:
        result[f"f1_{attribute}"] = attribute_f1(attribute, torch.cat(probs[attribute]).numpy(),
                                                 [s.labels.get(attribute) for s in ordered])
    result["f1_joint"] = joint_f1(scorer.descriptions, torch.cat(joint).tolist(), ordered, scorer.attributes)
    return result


def attribute_f1(attribute: str, probs: np.ndarray, labels: Sequence[str | None]) -> float:
    """Macro-F1 of the arg-max class; coarse labels scored in their coarse vocabulary; NaN if unlabelled."""
    merged = in_vocabulary(probs, labels, attribute)
    kept = merged.kept
    if not kept.any():
        return float("nan")
    truth = [t for t in merged.truth if t is not None]
    predicted = [p for p, k in zip(merged.predicted, kept) if k]
    return float(classification_report(truth, predicted, merged.vocab)["macro_f1"])


def joint_f1(descriptions: Sequence[Description], predicted: Sequence[int], samples: Sequence[Sample],
             attributes: Sequence[str]) -> float:
    """Macro-F1 over full descriptions for samples with a fine label for every enabled attribute."""
    y_true, y_pred = [], []
    for sample, index in zip(samples, predicted):
        labels = {a: sample.labels.get(a) for a in attributes}
        if all(labels[a] in CLASSES[a] for a in attributes):
            y_true.append(Description(**labels))
            y_pred.append(descriptions[index])
    if not y_true:
        return float("nan")
    return float(classification_report(y_true, y_pred, list(descriptions))["macro_f1"])


def selection_score(metrics: Mapping[str, float], attributes: Sequence[str], selection: str) -> float:
    """`mean_f1`: the mean macro-F1 over the attributes with labels (each counts the same); `joint_f1`."""
    if selection == "joint_f1":
        return float(metrics["f1_joint"])
    values = [metrics[f"f1_{a}"] for a in attributes if not math.isnan(metrics[f"f1_{a}"])]
    return float(np.mean(values)) if values else float("nan")

