"""Tuners: which backbone parameters a method trains, registered in ``labelless.registry.TUNERS``.

``TUNERS.get(name)(backbone, **options) -> Tuner``. Building a tuner freezes the whole backbone
and makes only its parameters trainable (peft-style: what is trained is declared and printed):

    layernorm  the visual LayerNorm gains and biases (DPA/FAIR default; ``groups`` to widen)
    lora       LoRA adapters via peft on the visual attention and MLP layers; merged into the
               base weights by :meth:`Tuner.finalize`, so the artifact stays plain weights
    full       every parameter of the visual tower (paper's "full fine-tuning" comparison)

After training, :meth:`Tuner.finalize` returns ``{backbone parameter name: tensor}`` of every
backbone parameter that may differ from the base model, which is what
:class:`labelless.methods.base.FitResult` ``tuned`` and the artifact's ``backbone.safetensors``
hold; :func:`labelless.methods.base.load_classifier` copies them back onto a fresh backbone.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from labelless.backbones import select_trainable, trainable_report
from labelless.errors import ConfigError
from labelless.registry import TUNERS


class Tuner:
    """Base class: selects trainable backbone parameters; ``finalize`` returns what changed."""

    name = ""

    def __init__(self, backbone):
        self.backbone = backbone

    def named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Trainable parameters, names relative to ``backbone.model``."""
        return [(n, p) for n, p in self.backbone.model.named_parameters() if p.requires_grad]

    def finalize(self) -> dict[str, torch.Tensor]:
        """End of training: ``{name: tensor}`` of backbone parameters that may have changed."""
        return {n: p.detach().clone() for n, p in self.named_parameters()}

    def report(self) -> str:
        return trainable_report(self.backbone.model, f"{self.name} tuner")


class GroupTuner(Tuner):
    """Trains the parameters selected by group names / ``re:`` regexes."""

    default_groups: tuple[str, ...] = ()

    def __init__(self, backbone, groups: list[str] | tuple[str, ...] | None = None):
        super().__init__(backbone)
        self.groups = tuple(groups) if groups else self.default_groups
        self.selected = select_trainable(backbone, list(self.groups))

    def finalize(self) -> dict[str, torch.Tensor]:
        own = dict(self.backbone.model.named_parameters())
        return {n: own[n].detach().clone() for n in self.selected}


@TUNERS.register("layernorm")
class LayerNormTuner(GroupTuner):
    """Visual LayerNorm gains and biases (DPA/FAIR default): groups=[visual_ln]."""

    name = "layernorm"
    default_groups = ("visual_ln",)


@TUNERS.register("full")
class FullTuner(GroupTuner):
    """Every visual-tower parameter (full fine-tuning of the image encoder): groups=[visual]."""

    name = "full"
    default_groups = ("visual",)


#: Default LoRA targets (module-name regexes, relative to the visual tower) per backend.
LORA_TARGETS = {
    # open_clip ViT: nn.MultiheadAttention (peft's MHA LoRA adapts in_proj and out_proj) + MLP.
    "openclip": r".*resblocks\.\d+\.(attn|mlp\.c_fc|mlp\.c_proj)$",
    # HF CLIPVisionModel: separate q/k/v/out projections + MLP.
    "hf": r".*encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.fc1|mlp\.fc2)$",
}


def _visual_tower(backbone) -> tuple[nn.Module, str]:
    model = backbone.model
    if backbone.backend == "openclip":
        return model.visual, "visual."
    if backbone.backend == "hf":
        return model.vision_model, "vision_model."
    raise ConfigError(f"lora tuner: unsupported backend '{backbone.backend}'")


@TUNERS.register("lora")
class LoraTuner(Tuner):
    """LoRA adapters (peft) on the visual attention + MLP layers, merged into the weights at the end.

    Options: ``r`` (rank, 8), ``alpha`` (16), ``dropout`` (0.0), ``targets`` (a module-name regex
    relative to the visual tower; default per backend, :data:`LORA_TARGETS`).
    """

    name = "lora"

    def __init__(self, backbone, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 targets: str | None = None):
        super().__init__(backbone)
        try:
            from peft import LoraConfig
            from peft.tuners.lora import LoraModel
        except ImportError as e:  # pragma: no cover - peft is a dependency of the lora tuner only
            raise ConfigError("the lora tuner needs peft: pip install peft") from e
        if int(r) < 1:
            raise ConfigError(f"lora: r must be >= 1, got {r}")
        tower, self.prefix = _visual_tower(backbone)
        pattern = targets or LORA_TARGETS[backbone.backend]
        hits = [n for n, _ in tower.named_modules() if re.fullmatch(pattern, n)]
        if not hits:
            raise ConfigError(f"lora: target regex {pattern!r} matches no module of {backbone.spec}")
        # The base parameters of every targeted module: these are what merging changes.
        self.targets = hits
        self.base_names = [
            self.prefix + f"{m}.{pn}" for m in hits
            for pn, _ in tower.get_submodule(m).named_parameters()
        ]
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        cfg = LoraConfig(r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout),
                         target_modules=pattern, init_lora_weights=True)
        self.lora = LoraModel(tower, cfg, "default")  # injects in place into backbone.model
        self.merged = False

    def finalize(self) -> dict[str, torch.Tensor]:
        if not self.merged:
            self.lora.merge_and_unload()  # in place: LoRA layers replaced by merged base layers
            self.merged = True
        own = dict(self.backbone.model.named_parameters())
        return {n: own[n].detach().clone() for n in self.base_names if n in own}


def build_tuner(backbone, name: str = "layernorm", **options) -> Tuner:
    """Freeze ``backbone`` and make the tuner ``name``'s parameters trainable."""
    try:
        return TUNERS.get(name)(backbone, **options)
    except TypeError as e:
        raise ConfigError(f"tuner '{name}': bad options {options}: {e}") from None


__all__ = ["FullTuner", "GroupTuner", "LORA_TARGETS", "LayerNormTuner", "LoraTuner", "Tuner", "build_tuner"]
