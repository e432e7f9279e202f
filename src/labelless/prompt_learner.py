"""CoOp-style learnable text prompts injected into a frozen CLIP text encoder (both backends).

A prompt is ``[SOS] c_1 ... c_M <class name tokens> . [EOT] [pad]...`` where the context vectors
``c_1..c_M`` (shared by all classes) are learned in the token-embedding space (CoOp, Zhou et al.
2022; DeFT's positive/negative prompts are two such contexts). Each class is tokenised once with
``M`` placeholder words in place of the context; their embeddings are then swapped for the
learned vectors and the sequence runs through the rest of the text tower:

* open_clip: ``token_embedding`` -> ``+ positional_embedding`` -> ``transformer`` (causal mask)
  -> ``ln_final`` -> the EOT token (argmax of the token ids) -> ``@ text_projection``;
* Hugging Face ``CLIPTextModel``: ``embeddings(inputs_embeds=...)`` (adds position embeddings) ->
  ``encoder`` (causal mask) -> ``final_layer_norm`` -> the EOS token -> ``text_projection``.

When the context equals the embedded tokens of the placeholder words the output equals
``backbone.encode_text`` of the plain sentence (tested), so the injection is exact.

The text tower stays frozen (its parameters are not part of the prompt module); gradients flow
through it to the context vectors only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from labelless.errors import ConfigError

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone

#: The placeholder word CoOp uses for every context slot ("X X X X {class}.").
PLACEHOLDER = "X"


class TextTower:
    """Backend-independent access to a backbone's text tower, from token embeddings onwards.

    Not an ``nn.Module`` on purpose: holding it never registers the backbone's parameters under
    a prompt module (so ``PromptLearner.parameters()`` are exactly the contexts).
    """

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.backend = backbone.backend
        if self.backend not in ("openclip", "hf"):
            raise ConfigError(f"learnable prompts support open_clip and hf backbones, not '{self.backend}'")
        if self.backend == "openclip" and not hasattr(backbone.model, "token_embedding"):
            raise ConfigError(
                f"{backbone.spec}: learnable prompts need a CLIP-style text tower with token_embedding"
            )

    @property
    def width(self) -> int:
        return int(self.token_embedding.weight.shape[1])

    @property
    def token_embedding(self) -> nn.Embedding:
        m = self.backbone.model
        return m.token_embedding if self.backend == "openclip" else m.text_model.embeddings.token_embedding

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ids (T, L), attention_mask (T, L) or None)`` on the backbone's device."""
        tok = self.backbone.tokenize(list(texts)).to(self.backbone.device)
        if self.backend == "hf":
            return tok[:, 0], tok[:, 1]
        return tok, None

    def eot_index(self, ids: torch.Tensor) -> torch.Tensor:
        """``(T,)`` position of the token whose final state is the sentence embedding."""
        if self.backend == "openclip":
            # open_clip's argmax pooling: the EOT id is the largest id of the BPE vocabulary.
            return ids.argmax(dim=-1)
        eos = self.backbone.model.text_model.config.eos_token_id
        if eos == 2:  # legacy configs: transformers pools at argmax(ids) as well
            return ids.argmax(dim=-1)
        return (ids == eos).int().argmax(dim=-1)

    def encode_embeddings(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Unnormalised text features ``(T, d)`` from token embeddings ``x (T, L, w)``.

        ``ids (T, L)`` only locate the EOT token; the causal mask makes padding irrelevant to it.
        """
        m = self.backbone.model
        idx = self.eot_index(ids)
        rows = torch.arange(x.shape[0], device=x.device)
        if self.backend == "openclip":
            if getattr(m, "text_pool_type", "argmax") != "argmax" or getattr(m, "cls_emb", None) is not None:
                raise ConfigError(f"{self.backbone.spec}: learnable prompts need argmax (EOT) text pooling")
            cast = m.transformer.get_cast_dtype()
            x = x.to(cast) + m.positional_embedding[: x.shape[1]].to(cast)
            x = m.transformer(x, attn_mask=m.attn_mask)
            x = m.ln_final(x)
            pooled = x[rows, idx]
            proj = m.text_projection
            if proj is None:
                return pooled
            return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        from transformers.masking_utils import create_causal_mask

        tm = m.text_model
        h = tm.embeddings(inputs_embeds=x)
        mask = create_causal_mask(config=tm.config, inputs_embeds=h, attention_mask=None, past_key_values=None)
        h = tm.encoder(inputs_embeds=h, attention_mask=mask, is_causal=True).last_hidden_state
        h = tm.final_layer_norm(h)
        return m.text_projection(h[rows, idx])


class PromptLearner(nn.Module):
    """One or more named learnable contexts over the same C class names.

    ``PromptLearner(backbone, classnames, names=("pos", "neg"), n_ctx=16)`` builds DeFT's
    positive and negative prompts; ``learner("pos")`` returns the ``(C, d)`` L2-normalised class
    features of the positive prompt, with gradients to ``learner.ctx["pos"]`` only.

    n_ctx: context length M (CoOp/DeFT: 16).
    init: ``None`` draws every context from N(0, init_std^2) (CoOp/DeFT); a string (e.g.
        ``"a photo of a"``) initialises every context from that phrase's token embeddings, and
        then ``n_ctx`` is the phrase's token count (CoOp's ``ctx_init``).
    init_std: standard deviation of the random initialisation (CoOp/DeFT: 0.02).
    generator: a ``torch.Generator`` for the random initialisation (reproducible contexts).
    class_init: ``{context name: one phrase per class}`` makes those contexts class-specific,
        ``(C, M, w)`` instead of ``(M, w)`` (CoOp's class-specific context): each class's first
        ``min(M, tokens)`` vectors are the token embeddings of its phrase, the others start as
        the shared context would (``init`` / ``init_std``).
    """

    def __init__(
        self,
        backbone: Backbone,
        classnames: list[str],
        names: tuple[str, ...] = ("ctx",),
        n_ctx: int = 16,
        init: str | None = None,
        init_std: float = 0.02,
        generator: torch.Generator | None = None,
        class_init: dict[str, list[str]] | None = None,
    ):
        super().__init__()
        if not classnames:
            raise ConfigError("PromptLearner needs at least one class name")
        self.tower = TextTower(backbone)
        emb = self.tower.token_embedding
        device = emb.weight.device
        if init:
            init_ids, _ = self.tower.tokenize([init])
            n_init = int(self.tower.eot_index(init_ids)[0]) - 1  # tokens between SOS and EOT
            if n_init < 1:
                raise ConfigError(f"prompt init '{init}' has no tokens")
            n_ctx = n_init
            with torch.no_grad():
                base = emb(init_ids)[0, 1 : 1 + n_ctx].float()  # (M, w)
        if n_ctx < 1:
            raise ConfigError(f"n_ctx must be >= 1, got {n_ctx}")
        self.n_ctx = int(n_ctx)
        self.classnames = list(classnames)
        self.names = tuple(names)
        ctx = {}
        for name in self.names:
            if init:
                ctx[name] = nn.Parameter(base.clone())
            else:
                t = torch.empty(self.n_ctx, self.tower.width)
                t.normal_(0.0, init_std, generator=generator)
                ctx[name] = nn.Parameter(t.to(device))
        for name, phrases in (class_init or {}).items():
            ctx[name] = nn.Parameter(self._class_context(ctx[name].detach(), list(phrases), len(classnames)))
        self.ctx = nn.ParameterDict(ctx)
        placeholder = " ".join([PLACEHOLDER] * self.n_ctx)
        prompts = [f"{placeholder} {c.replace('_', ' ')}." for c in self.classnames]
        ids, _ = self.tower.tokenize(prompts)
        eot = self.tower.eot_index(ids)
        if int(eot.max()) >= ids.shape[1] - 1 or bool((eot <= self.n_ctx).any()):
            raise ConfigError(
                f"a prompt of {self.n_ctx} context tokens plus a class name does not fit the text "
                f"encoder's context length {ids.shape[1]}; lower n_ctx"
            )
        with torch.no_grad():
            full = emb(ids).float()  # (C, L, w)
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("token_prefix", full[:, :1].clone(), persistent=False)  # SOS
        self.register_buffer("token_suffix", full[:, 1 + self.n_ctx :].clone(), persistent=False)

    def _class_context(self, shared: torch.Tensor, phrases: list[str], n_cls: int) -> torch.Tensor:
        """``(C, M, w)``: ``shared (M, w)`` per class, its first vectors from each phrase's tokens."""
        if len(phrases) != n_cls:
            raise ConfigError(f"class_init needs one phrase per class ({n_cls}), got {len(phrases)}")
        ids, _ = self.tower.tokenize(phrases)
        n_tok = self.tower.eot_index(ids) - 1  # (C,) tokens between SOS and EOT
        with torch.no_grad():
            emb = self.tower.token_embedding(ids).float()  # (C, L, w)
        out = shared.float().unsqueeze(0).repeat(n_cls, 1, 1)  # (C, M, w)
        for i in range(n_cls):
            k = min(int(n_tok[i]), self.n_ctx)
            out[i, :k] = emb[i, 1 : 1 + k]
        return out.to(shared.device)

    def embeddings(self, name: str) -> torch.Tensor:
        """``(C, L, w)`` token embeddings of the class prompts with context ``name``."""
        c = self.ctx[name]
        n_cls = self.token_prefix.shape[0]
        if c.dim() == 3:  # class-specific context (C, M, w)
            ctx = c.to(self.token_prefix.dtype)
        else:
            ctx = c.unsqueeze(0).expand(n_cls, -1, -1).to(self.token_prefix.dtype)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)

    def forward(self, name: str | None = None, normalize: bool = True) -> torch.Tensor:
        """``(C, d)`` class features of context ``name`` (the only one when there is one)."""
        if name is None:
            if len(self.names) != 1:
                raise ConfigError(f"PromptLearner has contexts {self.names}: name one")
            name = self.names[0]
        feats = self.tower.encode_embeddings(self.embeddings(name), self.token_ids)
        return F.normalize(feats.float(), dim=-1) if normalize else feats


def freeze_text_tower(backbone: Backbone) -> None:
    """Stop gradients into the backbone's text tower (prompts still receive them)."""
    own = dict(backbone.model.named_parameters())
    for name in backbone.param_groups()["text"]:
        own[name].requires_grad_(False)


__all__ = ["PLACEHOLDER", "PromptLearner", "TextTower", "freeze_text_tower"]
