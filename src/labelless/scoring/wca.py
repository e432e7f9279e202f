"""WCA: weighted visual-text cross alignment (Li et al., ICML 2024; docs/methods/zeroshot.md).

Crops ``v_n`` of an image are weighted by their similarity to the whole image ``v``, descriptions
``e_cm`` of a class by their similarity to the class's label prompt ``t_c``:

    w_n  = softmax_n(exp(image_scale) * cos(v, v_n))        (image_scale = 4: temperature e^-4)
    u_cm = softmax_m(exp(text_scale)  * cos(e_cm, t_c))     (text_scale  = 2: temperature e^-2)

The scales are log-inverse-temperatures, as in WCA's code, so ``scale=0`` gives a multiplier of 1
(not uniform weights) and uniform weights are obtained by passing them explicitly (or, in the
limit, with a very negative scale).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def crop_weights(
    global_embed: torch.Tensor, crop_embeds: torch.Tensor, image_scale: float = 4.0
) -> torch.Tensor:
    """``softmax_n(exp(image_scale) * cos(v, v_n))``.

    global_embed ``(B, d)``, crop_embeds ``(B, N, d)`` -> weights ``(B, N)`` summing to 1 over n.
    """
    v = F.normalize(global_embed, dim=-1)  # (B, d)
    vn = F.normalize(crop_embeds, dim=-1)  # (B, N, d)
    cos = torch.einsum("bd,bnd->bn", v, vn)  # (B, N)
    return torch.softmax(math.exp(image_scale) * cos, dim=-1)  # (B, N)


def text_weights(
    desc_embeds: torch.Tensor,
    mask: torch.Tensor | None,
    label_embeds: torch.Tensor,
    text_scale: float = 2.0,
) -> torch.Tensor:
    """``softmax_m(exp(text_scale) * cos(e_cm, t_c))`` over each class's real descriptions.

    desc_embeds ``(C, M, d)``, mask ``(C, M)`` bool (None: all valid), label_embeds ``(C, d)``
    -> weights ``(C, M)``, zero on padding, summing to 1 over m.
    """
    e = F.normalize(desc_embeds, dim=-1)  # (C, M, d)
    t = F.normalize(label_embeds, dim=-1)  # (C, d)
    logits = math.exp(text_scale) * torch.einsum("cmd,cd->cm", e, t)  # (C, M)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1)  # (C, M)


def wca_scores(
    global_embed: torch.Tensor,
    crop_embeds: torch.Tensor,
    desc_embeds: torch.Tensor,
    mask: torch.Tensor | None,
    label_embeds: torch.Tensor | None,
    image_scale: float = 4.0,
    text_scale: float = 2.0,
    normalize: bool = True,
    image_weights: torch.Tensor | None = None,
    desc_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """WCA score of every image against every class, ``(B, C)`` (cosine scale, no logit scale).

    global_embed ``(B, d)`` (used only for the crop weights), crop_embeds ``(B, N, d)``,
    desc_embeds ``(C, M, d)``, mask ``(C, M)`` bool, label_embeds ``(C, d)``.

    ``normalize=True`` (WCA's code): ``<norm(sum_n w_n v_n), norm(sum_m u_cm e_cm)>``.
    ``normalize=False`` (the paper's Eq. 10): ``sum_n sum_m w_n u_cm cos(v_n, e_cm)``; because the
    double sum is bilinear it is computed as ``<sum_n w_n v_n, sum_m u_cm e_cm>`` on normalised
    ``v_n``, ``e_cm``. The image-side norm never changes the argmax; the per-class text-side norm
    can.

    ``image_weights (B, N)`` and ``desc_weights (C, M)`` replace the softmax weights (e.g. uniform
    weights, or FAIR's u = 1); with ``desc_weights`` given, ``label_embeds`` may be None.
    """
    vn = F.normalize(crop_embeds, dim=-1)  # (B, N, d)
    e = F.normalize(desc_embeds, dim=-1)  # (C, M, d)
    if mask is not None:
        e = e * mask.unsqueeze(-1).to(e.dtype)  # padding contributes nothing
    w = crop_weights(global_embed, vn, image_scale) if image_weights is None else image_weights
    if desc_weights is not None:
        u = desc_weights  # (C, M)
    elif label_embeds is not None:
        u = text_weights(e, mask, label_embeds, text_scale)  # (C, M)
    else:
        raise ValueError(
            "wca_scores needs label_embeds (C, d) for the text weights, or desc_weights"
        )
    img = torch.einsum("bn,bnd->bd", w, vn)  # (B, d) weighted crop embedding
    txt = torch.einsum("cm,cmd->cd", u, e)  # (C, d) weighted description embedding
    if normalize:
        img = F.normalize(img, dim=-1)
        txt = F.normalize(txt, dim=-1)
    return img @ txt.t()  # (B, C)
