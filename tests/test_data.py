"""Tests of labelless.data: image loading, folders, CSV, class lists and the CoOp benchmarks."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from labelless.data import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    ImageDataset,
    ImageTooLargeError,
    Sample,
    build_dataset,
    load_rgb,
    normalize_classname,
    parse_classes,
    scan_images,
)
from labelless.errors import ConfigError, DataError, UnknownNameError
from labelless.registry import DATASETS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPLITS_ORDER = ("train", "val", "test")


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def gradient(size=(32, 24)) -> Image.Image:
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    arr[..., 2] = 128
    return Image.fromarray(arr)


# --------------------------------------------------------------------------- load_rgb


def test_load_rgb_grayscale_palette_and_tiny(tmp_path):
    gray = save(Image.new("L", (8, 6), 77), tmp_path / "g.png")
    pal = save(gradient().convert("P"), tmp_path / "p.png")
    tiny = save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "t.bmp")
    one_bit = save(Image.new("1", (5, 5), 1), tmp_path / "b.png")
    g = load_rgb(gray)
    assert g.mode == "RGB" and g.size == (8, 6) and g.getpixel((0, 0)) == (77, 77, 77)
    assert load_rgb(pal).mode == "RGB"
    assert load_rgb(tiny).getpixel((0, 0)) == (1, 2, 3)
    assert load_rgb(one_bit).getpixel((0, 0)) == (255, 255, 255)


def test_load_rgb_alpha_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    out = load_rgb(save(rgba, tmp_path / "a.png"))
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 255)
    la = load_rgb(save(Image.new("LA", (3, 3), (0, 0)), tmp_path / "la.png"))
    assert la.getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (3, 3), 0)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((1, 1), 1)
    out = load_rgb(save(pal, tmp_path / "pt.png", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (10, 200, 30)


def test_load_rgb_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    path = save(cmyk, tmp_path / "c.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    r, g, b = load_rgb(path).getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60


def test_load_rgb_16bit_rescaled_not_clipped(tmp_path):
    arr = np.linspace(0, 65535, 64 * 8).reshape(8, 64).astype(np.uint16)
    path = save(Image.fromarray(arr), tmp_path / "deep.png")
    assert Image.open(path).mode in ("I;16", "I")
    out = np.asarray(load_rgb(path))
    assert out.dtype == np.uint8 and out.shape == (8, 64, 3)
    assert out.min() == 0 and out.max() == 255
    assert (out == 255).mean() < 0.05  # clipping would saturate almost every pixel
    mid = Image.fromarray(np.full((2, 2), 32768, np.uint16))
    assert load_rgb(save(mid, tmp_path / "mid.png")).getpixel((0, 0))[0] in (127, 128)


def test_load_rgb_32bit_int_and_float(tmp_path):
    big = Image.fromarray(np.array([[-1000, 0], [1000, 3000]], np.int32), mode="I")
    out = np.asarray(load_rgb(save(big, tmp_path / "i.tif")))[..., 0]
    assert out.min() == 0 and out.max() == 255 and out[0, 1] < out[1, 0]
    flt = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], np.float32), mode="F")
    out = np.asarray(load_rgb(save(flt, tmp_path / "f.tif")))[..., 0]
    assert out[1, 0] == 255 and out[0, 1] in (127, 128)


def test_load_rgb_applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(img, tmp_path / "rot.jpg", exif=exif.tobytes())
    assert Image.open(path).size == (40, 20)
    assert load_rgb(path).size == (20, 40)


def test_load_rgb_corrupt_files(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(CorruptImageError, match="junk.jpg"):
        load_rgb(junk)
    buf = io.BytesIO()
    gradient((256, 256)).save(buf, "JPEG", quality=90)
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(CorruptImageError, match="trunc.jpg") as info:
        load_rgb(trunc)
    assert isinstance(info.value, DataError) and "trunc" in info.value.path
    with pytest.raises(CorruptImageError, match="no such file"):
        load_rgb(tmp_path / "absent.png")


def test_load_rgb_pixel_guard_and_draft(tmp_path):
    big = save(gradient((600, 400)), tmp_path / "big.png")
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        load_rgb(big, max_pixels=100 * 100)
    assert load_rgb(big, max_pixels=None).size == (600, 400)
    assert load_rgb(big, max_side=100).size == (100, 67)  # reduce(6): never below max_side
    jpg = save(gradient((2000, 1000)), tmp_path / "big.jpg", quality=80)
    small = load_rgb(jpg, max_side=256)
    assert small.mode == "RGB" and 256 <= max(small.size) <= 512  # JPEG draft: 1/4 scale
    # The guard applies after draft, so a huge JPEG can still be read at reduced size.
    assert max(load_rgb(jpg, max_pixels=600 * 300, max_side=500).size) >= 500
    with pytest.raises(ImageTooLargeError):
        load_rgb(jpg, max_pixels=600 * 300)


def test_load_rgb_pil_bomb_error_becomes_image_too_large(tmp_path, monkeypatch):
    path = save(gradient((100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2x limit: PIL raises
    with pytest.raises(ImageTooLargeError):
        load_rgb(path, max_pixels=1000)
    # A caller that allows more than PIL's hard limit still gets the image.
    assert load_rgb(path, max_pixels=None).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_scan_images_sorted_recursive_case_insensitive(tmp_path):
    for rel in ["b/2.JPG", "a/1.png", "a/sub/0.jpeg", ".hidden/x.jpg", "a/.y.png"]:
        save(Image.new("RGB", (2, 2)), tmp_path / rel, format="PNG")
    (tmp_path / "a" / "notes.txt").write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for p in scan_images(tmp_path)]
    assert found == ["a/1.png", "a/sub/0.jpeg", "b/2.JPG"]
    assert ".jpg" in IMAGE_EXTENSIONS and ".png" in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- classes


def test_parse_classes_sources(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("# animals\ncat\n\n dog \n# end\nbird\n")
    assert parse_classes(str(txt)) == ["cat", "dog", "bird"]
    js = tmp_path / "c.json"
    js.write_text(json.dumps(["a b", "c"]))
    assert parse_classes(str(js)) == ["a b", "c"]
    idx = tmp_path / "idx.json"
    idx.write_text(json.dumps({"2": "two", "1": "one", "10": "ten"}))
    assert parse_classes(str(idx)) == ["one", "two", "ten"]
    assert parse_classes("cat, dog,bird") == ["cat", "dog", "bird"]
    assert parse_classes("sea_lake,Forest", normalize="underscores") == ["sea lake", "Forest"]


def test_parse_classes_errors(tmp_path):
    with pytest.raises(DataError, match="duplicate.*'cat'"):
        parse_classes("cat,dog, cat")
    with pytest.raises(DataError, match="duplicate.*'sea lake'"):
        parse_classes("sea_lake,sea lake", normalize="underscores")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(DataError, match="no class names"):
        parse_classes(str(empty))
    with pytest.raises(DataError, match="no class names"):
        parse_classes("")
    with pytest.raises(DataError, match="does not exist"):
        parse_classes(str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(DataError, match="not integers"):
        parse_classes(str(bad))


def test_normalize_classname_modes():
    assert normalize_classname("  Sea_Lake ") == "Sea_Lake"
    assert normalize_classname("Sea_Lake", "lower") == "sea_lake"
    assert normalize_classname("Sea__Lake", "underscores") == "Sea Lake"
    with pytest.raises(ConfigError, match="underscores"):
        normalize_classname("x", "snake")


# --------------------------------------------------------------------------- folders


@pytest.fixture
def mixed_folder(tmp_path):
    """Two class folders with good images of odd modes, a truncated JPEG and a fake JPEG."""
    root = tmp_path / "data"
    save(gradient(), root / "cat" / "rgb.jpg")
    save(Image.new("L", (9, 9), 50), root / "cat" / "gray.png")
    save(Image.new("RGBA", (9, 9), (0, 0, 0, 0)), root / "dog" / "alpha.png")
    save(Image.new("CMYK", (9, 9), (0, 0, 0, 255)), root / "dog" / "cmyk.jpg")
    buf = io.BytesIO()
    gradient((128, 128)).save(buf, "JPEG")
    (root / "dog" / "trunc.jpg").write_bytes(buf.getvalue()[:600])
    (root / "cat" / "fake.jpg").write_bytes(b"<html>not an image</html>" * 20)
    return root


def test_folder_needs_classes_and_yields_unknown_labels(mixed_folder):
    with pytest.raises(DataError, match="pass --classes"):
        build_dataset(f"folder:root={mixed_folder}")
    ds = build_dataset(f"folder:root={mixed_folder}", classes=["cat", "dog"])
    assert len(ds) == 6 and ds.classnames == ["cat", "dog"]
    assert not ds.has_labels and ds.labels.tolist() == [-1] * 6
    assert ds.labels.dtype == torch.long


def test_validate_skips_corrupt_and_lists_them(mixed_folder, lablog):
    ds = build_dataset(f"imagefolder:root={mixed_folder}")
    assert ds.classnames == ["cat", "dog"] and len(ds) == 6
    bad = ds.paths.index(str(mixed_folder / "cat" / "fake.jpg"))
    with pytest.raises(CorruptImageError):
        ds[bad]
    copy = ds.with_transform(lambda im: im.size)
    ds.validate(num_workers=2, progress=False)
    assert "skipped 2 unreadable" in lablog.text
    assert len(ds) == 4 and ds.has_labels
    assert sorted(Path(p).name for p, _ in ds.skipped) == ["fake.jpg", "trunc.jpg"]
    assert all(reason for _, reason in ds.skipped)
    assert len(copy) == 6  # the copy kept its own records
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].mode == "RGB" and item["index"] == i
        assert item["label"] == ds.labels[i].item()


def test_dataset_batches_with_default_collate(mixed_folder, lablog):
    ds = build_dataset(f"imagefolder:root={mixed_folder}").validate(progress=False)
    assert "skipped 2" in lablog.text

    def to_tensor(im):
        return torch.from_numpy(np.array(im.resize((8, 8)))).permute(2, 0, 1).float()

    ds = ds.with_transform(to_tensor)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 8, 8)
    assert batch["label"].tolist() == ds.labels.tolist()
    assert batch["index"].tolist() == [0, 1, 2, 3]
    sample = ds.sample(1)
    assert isinstance(sample, Sample) and sample.path == ds.paths[1]


def test_subset_and_fingerprint(mixed_folder):
    ds = build_dataset(f"imagefolder:root={mixed_folder}")
    sub = ds.subset(torch.tensor([3, 0]))
    assert sub.paths == [ds.paths[3], ds.paths[0]] and sub.classnames == ds.classnames
    assert len(ds) == 6
    assert ds.fingerprint() == build_dataset(f"imagefolder:root={mixed_folder}").fingerprint()
    assert sub.fingerprint() != ds.fingerprint()


def test_imagefolder_names_and_class_alignment(tmp_path):
    for cls in ["sea_lake", "annual_crop"]:
        save(Image.new("RGB", (4, 4)), tmp_path / cls / "x.png")
    ds = build_dataset(f"imagefolder:root={tmp_path},names=underscores")
    assert ds.classnames == ["annual crop", "sea lake"]
    flipped = build_dataset(
        f"imagefolder:root={tmp_path},names=underscores", classes=["sea lake", "annual crop"]
    )
    assert flipped.classnames == ["sea lake", "annual crop"]
    assert flipped.labels.tolist() == [1, 0]  # same images, labels follow the given order
    with pytest.raises(
        DataError, match=r"(?s)'annual crop'.*names=underscores in the data set spec would"
    ) as info:
        build_dataset(f"imagefolder:root={tmp_path}", classes=["annual crop", "sea lake"])
    assert "annual_crop" in str(info.value)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(f"imagefolder:root={tmp_path / 'nope'}")
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(f"folder:root={tmp_path / 'nope'}", classes=["a"])
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"no images.*\.jpg"):
        build_dataset(f"folder:root={tmp_path / 'empty'}", classes=["a"])
    with pytest.raises(DataError, match="no images"):
        build_dataset(f"imagefolder:root={tmp_path / 'empty'}")
    save(Image.new("RGB", (2, 2)), tmp_path / "part" / "a" / "x.png")
    (tmp_path / "part" / "b").mkdir()
    with pytest.raises(DataError, match="hold no images: b"):
        build_dataset(f"imagefolder:root={tmp_path / 'part'}")
    with pytest.raises(DataError, match="no option 'rot'.*root"):
        build_dataset(f"imagefolder:rot={tmp_path}")
    with pytest.raises(UnknownNameError, match="eurosat"):
        build_dataset("eurosatt:root=x")
    with pytest.raises(DataError, match="label"):
        ImageDataset([("x.png", 3)], ["a", "b"])


# --------------------------------------------------------------------------- csv


@pytest.fixture
def csv_images(tmp_path):
    for name in ["a.png", "b.png", "c.png"]:
        save(Image.new("RGB", (4, 4)), tmp_path / "img" / name)
    return tmp_path


def test_csv_names_indices_and_root(csv_images):
    f = csv_images / "list.csv"
    f.write_text("path,label\nimg/a.png,dog\nimg/b.png,cat\nimg/c.png,\n")
    ds = build_dataset(f"csv:path={f}")
    assert ds.classnames == ["cat", "dog"] and ds.labels.tolist() == [1, 0, -1]
    assert ds.paths[0] == str(csv_images / "img" / "a.png")
    g = csv_images / "idx.csv"
    g.write_text("label,path\n1,a.png\n0,b.png\n")
    ds = build_dataset(f"csv:path={g},root={csv_images / 'img'}", classes=["cat", "dog"])
    assert ds.classnames == ["cat", "dog"] and ds.labels.tolist() == [1, 0]


def test_csv_errors(csv_images, lablog):
    f = csv_images / "bad.csv"
    f.write_text("file,class\nimg/a.png,dog\n")
    with pytest.raises(DataError, match="lacks column.*path, label"):
        build_dataset(f"csv:path={f}")
    f.write_text("path,label\nimg/a.png,dgo\n")
    with pytest.raises(DataError, match="line 2.*'dgo'.*Did you mean 'dog'"):
        build_dataset(f"csv:path={f}", classes=["cat", "dog"])
    f.write_text("path,label\nimg/a.png,5\n")
    with pytest.raises(DataError, match="outside 0..1"):
        build_dataset(f"csv:path={f}", classes=["cat", "dog"])
    f.write_text("path,label\nimg/a.png,1\n")
    with pytest.raises(DataError, match="pass --classes"):
        build_dataset(f"csv:path={f}")
    f.write_text("path,label\nimg/a.png,cat\nimg/zz.png,dog\nimg/yy.png,dog\n")
    with pytest.raises(DataError, match="2 of 3 images.*zz.png.*missing=skip"):
        build_dataset(f"csv:path={f}")
    ds = build_dataset(f"csv:path={f},missing=skip")
    assert "skipping 2" in lablog.text
    assert len(ds) == 1 and len(ds.skipped) == 2
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(f"csv:path={csv_images / 'none.csv'}")


# --------------------------------------------------------------------------- benchmarks


def test_registry_has_all_builders_with_docs():
    expected = {
        "folder",
        "imagefolder",
        "csv",
        "eurosat",
        "dtd",
        "oxford_flowers",
        "oxford_pets",
        "caltech101",
        "stanford_cars",
        "ucf101",
        "food101",
        "sun397",
        "fgvc_aircraft",
        "cub",
        "resisc45",
    }
    assert expected <= set(DATASETS.names())
    assert all(DATASETS.describe(n) for n in expected)


def test_benchmark_needs_root_and_valid_split(tmp_path):
    with pytest.raises(DataError, match="pass eurosat:root=DIR"):
        build_dataset("eurosat")
    with pytest.raises(DataError, match="train, val, test"):
        build_dataset(f"eurosat:root={tmp_path},split=dev")
    with pytest.raises(DataError, match="split_zhou_EuroSAT.json.*does not exist"):
        build_dataset(f"eurosat:root={tmp_path}")
    with pytest.raises(DataError, match="no val split"):
        build_dataset(f"cub:root={tmp_path},split=val")


def test_eurosat_full_splits():
    root = shared("eurosat")
    sizes = {}
    for split in ["train", "val", "test"]:
        ds = build_dataset(f"eurosat:root={root},split={split}")
        sizes[split] = len(ds)
        assert ds.has_labels and ds.split == split and ds.name == "eurosat"
    assert sizes == {"train": 13500, "val": 5400, "test": 8100}
    assert len(ds.classnames) == 10
    assert ds.classnames[0] == "Annual Crop Land" and ds.classnames[9] == "Sea or Lake"
    assert sorted(set(ds.labels.tolist())) == list(range(10))
    item = ds[0]
    assert item["image"].size == (64, 64) and item["label"] == ds.labels[0].item()


def test_eurosat_given_classes_must_match():
    root = shared("eurosat")
    ds = build_dataset(f"eurosat:root={root}")
    with pytest.raises(DataError, match="'Annual Crop'.*Did you mean 'Annual Crop Land'"):
        build_dataset(f"eurosat:root={root}", classes=["Annual Crop"] + ds.classnames[1:])
    same = build_dataset(f"eurosat:root={root}", classes=ds.classnames)
    assert same.labels.tolist() == ds.labels.tolist()


@pytest.mark.parametrize(
    "name, counts, first",
    [
        ("dtd", (29, 10, 21), "banded"),
        ("oxford_pets", (111, 32, 5), "abyssinian"),
        ("oxford_flowers", (175, 57, 74), "pink primrose"),
        ("caltech101", (139, 58, 103), "face"),
    ],
)
def test_benchmark_samples(name, counts, first):
    root = shared("samples", name)
    got = tuple(len(build_dataset(f"{name}:root={root},split={s}")) for s in SPLITS_ORDER)
    assert got == counts
    ds = build_dataset(f"{name}:root={root}")
    assert ds.classnames[0] == first and ds.has_labels
    assert ds[0]["image"].mode == "RGB"


def test_benchmark_names_option():
    root = shared("samples", "oxford_pets")
    raw = build_dataset(f"oxford_pets:root={root}")
    spaced = build_dataset(f"oxford_pets:root={root},names=underscores")
    assert "american_bulldog" in raw.classnames and "american bulldog" in spaced.classnames


def test_split_file_with_missing_entries(tmp_path, lablog):
    img = tmp_path / "images"
    save(Image.new("RGB", (4, 4)), img / "a" / "1.jpg")
    split = {
        "train": [["a/1.jpg", 0, "Alpha Class"]],
        "val": [],
        "test": [["a/1.jpg", 0, "Alpha Class"], ["b/2.jpg", 1, "Beta Class"]],
    }
    sf = tmp_path / "my_split.json"
    sf.write_text(json.dumps(split))
    spec = f"dtd:root={tmp_path},split_file={sf}"
    assert build_dataset(spec + ",split=train").classnames == ["Alpha Class", "Beta Class"]
    with pytest.raises(DataError, match=r"1 of 2 images.*b/2\.jpg.*missing=skip"):
        build_dataset(spec)
    ds = build_dataset(spec + ",missing=skip")
    assert "skipping 1" in lablog.text
    assert len(ds) == 1 and ds.skipped[0][0].endswith("2.jpg")
    sf.write_text(json.dumps({"train": [], "test": [["a/1.jpg", 1, "Beta"]]}))
    with pytest.raises(DataError, match=r"label\(s\) \[0\]"):
        build_dataset(spec)


def test_fgvc_aircraft_layout(tmp_path):
    (tmp_path / "variants.txt").write_text("707-320\nCessna 172\n")
    (tmp_path / "images_variant_test.txt").write_text("0001 Cessna 172\n0002 707-320\n")
    for i in ["0001", "0002"]:
        save(Image.new("RGB", (4, 4)), tmp_path / "images" / f"{i}.jpg")
    ds = build_dataset(f"fgvc_aircraft:root={tmp_path}")
    assert ds.classnames == ["707-320", "Cessna 172"] and ds.labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="images_variant_train.txt"):
        build_dataset(f"fgvc_aircraft:root={tmp_path},split=train")


def test_cub_layout(tmp_path):
    root = tmp_path / "CUB_200_2011"
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    rels = [
        "001.Black_footed_Albatross/a.jpg",
        "002.Laysan_Albatross/b.jpg",
        "002.Laysan_Albatross/c.jpg",
    ]
    for r in rels:
        save(Image.new("RGB", (4, 4)), root / "images" / r)
    (root / "images.txt").write_text("".join(f"{i + 1} {r}\n" for i, r in enumerate(rels)))
    (root / "image_class_labels.txt").write_text("1 1\n2 2\n3 2\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    train = build_dataset(f"cub:root={tmp_path},split=train,names=underscores")
    assert train.classnames == ["Black footed Albatross", "Laysan Albatross"]
    assert train.labels.tolist() == [0, 1]
    test = build_dataset(f"cub:root={root}")
    assert len(test) == 1 and test.labels.tolist() == [1]


def test_resisc45_generated_split_is_deterministic_and_disjoint():
    root = shared("resisc45_64px", "images")
    parts = {s: build_dataset(f"resisc45:root={root},split={s}") for s in SPLITS_ORDER}
    assert [len(parts[s]) for s in SPLITS_ORDER] == [4200, 1400, 1400]
    ds = parts["test"]
    assert "commercial area" in ds.classnames and len(ds.classnames) == 10
    assert ds.meta["split_source"] == "generated" and ds.meta["seed"] == 0
    assert ds.meta["fractions"] == [0.6, 0.2, 0.2]
    sets = [set(parts[s].paths) for s in SPLITS_ORDER]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert build_dataset(f"resisc45:root={root}").paths == ds.paths
    assert build_dataset(f"resisc45:root={root},seed=1").paths != ds.paths
    # The parent folder (holding images/) works too.
    assert build_dataset(f"resisc45:root={root.parent}").paths == ds.paths


def test_resisc45_with_split_file(tmp_path):
    root = shared("resisc45_64px", "images")
    sf = tmp_path / "split.json"
    sf.write_text(
        json.dumps(
            {
                "train": [["beach/beach_001.jpg", 0, "beach"]],
                "val": [],
                "test": [["lake/lake_001.jpg", 1, "lake"], ["beach/beach_002.jpg", 0, "beach"]],
            }
        )
    )
    ds = build_dataset(f"resisc45:root={root},split_file={sf}")
    assert ds.classnames == ["beach", "lake"] and ds.labels.tolist() == [1, 0]
    assert ds.meta["split_source"] == "file"


def test_importing_data_registers_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import labelless.data  # noqa: F401
    assert "eurosat" in DATASETS


def test_limit_option_takes_a_fixed_subset_of_any_data_set(tmp_path):
    from conftest import make_colour_folder

    root = make_colour_folder(tmp_path / "imgs", per_class=6)
    full = build_dataset(f"imagefolder:root={root}")
    a = build_dataset(f"imagefolder:root={root},limit=7")
    b = build_dataset(f"imagefolder:root={root},limit=7")
    assert len(full) == 18 and len(a) == 7
    assert a.paths == b.paths and set(a.paths) < set(full.paths)
    assert a.paths == [p for p in full.paths if p in set(a.paths)]  # data set order kept
    assert len(build_dataset(f"imagefolder:root={root},limit=100")) == 18
    for bad in ("0", "x"):
        with pytest.raises(DataError, match="limit must be a positive integer"):
            build_dataset(f"imagefolder:root={root},limit={bad}")


def _tiny_eurosat(root: Path) -> Path:
    """A CoOp-style EuroSAT root with two classes and 2/1/1 images in train/val/test."""
    from PIL import Image

    entries = {"train": [], "val": [], "test": []}
    for label, cls in enumerate(["Forest", "River"]):
        for i, split in enumerate(["train", "train", "val", "test"]):
            rel = f"{cls}/{cls}_{i}.jpg"
            (root / "2750" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (label * 200, 50, 50)).save(root / "2750" / rel)
            entries[split].append([rel, label, cls])
    (root / "split_zhou_EuroSAT.json").write_text(json.dumps(entries))
    return root


def test_split_plus_joins_splits_in_order(tmp_path):
    root = _tiny_eurosat(tmp_path / "eurosat")
    train = build_dataset(f"eurosat:root={root},split=train")
    val = build_dataset(f"eurosat:root={root},split=val")
    both = build_dataset(f"eurosat:root={root},split=train+val")
    assert both.records == train.records + val.records and len(both) == 6
    assert both.split == "train+val" and both.classnames == train.classnames
    assert [m["split"] for m in both.meta["joined"]] == ["train", "val"]
    assert both.fingerprint() not in {train.fingerprint(), val.fingerprint()}  # its own cache key
    assert len(build_dataset(f"eurosat:root={root},split=train+val,limit=3")) == 3
    with pytest.raises(DataError, match="distinct splits"):
        build_dataset(f"eurosat:root={root},split=train+train")
    with pytest.raises(DataError, match="train, val, test"):
        build_dataset(f"eurosat:root={root},split=train+dev")


def test_joined_splits_refuse_overlap_and_class_mismatch(tmp_path):
    from labelless.data import join_splits

    root = _tiny_eurosat(tmp_path / "eurosat")
    train = build_dataset(f"eurosat:root={root},split=train")
    with pytest.raises(DataError, match="overlap"):
        join_splits([train, train.subset([0])], "eurosat")
    other = train.subset([0])
    other.classnames = ["Forest", "Lake"]
    with pytest.raises(DataError, match="different class lists"):
        join_splits([train, other], "eurosat")
