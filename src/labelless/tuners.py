"""Tuners: which backbone parameters a method trains, registered in ``labelless.registry.TUNERS``.

``TUNERS.get(name)(backbone, **options) -> Tuner``. Building a tuner freezes the whole backbone
and makes only its parameters trainable (peft-style: what is trained is declared and printed):

    layernorm  the visual LayerNorm gains and biases (DPA/FAIR default; ``groups`` to widen)
    lora       LoRA adapters via peft on the visual attention and MLP layers; merged into the
               base weights by :meth:`Tuner.finalize`, so the artifact stays plain weights
    full       every parameter of the visual tower (paper's "full fine-tuning" comparison)
    kadaptation  Kronecker-product updates of the visual attention weights (K-Adaptation),
               merged into the base weights by :meth:`Tuner.finalize`

After training, :meth:`Tuner.finalize` returns ``{backbone parameter name: tensor}`` of every
backbone parameter that may differ from the base model, which is what
:class:`labelless.methods.base.FitResult` ``tuned`` and the artifact's ``backbone.safetensors``
hold; :func:`labelless.methods.base.load_classifier` copies them back onto a fresh backbone.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from labelless.backbones import select_trainable, trainable_report
from labelless.errors import ConfigError
from labelless.registry import TUNERS

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone


class Tuner:
    """Base class: selects trainable backbone parameters; ``finalize`` returns what changed."""

    name = ""

    def __init__(self, backbone: Backbone):
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

    def __init__(self, backbone: Backbone, groups: list[str] | tuple[str, ...] | None = None):
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


def _visual_tower(backbone: Backbone) -> tuple[nn.Module, str]:
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

    def __init__(self, backbone: Backbone, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
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


class KroneckerDelta(nn.Module):
    """``W + sum_i A_i (x) (u_i v_i^T)`` (K-Adaptation): ``A_i (n, n)``, ``u_i (k/n, r)``,
    ``v_i (d/n, r)`` for a ``(k, d)`` weight; ``v = 0`` at the start, so the update starts at 0."""

    def __init__(self, shape: torch.Size, n: int, r: int, generator: torch.Generator):
        super().__init__()
        k, d = shape
        if k % n or d % n:
            raise ConfigError(f"kadaptation: n={n} must divide the weight's sides {tuple(shape)}")
        self.A = nn.Parameter(torch.randn(n, n, n, generator=generator) * 0.02)  # (n, n, n)
        self.u = nn.Parameter(torch.randn(n, k // n, r, generator=generator) * (1.0 / r) ** 0.5)
        self.v = nn.Parameter(torch.zeros(n, d // n, r))

    def delta(self) -> torch.Tensor:
        B = self.u @ self.v.transpose(1, 2)  # (n, k/n, d/n)
        # sum_i kron(A_i, B_i): (n, n) x (k/n, d/n) -> (k, d)
        n, kb, db = B.shape
        out = torch.einsum("iab,icd->acbd", self.A, B)  # (n, k/n, n, d/n)
        return out.reshape(n * kb, n * db)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta().to(weight.dtype)


#: Default K-Adaptation targets per backend: (module-name regex relative to the visual tower,
#: weight attribute names). open_clip: the fused q/k/v projection and the output projection.
KADAPTATION_TARGETS = {
    "openclip": (r".*resblocks\.\d+\.attn$", ("in_proj_weight",)),
    "openclip_out": (r".*resblocks\.\d+\.attn\.out_proj$", ("weight",)),
    "hf": (r".*encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)$", ("weight",)),
}


@TUNERS.register("kadaptation")
class KAdaptationTuner(Tuner):
    """K-Adaptation (He et al., AAAI 2023): Kronecker-product updates of the visual attention
    weights, ``dW = sum_i A_i (x) (u_i v_i^T)``, merged into the weights by :meth:`finalize`.

    Options: ``n`` (Kronecker factors and the side of each ``A_i``, 4), ``r`` (rank of each
    ``B_i``, 1). Ours: every matrix has its own ``A_i`` (the paper shares them across layers).
    """

    name = "kadaptation"

    def __init__(self, backbone: Backbone, n: int = 4, r: int = 1):
        super().__init__(backbone)
        from torch.nn.utils import parametrize

        if int(n) < 1 or int(r) < 1:
            raise ConfigError(f"kadaptation: n and r must be >= 1, got n={n}, r={r}")
        tower, self.prefix = _visual_tower(backbone)
        keys = ("openclip", "openclip_out") if backbone.backend == "openclip" else ("hf",)
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(torch.initial_seed() % (2**63))
        self.targets: list[tuple[nn.Module, str, str]] = []  # (module, attribute, full name)
        for key in keys:
            pattern, attrs = KADAPTATION_TARGETS[key]
            for mname, module in tower.named_modules():
                if not re.fullmatch(pattern, mname):
                    continue
                for attr in attrs:
                    delta = KroneckerDelta(getattr(module, attr).shape, int(n), int(r), g)
                    parametrize.register_parametrization(module, attr, delta)
                    self.targets.append((module, attr, f"{self.prefix}{mname}.{attr}"))
        if not self.targets:
            raise ConfigError(f"kadaptation: no attention weight found in {backbone.spec}")
        self.merged = False

    def finalize(self) -> dict[str, torch.Tensor]:
        from torch.nn.utils import parametrize

        if not self.merged:
            with torch.no_grad():
                for module, attr, _ in self.targets:
                    parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
            for module, attr, _ in self.targets:
                getattr(module, attr).requires_grad_(False)
            self.merged = True
        own = dict(self.backbone.model.named_parameters())
        return {full: own[full].detach().clone() for _, _, full in self.targets}


def build_tuner(backbone: Backbone, name: str = "layernorm", **options) -> Tuner:
    """Freeze ``backbone`` and make the tuner ``name``'s parameters trainable."""
    try:
        return TUNERS.get(name)(backbone, **options)
    except TypeError as e:
        raise ConfigError(f"tuner '{name}': bad options {options}: {e}") from None


__all__ = ["FullTuner", "GroupTuner", "KAdaptationTuner", "KroneckerDelta", "LORA_TARGETS", "LayerNormTuner",
           "LoraTuner", "Tuner", "build_tuner"]
