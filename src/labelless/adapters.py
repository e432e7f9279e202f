"""Lightweight visual adaptation modules that attach to a frozen backbone's image tower.

:class:`VPTDeep` is Visual Prompt Tuning, deep variant (Jia et al., ECCV 2022), the visual PEFT
module DeFT's phase 1 uses (20 tokens per layer, VERIFIED in ``HotanLee/DeFT`` configs): before
transformer block ``l`` the ``n`` prompt tokens right after [CLS] are (re)placed by learned
vectors ``P_l``; after the last block they are dropped again, so the [CLS] token, the patch
tokens and everything downstream (``ln_post``, projection, ``Backbone.encode_image``, feature
extraction) keep their usual shapes. It works through forward hooks, on both backends:

* open_clip ``VisionTransformer``: hooks on ``visual.transformer.resblocks[l]``;
* Hugging Face ``CLIPVisionModel``: hooks on ``vision_model.encoder.layers[l]``.

Use it as a context manager (``with vpt.attached(): backbone.encode_image(x)``) or with
``attach()``/``detach()``; detached, the backbone is exactly the plain model again. The module's
only parameters are the prompts, so ``vpt.named_parameters()`` is what a PEFT phase trains.

:class:`LoraAdapter` gives LoRA (the ``lora`` tuner of :mod:`labelless.tuners`, peft) the same
interface, plus ``release()``, which takes the LoRA layers out of the backbone again.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from labelless.errors import ConfigError

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone


def vision_blocks(backbone: Backbone) -> tuple[nn.ModuleList, int]:
    """The image tower's transformer blocks and its token width."""
    m = backbone.model
    if backbone.backend == "openclip":
        import open_clip

        visual = m.visual
        if not isinstance(visual, open_clip.transformer.VisionTransformer) or visual.attn_pool is not None:
            raise ConfigError(f"{backbone.spec}: VPT needs a plain ViT image tower")
        if visual.pool_type != "tok":
            raise ConfigError(f"{backbone.spec}: VPT needs [CLS] pooling (pool_type 'tok')")
        blocks = visual.transformer.resblocks
        return blocks, int(visual.transformer.width)
    if backbone.backend == "hf":
        vm = m.vision_model
        return vm.encoder.layers, int(vm.config.hidden_size)
    raise ConfigError(f"VPT does not support backend '{backbone.backend}'")


def _patch_size(backbone: Backbone) -> int:
    if backbone.backend == "openclip":
        p = backbone.model.visual.patch_size
        return int(p[0] if isinstance(p, (tuple, list)) else p)
    return int(backbone.model.vision_model.config.patch_size)


@contextlib.contextmanager
def _attached(adapter):
    """Attach ``adapter`` for the block; detach afterwards unless it was attached before."""
    was = adapter.is_attached
    adapter.attach()
    try:
        yield adapter
    finally:
        if not was:
            adapter.detach()


class VPTDeep(nn.Module):
    """Deep visual prompts: ``n_tokens`` learned tokens in front of every block's input.

    n_tokens: prompt tokens per layer (DeFT/VPT: 20 on ViT-B/16).
    layers: how many blocks (from the first) get their own prompts; None = all (deep VPT).
    generator: seeds the initialisation, VPT's uniform Xavier range
        ``sqrt(6 / (3 * patch^2 + width))``.
    """

    def __init__(self, backbone: Backbone, n_tokens: int = 20, layers: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        if n_tokens < 1:
            raise ConfigError(f"VPT n_tokens must be >= 1, got {n_tokens}")
        blocks, width = vision_blocks(backbone)
        n_layers = len(blocks) if layers is None else int(layers)
        if not 1 <= n_layers <= len(blocks):
            raise ConfigError(f"VPT layers must be in 1..{len(blocks)}, got {layers}")
        self.n_tokens = int(n_tokens)
        self.n_layers = n_layers
        self._blocks = [blocks]  # a list: not registered as a submodule (frozen backbone)
        bound = math.sqrt(6.0 / float(3 * _patch_size(backbone) ** 2 + width))
        t = torch.empty(n_layers, self.n_tokens, width)
        t.uniform_(-bound, bound, generator=generator)
        device = next(backbone.model.parameters()).device
        self.prompts = nn.Parameter(t.to(device))
        self._handles: list = []

    # -- hooks --------------------------------------------------------------------------------
    def _pre_hook(self, layer: int):
        n = self.n_tokens

        def hook(module, args, kwargs):
            if args:
                x, rest = args[0], args[1:]
            else:
                key = "hidden_states" if "hidden_states" in kwargs else "q_x"
                x, rest = kwargs[key], ()
            p = self.prompts[layer].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            if layer == 0:
                x = torch.cat([x[:, :1], p, x[:, 1:]], dim=1)
            else:
                x = torch.cat([x[:, :1], p, x[:, 1 + n :]], dim=1)
            if args:
                return (x, *rest), kwargs
            kwargs = dict(kwargs)
            kwargs[key] = x
            return args, kwargs

        return hook

    def _strip_hook(self, module, args, output):
        n = self.n_tokens
        if isinstance(output, tuple):
            x = output[0]
            return (torch.cat([x[:, :1], x[:, 1 + n :]], dim=1), *output[1:])
        return torch.cat([output[:, :1], output[:, 1 + n :]], dim=1)

    def attach(self) -> VPTDeep:
        """Install the hooks (idempotent)."""
        if self._handles:
            return self
        blocks = self._blocks[0]
        for layer in range(self.n_layers):
            self._handles.append(blocks[layer].register_forward_pre_hook(self._pre_hook(layer), with_kwargs=True))
        self._handles.append(blocks[len(blocks) - 1].register_forward_hook(self._strip_hook))
        return self

    def detach(self) -> None:
        """Remove the hooks: the backbone is the plain model again."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def is_attached(self) -> bool:
        return bool(self._handles)

    def attached(self):
        """Attached for the block, as it was afterwards."""
        return _attached(self)


class LoraAdapter:
    """LoRA on the image tower (the ``lora`` tuner, peft) as a switchable lightweight module.

    Built detached: the LoRA layers are injected but disabled. ``attach``/``detach`` (and the
    ``attached()`` context) enable/disable them; ``named_parameters()`` are the LoRA matrices
    only (names relative to the image tower). ``release()`` removes the LoRA layers without
    merging them and restores the targeted base weights exactly (peft's attention LoRA merges and
    unmerges them around each forward, which leaves float round-off), so the backbone is the
    pre-trained model again, with its own module and parameter names; a released adapter keeps
    its matrices and re-injects them for the duration of a later ``attached()`` block.

    seed: seeds peft's initialisation (``lora_A`` Kaiming-uniform, ``lora_B`` zero) without
        touching the global random state. options: the tuner's ``r``, ``alpha``, ``dropout``,
        ``targets``.
    """

    def __init__(self, backbone: Backbone, seed: int = 0, **options):
        self.backbone = backbone
        self.options = dict(options)
        self._seed = int(seed)
        self._saved: dict[str, torch.Tensor] | None = None
        self._inject()

    def _inject(self) -> None:
        from labelless.tuners import LoraTuner

        dev = torch.device(self.backbone.device)
        cuda = [dev.index or 0] if dev.type == "cuda" else []
        before = dict(self.backbone.model.named_parameters())  # the pre-injection parameters
        if any("lora_" in n for n in before):
            raise RuntimeError(f"{self.backbone.spec} already carries LoRA layers: release them first")
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self._seed)
            self.tuner = LoraTuner(self.backbone, **self.options)
        self._base = {n: before[n].detach().to("cpu", copy=True) for n in self.tuner.base_names}
        self._params = [(n, p) for n, p in self.tuner.lora.model.named_parameters() if "lora_" in n]
        if self._saved is not None:
            with torch.no_grad():
                for n, p in self._params:
                    p.copy_(self._saved[n])
            self._saved = None
        self._disable()
        self._attached = False

    def _disable(self) -> None:
        self.tuner.lora.disable_adapter_layers()
        for _, p in self._params:  # peft freezes disabled adapters; they stay trainable here
            p.requires_grad_(True)

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self._params)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self._params]

    @property
    def released(self) -> bool:
        return self._saved is not None

    def attach(self) -> LoraAdapter:
        if self.released:
            raise RuntimeError("a released LoraAdapter attaches only inside attached()")
        self.tuner.lora.enable_adapter_layers()
        self._attached = True
        return self

    def detach(self) -> None:
        if not self.released:
            self._disable()
        self._attached = False

    @property
    def is_attached(self) -> bool:
        return self._attached

    @contextlib.contextmanager
    def attached(self):
        """Attached for the block (re-injected first if released), as it was afterwards."""
        reinject = self.released
        if reinject:
            self._inject()
        try:
            with _attached(self):
                yield self
        finally:
            if reinject:
                self.release()

    def release(self) -> None:
        """Take the LoRA layers out of the backbone (keeping their values): the plain model again."""
        if self.released:
            return
        self._saved = {n: p.detach().clone() for n, p in self._params}
        self.tuner.lora.unload()
        own = dict(self.backbone.model.named_parameters())
        with torch.no_grad():
            for n, t in self._base.items():
                own[n].copy_(t)
        self._attached = False


__all__ = ["LoraAdapter", "VPTDeep", "vision_blocks"]
