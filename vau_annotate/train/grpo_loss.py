"""The arithmetic of one GRPO update, as pure tensor functions (no model, no I/O).

Kept apart from the recipe (`grpo.py`) so it can be checked number by number against a small
hand-computed case (tests/test_train_grpo.py). Notation follows DeepSeekMath's GRPO (Shao et al.
2024, Eq. 3), which VAU-R1, Vad-R1 and SRVAU-R1 all train with:

    A_i      = (r_i - mean(r)) / (std(r) + eps)            group-normalised advantage, one per completion
    ratio_t  = exp(logp_t - logp_old_t)                    per completion token
    L_t      = -min(ratio_t * A_i, clip(ratio_t, 1-e, 1+e) * A_i) + beta * KL_t
    KL_t     = exp(logp_ref_t - logp_t) - (logp_ref_t - logp_t) - 1   (Schulman's k3 estimator, >= 0)

The loss is the token mean: sum over every completion token of the step divided by the number of
those tokens (DAPO's "token-level" mean), so a long completion weighs by its length and gradient
accumulation over several micro-batches gives exactly the large-batch loss when each micro-batch is
divided by the step's total token count (`normaliser`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ADVANTAGE_EPS = 1e-4  # added to the group std, as in TRL / Video-R1, so a zero-variance group gives 0


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale_std: bool = True) -> torch.Tensor:
    """Advantages for rewards laid out as consecutive groups of `group_size` completions per prompt.

    `scale_std=False` keeps only the mean-centring (Dr. GRPO, Liu et al. 2025): groups whose rewards
    barely differ are then not blown up to unit scale. The std is the unbiased sample std
    (`torch.std`), as DeepSeekMath's reference implementation and TRL use.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, got shape {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_std:
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        centred = centred / (std + ADVANTAGE_EPS)
    return centred.reshape(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate k3 = exp(d) - d - 1 with d = ref - policy."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability of each target token under the logits at the same position, (B, T).

    The caller aligns them: the logits at position t predict token t+1, so a completion of T tokens
    is scored by the T logits ending one before the sequence's last. Computed in float32 (a bf16
    log-softmax over a 150k vocabulary loses the small ratio changes GRPO clips).
    """
    scores = logits.float().log_softmax(dim=-1)
    return torch.gather(scores, 2, targets.unsqueeze(-1)).squeeze(-1)


@dataclass
class LossParts:
    """The loss of one micro-batch and the sums its statistics are averaged from."""

    loss: torch.Tensor  # already divided by `normaliser`: sum these over the step's micro-batches
    tokens: float  # completion tokens in this micro-batch
    kl_sum: float  # sum of per-token KL over those tokens
    clipped_tokens: float  # tokens whose clipped term was the active one (no gradient through the ratio)
    ratio_sum: float


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.04,
    normaliser: float | None = None,
) -> LossParts:
    """Clipped-ratio policy loss + beta * k3 KL, summed over completion tokens / `normaliser`.

    Shapes: `logp`, `old_logp`, `ref_logp`, `mask` are (B, T) over completion tokens; `advantages`
    is (B,). `mask` is 1 on real completion tokens (up to and including the end-of-turn token).
    `normaliser` defaults to this micro-batch's token count (plain token mean); the recipe passes
    the step's total so that accumulated micro-batches add up to the step's token mean.
    `epsilon_high` (DAPO's clip-higher) defaults to `epsilon`.
    """
    mask = mask.to(logp.dtype)
    tokens = float(mask.sum().item())
    normaliser = tokens if normaliser is None else normaliser
    high = epsilon if epsilon_high is None else epsilon_high
    adv = advantages.to(logp.dtype).unsqueeze(1)
    ratio = torch.exp(logp - old_logp)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon, 1 + high)
    unclipped_term, clipped_term = ratio * adv, clipped_ratio * adv
    per_token = -torch.min(unclipped_term, clipped_term)
    kl = torch.zeros_like(logp)
    if ref_logp is not None and beta != 0.0:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + beta * kl
    loss = (per_token * mask).sum() / max(normaliser, 1.0)
    with torch.no_grad():
        clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
        return LossParts(
            loss=loss,
            tokens=tokens,
            kl_sum=float((kl * mask).sum().item()),
            clipped_tokens=float((clipped.to(mask.dtype) * mask).sum().item()),
            ratio_sum=float((ratio * mask).sum().item()),
        )
