"""CoFT / CoFT+ configuration: the typed config dataclasses (one field per choice, with its source)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from labelless.engine import OptimConfig
from labelless.errors import ConfigError

#: The keys ``CoFTConfig.lora_options`` accepts (the ``lora`` tuner's options).
LORA_OPTIONS = ("r", "alpha", "dropout", "targets")


@dataclass
class Phase1Optim(OptimConfig):
    """Phase-1 optimisation; defaults from DeFT ``config/PEFT/*.yaml`` (VERIFIED): SGD lr 0.03,
    momentum 0.9, weight decay 5e-4, batch 64, 10 epochs, cosine. A partial mapping in a recipe
    keeps these defaults for the keys it does not set."""

    optimizer: Literal["adamw", "sgd"] = "sgd"
    lr: float = 0.03
    weight_decay: float = 5e-4
    no_decay: Literal["bias", "1d", "none"] = "none"
    epochs: int = 10
    batch_size: int = 64


@dataclass
class Phase2Optim(OptimConfig):
    """Phase-2 optimisation; defaults from DeFT ``config/FFT/*.yaml`` (VERIFIED): SGD lr 5e-4,
    momentum 0.9, weight decay 5e-4, batch 64, 10 epochs, cosine."""

    optimizer: Literal["adamw", "sgd"] = "sgd"
    lr: float = 5e-4
    weight_decay: float = 5e-4
    no_decay: Literal["bias", "1d", "none"] = "none"
    epochs: int = 10
    batch_size: int = 64


@dataclass
class CoFTConfig:
    """CoFT hyper-parameters. [P] = the paper's abstract, [D] = DeFT's verified code, [O] = ours.

    text_source: [O] which texts give the zero-shot pseudo-labels: ``label_texts`` (hand-crafted
        templates: CoFT) or ``texts`` (the run's text source, LLM descriptions: CoFT+ [P]).
    prompt_class_text: [O] what fills the class slot of the learnable prompts ``[ctx] <class>``:
        ``name`` (the class name: CoOp/DeFT [D]) or ``text`` (the first sentence of the class's
        zero-shot texts, i.e. of ``text_source``; with LLM descriptions this is one reading of
        CoFT+'s "LLM-generated prompts" [P], and the only informative choice when class names
        are opaque words, as on the testbed).
    logit_scale: [D] the cosine-logit scale; None = the backbone's own ``exp(logit_scale)``
        (100 for OpenAI CLIP, as in DeFT).
    n_ctx: [D] learnable context tokens per prompt (16).
    ctx_init: [O] None = random N(0, ctx_init_std^2) contexts [D]; a phrase (e.g. "a photo of a")
        initialises both prompts from its token embeddings (CoOp's ctx_init).
    ctx_init_std: [D] 0.02.
    pos_ctx_init: [O] the positive prompt's context: ``ctx_init`` (one context shared by every
        class, initialised as ``ctx_init`` says: CoOp/DeFT [D]) or ``class_text`` (one context
        per class, its first ``n_ctx`` vectors taken from the token embeddings of the class's
        first zero-shot text, i.e. the LLM description with ``text_source=texts``; the rest as
        ``ctx_init``): a reading of CoFT+'s "LLM-generated prompts" [P]. The negative prompt
        stays shared.
    adapter: [P] the lightweight visual module of phase 1: ``vpt`` (VPT-deep, DeFT's choice [D])
        or ``lora`` (LoRA via peft, the ``lora`` tuner's targets [O]; removed again after phase 1).
    vpt_tokens: [D] prompt tokens per layer (20).
    vpt_layers: [D] layers with prompts (None: all, deep VPT).
    lora_options: [O] options of the ``lora`` adapter: ``r`` (8), ``alpha`` (16), ``dropout`` (0),
        ``targets`` (a module regex; default: the ``lora`` tuner's attention + MLP layers).
    vision_model: [P] "dual-model": the vision side's model. ``shared`` [O]: a linear head on the
        detached [CLS] of the text side's adapted encoder; ``separate`` [O]: its own copy of the
        image tower with its own lightweight module (``adapter``), trained with the head in phase 1
        on the samples the text side's gate marks clean; the text side's encoder never sees the
        head's loss.
    phase1_select: [P]/[O] phase 1 trains on "high-confidence samples": ``top_frac`` keeps the
        ``phase1_top_frac`` most confident samples of each pseudo-class [O] (as many per class as
        the pseudo-labels give it, so zero-shot's class imbalance carries over); ``top_k`` keeps
        the ``phase1_top_k`` most confident of each pseudo-class (UPL's class-balanced top-K [O]);
        ``all`` keeps every sample and lets the dual-prompt gate filter (DeFT [D]).
        Default ``top_k``: on the testbed ``top_frac`` inherited zero-shot's class imbalance and
        phase 1 did not learn (docs/methods/coft.md, "Class balance").
    phase1_top_frac: [O] 0.5.
    phase1_top_k: [O] 16 (UPL's K).
    warmup_epochs: [D] epochs in which every selected sample counts as clean (1).
    neg_detach_image: [O] DeFT detaches the image feature in the negative branch; CoFT's abstract
        says the negative prompt "regularizes lightweight visual adaptation modules" [P], so by
        default it does not (False): L_neg reaches the VPT tokens.
    neg_weight: [D] weight of L_neg (1).
    neg_log: [D] ``clamp`` (default, DeFT's ``log(clamp(p, 1e-5))``, saturating with zero
        gradient) or ``eps`` [O] (``log(p + 1e-8)``, never saturating) in L_neg; identical
        top-1 on all 6 dev tasks (docs/methods/coft.md).
    head_weight: [O] weight of the vision-side head's CE in phase 1 (1).
    head_feature: [D] what the linear heads read: ``cls`` (the ``ln_post`` [CLS], DeFT phase 2)
        or ``embed`` (the L2-normalised projected embedding).
    head_init: [D] ``random`` (DeFT: nn.Linear's default init) or ``zeroshot`` [O] (the class
        text embeddings, scaled; exact for ``head_feature=embed``).
    collab_require: [O] a pseudo-label is CONFIRMED when ``both`` models vouch for it (the text
        side's gate p_yes > 0.5 and the vision side's argmax) or ``either`` does.
    collab_relabel: [O] recover samples on which both models agree on another class [P: "recovering
        low-confidence samples"].
    collab_relabel_gate: [O] the recovered class must also pass the text-side gate.
    rounds: [P] CoFT+ "iterative fine-tuning": phase-1 + collaboration rounds; each later round
        restarts the PEFT modules on the previous round's collaborative labels [O]. CoFT: 1.
    phase1: [D] optimisation of phase 1.
    phase2: [D] optimisation of phase 2.
    phase2_balance: [O] ``none`` (DeFT: plain CE) or ``reweight``: the phase-2 CE weighs each
        class by the inverse of its count among the collaborative labels, so a class that
        zero-shot over-predicts does not dominate the fine-tuning.
    phase2_params: [D] backbone parameters fully fine-tuned in phase 2 (``visual``: the whole image
        tower; parameter groups or ``re:`` selectors).
    train_view: [O] augmentation of the training images (``weak``: resize, crop, flip).
    monitor_eval: after each round's phase 1, log the text side's and the vision side's top-1 (%) on
        the run's labelled monitoring set (``FitContext.monitor``; one pass over it per round;
        logged only, never used to select anything), so that phase 1 and phase 2 can be compared.
    moco: [P] CoFT+ momentum contrastive learning, in phase 2 [O].
    moco_weight, moco_momentum, moco_queue, moco_temperature: [O] MoCo-v2-like defaults (1.0,
        0.999, 4096, 0.07); the paper's values are unknown.
    moco_supervised: [O] queue entries with the same collaborative label are positives too.
    moco_view: [O] augmentation of the key view (``strong``).
    """

    text_source: Literal["label_texts", "texts"] = "label_texts"
    prompt_class_text: Literal["name", "text"] = "name"
    logit_scale: float | None = None
    n_ctx: int = 16
    ctx_init: str | None = None
    ctx_init_std: float = 0.02
    pos_ctx_init: Literal["ctx_init", "class_text"] = "ctx_init"
    adapter: Literal["vpt", "lora"] = "vpt"
    vpt_tokens: int = 20
    vpt_layers: int | None = None
    lora_options: dict = field(default_factory=dict)
    vision_model: Literal["shared", "separate"] = "shared"
    phase1_select: Literal["top_frac", "top_k", "all"] = "top_k"
    phase1_top_frac: float = 0.5
    phase1_top_k: int = 16
    warmup_epochs: int = 1
    neg_detach_image: bool = False
    neg_weight: float = 1.0
    neg_log: Literal["eps", "clamp"] = "clamp"
    head_weight: float = 1.0
    head_feature: Literal["cls", "embed"] = "cls"
    head_init: Literal["random", "zeroshot"] = "random"
    collab_require: Literal["both", "either"] = "both"
    collab_relabel: bool = True
    collab_relabel_gate: bool = True
    rounds: int = 1
    phase1: Phase1Optim = field(default_factory=Phase1Optim)
    phase2: Phase2Optim = field(default_factory=Phase2Optim)
    phase2_balance: Literal["none", "reweight"] = "none"
    phase2_params: tuple[str, ...] = ("visual",)
    train_view: str = "weak"
    monitor_eval: bool = True
    moco: bool = False
    moco_weight: float = 1.0
    moco_momentum: float = 0.999
    moco_queue: int = 4096
    moco_temperature: float = 0.07
    moco_supervised: bool = True
    moco_view: str = "strong"

    def __post_init__(self):
        if self.text_source not in ("label_texts", "texts"):
            raise ConfigError(f"text_source must be label_texts or texts, got {self.text_source!r}")
        if self.prompt_class_text not in ("name", "text"):
            raise ConfigError(f"prompt_class_text must be name or text, got {self.prompt_class_text!r}")
        if self.pos_ctx_init not in ("ctx_init", "class_text"):
            raise ConfigError(f"pos_ctx_init must be ctx_init or class_text, got {self.pos_ctx_init!r}")
        if self.adapter not in ("vpt", "lora"):
            raise ConfigError(f"adapter must be vpt or lora, got {self.adapter!r}")
        unknown = set(self.lora_options) - set(LORA_OPTIONS)
        if unknown:
            raise ConfigError(f"lora_options: unknown key(s) {sorted(unknown)}; valid: {list(LORA_OPTIONS)}")
        if self.vision_model not in ("shared", "separate"):
            raise ConfigError(f"vision_model must be shared or separate, got {self.vision_model!r}")
        if self.neg_log not in ("eps", "clamp"):
            raise ConfigError(f"neg_log must be eps or clamp, got {self.neg_log!r}")
        if self.phase1_select not in ("top_frac", "top_k", "all"):
            raise ConfigError(f"phase1_select must be top_frac, top_k or all, got {self.phase1_select!r}")
        if not 0 < self.phase1_top_frac <= 1:
            raise ConfigError(f"phase1_top_frac must be in (0, 1], got {self.phase1_top_frac}")
        if self.phase1_top_k < 1:
            raise ConfigError(f"phase1_top_k must be >= 1, got {self.phase1_top_k}")
        if self.phase2_balance not in ("none", "reweight"):
            raise ConfigError(f"phase2_balance must be none or reweight, got {self.phase2_balance!r}")
        if self.collab_require not in ("both", "either"):
            raise ConfigError(f"collab_require must be both or either, got {self.collab_require!r}")
        if self.head_feature not in ("cls", "embed") or self.head_init not in ("random", "zeroshot"):
            raise ConfigError("head_feature must be cls|embed and head_init random|zeroshot")
        if self.rounds < 1 or self.n_ctx < 1 or self.vpt_tokens < 1 or self.warmup_epochs < 0:
            raise ConfigError("rounds, n_ctx and vpt_tokens must be >= 1, warmup_epochs >= 0")
        if self.moco_queue < 1 or not 0 <= self.moco_momentum < 1:
            raise ConfigError("moco_queue must be >= 1 and moco_momentum in [0, 1)")
        self.phase2_params = tuple(self.phase2_params)


@dataclass
class CoFTPlusConfig(CoFTConfig):
    """CoFT+ = CoFT with [P] iterative rounds, momentum contrast and LLM-generated texts.

    Same fields as :class:`CoFTConfig`; the defaults differ: ``text_source=texts`` (the run's
    description texts), ``rounds=2`` [O], ``moco=True``.
    """

    text_source: Literal["label_texts", "texts"] = "texts"
    rounds: int = 2
    moco: bool = True

