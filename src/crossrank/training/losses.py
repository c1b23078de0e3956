"""Ranking losses over score lists of shape (groups, list size); column 0 is the positive."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pointwise_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against soft targets in [0, 1] (grade / max grade).

    Also what keeps sigmoid(logit) meaningful as a relevance score: listwise losses only
    fix score differences, not where the scores sit.
    """
    return F.binary_cross_entropy_with_logits(logits, targets)


def listwise_softmax_ce(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax cross-entropy of the positive (column 0) against its k negatives.

    ``mask`` (same shape, bool) marks real entries; lists shorter than the widest in the
    batch are padded with masked entries.
    """
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return -torch.log_softmax(logits, dim=-1)[:, 0].mean()


def distillation_kl(
    logits: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL(teacher || student) between the two softmax distributions over each list.

    Only the teacher's ranking of the list is learnt, not its score scale, so a bi-encoder's
    scaled cosines can teach a cross-encoder's logits.
    """
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
        teacher = teacher.masked_fill(~mask, float("-inf"))
    target = torch.softmax(teacher / temperature, dim=-1)
    log_student = torch.log_softmax(logits / temperature, dim=-1)
    # masked entries have target 0; xlogy gives 0 there instead of 0 * -inf
    kl = torch.special.xlogy(target, target) - target * log_student.masked_fill(target == 0, 0.0)
    return kl.sum(-1).mean() * temperature**2
