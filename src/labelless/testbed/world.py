"""A seeded procedural world of small images and the captions that describe them.

Every image is a *scene*: one main object (shape, colour, texture, size, position, rotation),
a few distractor objects and a background. The same scene yields a caption in plain English
("a small red striped circle and a blue square on a noisy background") through a handful of
paraphrase templates, so a tiny CLIP-style model can be pre-trained on image-caption pairs
(:mod:`labelless.testbed.pretrain`) and then adapted to a downstream task in a shifted part of the
same world (:mod:`labelless.testbed.task`).

Everything is a pure function of a :class:`WorldConfig` and integer seeds: a scene is sampled from
``np.random.default_rng([seed, stream, index])`` so image ``i`` does not depend on how many images
are generated or in which order, and the pixels of a scene depend only on the scene itself
(:attr:`Scene.render_seed`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from labelless.errors import ConfigError

#: Object shapes, each drawn by a mask function over rotated, radius-normalised coordinates.
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "cross",
    "ring",
    "star",
    "hexagon",
)

#: Object colours (sRGB, 0-255). Saturated so that they stand out from the dull backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 205),
    "orange": (245, 140, 30),
    "cyan": (40, 205, 215),
    "white": (240, 240, 240),
}

#: Surface patterns; the pattern uses a dark shade of the object's own colour.
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")

#: Backgrounds. Pre-training uses the first three; the downstream task uses the others, so the
#: task has backgrounds the model never saw (a domain shift).
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "speckled", "cloudy")

# Paraphrases used by the captioner. Shapes/textures/backgrounds have synonyms so that the text
# encoder sees varied wording and class descriptions need not copy the caption grammar.
_SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circle", "disk"),
    "square": ("square", "square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "diamond", "rhombus"),
    "cross": ("cross", "cross", "plus sign"),
    "ring": ("ring", "ring", "hoop"),
    "star": ("star",),
    "hexagon": ("hexagon",),
}
# (adjective before the shape, phrase after the shape); "" means the texture is left unsaid.
_TEXTURE_ADJ: dict[str, tuple[str, ...]] = {
    "solid": ("solid", "plain", ""),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "spotted"),
    "checkered": ("checkered", "chequered"),
}
_TEXTURE_SUFFIX: dict[str, tuple[str, ...]] = {
    "solid": ("in a single colour", ""),
    "striped": ("with stripes", "with horizontal stripes"),
    "dotted": ("with dots", "with polka dots", "with spots"),
    "checkered": ("with a checkerboard pattern", "with checks"),
}
_BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "flat", "uniform"),
    "gradient": ("gradient", "smooth gradient"),
    "noise": ("noisy", "grainy"),
    "speckled": ("speckled", "confetti"),
    "cloudy": ("cloudy", "blotchy"),
}
_CAPTION_TEMPLATES: tuple[str, ...] = (
    "{objs}",
    "{objs} on a {bg} background",
    "a picture of {objs}",
    "an image of {objs} with a {bg} background",
    "{objs}, {bg} background",
    "there is {objs}",
    "a photo of {objs} on a {bg} background",
)
_JOINERS: tuple[str, ...] = (" and ", " next to ", " near ", ", ")


@dataclass
class WorldConfig:
    """Every knob of the procedural world; the defaults are the pre-training domain.

    Sizes are fractions of the image side so that the same scene logic works at any resolution;
    the texture period is in pixels (a fixed physical grain), so small objects in a large image
    show their pattern only when looked at closely (a crop), which is the point of local views.
    """

    image_size: int = 32
    """Side of the square RGB image in pixels."""
    shapes: tuple[str, ...] = SHAPES
    """Shapes the main object and the distractors are drawn from."""
    colours: tuple[str, ...] = tuple(COLOURS)
    """Colours the objects are drawn from."""
    textures: tuple[str, ...] = TEXTURES
    """Textures the objects are drawn from."""
    backgrounds: tuple[str, ...] = ("plain", "gradient", "noise")
    """Backgrounds a scene is drawn on (see :data:`BACKGROUNDS`)."""
    size_range: tuple[float, float] = (0.22, 0.75)
    """Diameter of the main object as a fraction of the image side, uniform in this range."""
    n_distractors: tuple[int, int] = (0, 3)
    """Inclusive range of the number of distractor objects."""
    distractor_size_range: tuple[float, float] = (0.12, 0.32)
    """Diameter of a distractor as a fraction of the image side."""
    max_rotation: float = 20.0
    """Objects are rotated uniformly within +-this many degrees."""
    texture_period: float = 4.0
    """Period of stripes / dots / checks in pixels."""
    colour_jitter: float = 18.0
    """Standard deviation (0-255 scale) of the per-object, per-channel colour jitter."""
    pixel_noise: float = 6.0
    """Standard deviation (0-255 scale) of the Gaussian noise added to every pixel."""
    caption_distractor_prob: float = 0.5
    """Probability that a caption mentions each distractor (in order, at most two)."""
    caption_position_prob: float = 0.3
    """Probability that a caption says where the main object is."""
    caption_size_prob: float = 0.6
    """Probability that a caption says how big the main object is."""
    seed: int = 0
    """Seed of the world: scene ``i`` of stream ``s`` is drawn from ``rng([seed, s, i])``."""

    def __post_init__(self) -> None:
        self.shapes, self.colours = tuple(self.shapes), tuple(self.colours)
        self.textures, self.backgrounds = tuple(self.textures), tuple(self.backgrounds)
        self.size_range = tuple(float(v) for v in self.size_range)
        self.distractor_size_range = tuple(float(v) for v in self.distractor_size_range)
        self.n_distractors = tuple(int(v) for v in self.n_distractors)
        for name, values, known in (
            ("shapes", self.shapes, SHAPES),
            ("colours", self.colours, tuple(COLOURS)),
            ("textures", self.textures, TEXTURES),
            ("backgrounds", self.backgrounds, BACKGROUNDS),
        ):
            unknown = [v for v in values if v not in known]
            if not values or unknown:
                raise ConfigError(
                    f"WorldConfig.{name}: unknown or empty {unknown or values!r}; "
                    f"choose from {', '.join(known)}"
                )
        if self.image_size < 8:
            raise ConfigError(f"WorldConfig.image_size: {self.image_size} is too small (>= 8)")
        for name in ("size_range", "distractor_size_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"WorldConfig.{name}: need 0 < low <= high <= 1, got {(lo, hi)}")
        lo, hi = self.n_distractors
        if not 0 <= lo <= hi:
            raise ConfigError(f"WorldConfig.n_distractors: need 0 <= low <= high, got {(lo, hi)}")


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene. Positions and sizes are fractions of the image side."""

    shape: str
    colour: str
    texture: str
    size: float
    """Diameter as a fraction of the image side."""
    x: float
    """Centre, horizontal, 0 = left edge."""
    y: float
    """Centre, vertical, 0 = top edge."""
    angle: float = 0.0
    """Rotation in degrees."""

    @property
    def attributes(self) -> tuple[str, str, str]:
        """``(shape, colour, texture)``: what a class of the downstream task is defined by."""
        return (self.shape, self.colour, self.texture)


@dataclass(frozen=True)
class Scene:
    """A full scene: ``objects[0]`` is the main object (drawn last, never occluded)."""

    objects: tuple[SceneObject, ...]
    background: str
    render_seed: int
    """Seeds the pixel-level randomness (background colours, texture phase, noise)."""

    @property
    def main(self) -> SceneObject:
        """The main object (the one a downstream class is about)."""
        return self.objects[0]

    def to_dict(self) -> dict:
        """A JSON-safe dict (see :meth:`from_dict`)."""
        return {
            "objects": [dataclasses.asdict(o) for o in self.objects],
            "background": self.background,
            "render_seed": self.render_seed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        """Inverse of :meth:`to_dict`."""
        return cls(
            objects=tuple(SceneObject(**o) for o in d["objects"]),
            background=d["background"],
            render_seed=int(d["render_seed"]),
        )


def scene_rng(seed: int, *keys: int) -> np.random.Generator:
    """The generator for one scene: independent streams keyed by ``(seed, *keys)``."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def size_word(size: float) -> str:
    """The caption word for an object diameter (fraction of the image side)."""
    if size < 0.2:
        return "tiny"
    if size < 0.35:
        return "small"
    if size < 0.55:
        return "medium"
    return "large"


def position_phrase(x: float, y: float) -> str:
    """Where an object is, in words ("in the top left corner", "in the centre", ...)."""
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    if row and col:
        return f"in the {row} {col} corner"
    if row:
        return f"at the {row}"
    if col:
        return f"on the {col}"
    return "in the centre"


def sample_scene(
    cfg: WorldConfig,
    rng: np.random.Generator,
    main: tuple[str, str, str] | None = None,
    forbidden: set[tuple[str, str, str]] | frozenset = frozenset(),
) -> Scene:
    """Draw a scene.

    ``main`` fixes the ``(shape, colour, texture)`` of the main object (a downstream class);
    distractors never have an attribute combination in ``forbidden`` (so that a distractor can
    never look exactly like a class object and the label of the scene stays well defined).
    """
    if main is None:
        main = (
            str(rng.choice(cfg.shapes)),
            str(rng.choice(cfg.colours)),
            str(rng.choice(cfg.textures)),
        )
    size = float(rng.uniform(*cfg.size_range))
    x, y = (float(rng.uniform(size / 2, 1 - size / 2)) for _ in range(2))
    objects = [SceneObject(*main, size, x, y, float(rng.uniform(-1, 1) * cfg.max_rotation))]
    n_distractors = int(rng.integers(cfg.n_distractors[0], cfg.n_distractors[1] + 1))
    for _ in range(n_distractors):
        while True:
            attrs = (
                str(rng.choice(cfg.shapes)),
                str(rng.choice(cfg.colours)),
                str(rng.choice(cfg.textures)),
            )
            if attrs not in forbidden:
                break
        d = float(rng.uniform(*cfg.distractor_size_range))
        # A few tries to keep distractors off the main object (it is drawn on top anyway; this
        # keeps it from being surrounded so tightly that its outline disappears).
        for _ in range(8):
            dx, dy = (float(rng.uniform(d / 2, 1 - d / 2)) for _ in range(2))
            if (dx - x) ** 2 + (dy - y) ** 2 > ((size + d) / 2) ** 2:
                break
        objects.append(SceneObject(*attrs, d, dx, dy, float(rng.uniform(-1, 1) * cfg.max_rotation)))
    background = str(rng.choice(cfg.backgrounds))
    return Scene(tuple(objects), background, int(rng.integers(0, 2**31 - 1)))


# ----------------------------------------------------------------------------- rendering


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` over coordinates normalised so the shape has radius 1."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.45**2)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "triangle":
        # Upward triangle with its centroid near the origin.
        return (v <= 0.7) & (np.abs(u) <= (v + 1.0) * (0.95 / 1.7))
    if shape == "cross":
        a, b = np.abs(u), np.abs(v)
        return ((a <= 0.32) & (b <= 1.0)) | ((b <= 0.32) & (a <= 1.0))
    if shape == "hexagon":
        a, b = np.abs(u), np.abs(v)
        return np.maximum(a * 0.866 + b * 0.5, b) <= 0.9
    if shape == "star":
        r = np.sqrt(u * u + v * v)
        theta = np.arctan2(u, -v)
        return r <= 0.45 + 0.55 * np.abs(np.cos(2.5 * theta)) ** 2
    raise ConfigError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")


def _texture_mask(texture: str, xx: np.ndarray, yy: np.ndarray, period: float, phase) -> np.ndarray:
    """Where the dark shade of a pattern goes (pixel coordinates, fixed physical period)."""
    if texture == "solid":
        return np.zeros(xx.shape, dtype=bool)
    px, py = xx + phase[0], yy + phase[1]
    if texture == "striped":
        return np.floor(py / (period / 2)) % 2 == 1
    if texture == "checkered":
        return (np.floor(px / (period / 2)) + np.floor(py / (period / 2))) % 2 == 1
    if texture == "dotted":
        p = period * 1.25
        fx, fy = (px % p) - p / 2, (py % p) - p / 2
        return fx * fx + fy * fy <= (0.3 * p) ** 2
    raise ConfigError(f"unknown texture {texture!r}; choose from {', '.join(TEXTURES)}")


def _dull_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation background colour, so objects stand out by colour."""
    grey = rng.uniform(35, 165)
    return np.clip(grey + rng.normal(0, 14, size=3), 0, 255)


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float (S, S, 3) background image."""
    s = size
    base = _dull_colour(rng)
    img = np.broadcast_to(base, (s, s, 3)).astype(np.float32).copy()
    if kind == "plain":
        return img
    if kind == "gradient":
        other = _dull_colour(rng)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1)
        t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) * 1.41 + 0.5
        t = np.clip(t, 0, 1)[..., None]
        return (base * (1 - t) + other * t).astype(np.float32)
    if kind == "noise":
        return img + rng.normal(0, 22, size=(s, s, 3)).astype(np.float32)
    if kind == "speckled":
        # Confetti: small specks of saturated object colours; clutter that competes with the
        # (small) objects for the attention of a global embedding.
        palette = np.array(list(COLOURS.values()), dtype=np.float32)
        n = int(0.012 * s * s)
        cy, cx = rng.integers(0, s - 1, size=(2, n))
        cols = palette[rng.integers(0, len(palette), size=n)] * 0.8
        for oy in (0, 1):
            for ox in (0, 1):
                img[cy + oy, cx + ox] = cols
        return img
    if kind == "cloudy":
        # Low-frequency colour blobs: a coarse random grid upsampled bilinearly.
        g = 4
        coarse = np.clip(base + rng.normal(0, 45, size=(g, g, 3)), 0, 255)
        pos = np.linspace(0, g - 1, s)
        i0 = np.clip(np.floor(pos).astype(int), 0, g - 2)
        f = (pos - i0)[:, None]
        rows = coarse[i0] * (1 - f[..., None]) + coarse[i0 + 1] * f[..., None]  # (s, g, 3)
        cols = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
        return cols.astype(np.float32)
    raise ConfigError(f"unknown background {kind!r}; choose from {', '.join(BACKGROUNDS)}")


def render(scene: Scene, cfg: WorldConfig) -> np.ndarray:
    """The ``(S, S, 3)`` uint8 image of ``scene`` (deterministic given the scene and config)."""
    s = cfg.image_size
    rng = np.random.default_rng(scene.render_seed)
    img = _background(scene.background, s, rng)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    # Distractors first, main object last so that it is never occluded.
    for obj in (*scene.objects[1:], scene.objects[0]):
        r = obj.size * s / 2
        theta = np.deg2rad(obj.angle)
        dx, dy = (xx - obj.x * s) / r, (yy - obj.y * s) / r
        u = np.cos(theta) * dx + np.sin(theta) * dy
        v = -np.sin(theta) * dx + np.cos(theta) * dy
        mask = _shape_mask(obj.shape, u, v)
        colour = np.clip(
            np.array(COLOURS[obj.colour]) + rng.normal(0, cfg.colour_jitter, 3), 0, 255
        )
        pattern = _texture_mask(obj.texture, xx, yy, cfg.texture_period, rng.uniform(0, 8, 2))
        layer = np.where(pattern[..., None], colour * 0.3, colour)
        img = np.where(mask[..., None], layer, img)
    if cfg.pixel_noise > 0:
        img = img + rng.normal(0, cfg.pixel_noise, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- captions


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(0, len(options)))]


def object_phrase(
    obj: SceneObject,
    rng: np.random.Generator | None = None,
    *,
    with_size: bool = False,
    with_texture: bool = True,
    with_position: bool = False,
) -> str:
    """Noun phrase for one object, e.g. "a small red striped circle".

    With ``rng`` the wording is paraphrased (synonyms, texture before or after the shape);
    without it the phrase is canonical (``[size] colour texture shape``), which is what the
    simulated captioner uses.
    """
    if rng is None:
        words = [size_word(obj.size)] if with_size else []
        words += [obj.colour]
        if with_texture:
            words.append(obj.texture)
        words.append(obj.shape)
        phrase = _article(" ".join(words))
    else:
        shape = _pick(rng, _SHAPE_WORDS[obj.shape])
        words = [size_word(obj.size)] if with_size else []
        suffix = ""
        if with_texture and rng.random() < 0.5:
            words += [obj.colour, _pick(rng, _TEXTURE_ADJ[obj.texture]), shape]
        else:
            words += [obj.colour, shape]
            if with_texture:
                suffix = _pick(rng, _TEXTURE_SUFFIX[obj.texture])
        phrase = _article(" ".join(w for w in words if w))
        if suffix:
            phrase += " " + suffix
    if with_position:
        phrase += " " + position_phrase(obj.x, obj.y)
    return phrase


def caption(scene: Scene, cfg: WorldConfig, rng: np.random.Generator) -> str:
    """A paraphrased caption of ``scene`` (the pre-training text).

    The main object is always described (colour, shape, texture; size and position sometimes);
    each distractor is mentioned with probability ``cfg.caption_distractor_prob`` (at most two,
    with colour and shape only so that captions fit the 32-token context).
    """
    main = object_phrase(
        scene.main,
        rng,
        with_size=rng.random() < cfg.caption_size_prob,
        with_position=rng.random() < cfg.caption_position_prob,
    )
    parts = [main]
    for obj in scene.objects[1:3]:
        if rng.random() < cfg.caption_distractor_prob:
            parts.append(object_phrase(obj, rng, with_texture=rng.random() < 0.3))
    objs = parts[0]
    for p in parts[1:]:
        objs += _pick(rng, _JOINERS) + p
    bg = _pick(rng, _BACKGROUND_WORDS[scene.background])
    return _pick(rng, _CAPTION_TEMPLATES).format(objs=objs, bg=bg)


def sample_pairs(
    cfg: WorldConfig, n: int, stream: int = 0, start: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``n`` image-caption pairs: a ``(n, S, S, 3)`` uint8 array and ``n`` captions.

    Pair ``i`` is a function of ``(cfg, stream, start + i)`` only.
    """
    images = np.empty((n, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        rng = scene_rng(cfg.seed, stream, start + i)
        scene = sample_scene(cfg, rng)
        images[i] = render(scene, cfg)
        captions.append(caption(scene, cfg, rng))
    return images, captions


# ----------------------------------------------------------------------------- simulated LMM


def corrupt_object(
    obj: SceneObject, error_rate: float, rng: np.random.Generator, cfg: WorldConfig | None = None
) -> SceneObject:
    """``obj`` with each of shape, colour and texture replaced by a *wrong* value with
    probability ``error_rate`` (independently). SIMULATED captioner noise."""
    cfg = cfg or WorldConfig()
    changes = {}
    for attr, values in (("shape", cfg.shapes), ("colour", cfg.colours), ("texture", cfg.textures)):
        if rng.random() < error_rate:
            wrong = [v for v in values if v != getattr(obj, attr)]
            if wrong:
                changes[attr] = wrong[int(rng.integers(0, len(wrong)))]
    return dataclasses.replace(obj, **changes)


@dataclass
class SimulatedCaption:
    """A SIMULATED LMM caption and the (possibly wrong) scene it describes."""

    text: str
    described: Scene
    """The scene as the simulated captioner "saw" it (attributes corrupted at the error rate)."""
    simulated: bool = field(default=True)


def simulate_caption(
    scene: Scene,
    error_rate: float,
    rng: np.random.Generator,
    cfg: WorldConfig | None = None,
    max_distractors: int = 2,
) -> SimulatedCaption:
    """SIMULATED stand-in for an LMM caption of one image (no model is involved).

    Describes the true scene canonically ("a small red striped circle, a blue dotted square and
    a green solid star on a speckled background"): the main object first, then up to
    ``max_distractors`` distractors, each object's shape, colour and texture independently
    replaced by a wrong value with probability ``error_rate``. Use it to test caption-based
    methods with a known, controllable caption quality; it says nothing about real LMMs.
    """
    if not 0 <= error_rate <= 1:
        raise ConfigError(f"simulate_caption: error_rate must be in [0, 1], got {error_rate}")
    objs = [corrupt_object(o, error_rate, rng, cfg) for o in scene.objects[: 1 + max_distractors]]
    described = dataclasses.replace(scene, objects=tuple(objs))
    phrases = [object_phrase(objs[0], with_size=True)] + [object_phrase(o) for o in objs[1:]]
    if len(phrases) == 1:
        text = phrases[0]
    else:
        text = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    bg = _BACKGROUND_WORDS[scene.background][0]
    return SimulatedCaption(f"{text} on a {bg} background", described)


def simulate_group_caption(
    scenes: list[Scene],
    error_rate: float,
    rng: np.random.Generator,
    cfg: WorldConfig | None = None,
) -> SimulatedCaption:
    """SIMULATED stand-in for an LMM caption of a *group* of images (e.g. sharing a pseudo-label).

    Takes the majority shape, colour and texture over the main objects of ``scenes`` (ties go to
    the first seen), corrupts each at ``error_rate`` like :func:`simulate_caption`, and says
    "a group of images that each show a red striped circle". The returned ``described`` scene
    holds the (corrupted) consensus object.
    """
    if not scenes:
        raise ConfigError("simulate_group_caption: the group is empty")

    def majority(values: list[str]) -> str:
        counts: dict[str, int] = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        return max(counts, key=lambda k: counts[k])

    mains = [s.main for s in scenes]
    consensus = dataclasses.replace(
        mains[0],
        shape=majority([m.shape for m in mains]),
        colour=majority([m.colour for m in mains]),
        texture=majority([m.texture for m in mains]),
        size=float(np.median([m.size for m in mains])),
    )
    obj = corrupt_object(consensus, error_rate, rng, cfg)
    described = Scene((obj,), scenes[0].background, scenes[0].render_seed)
    return SimulatedCaption(f"a group of images that each show {object_phrase(obj)}", described)
