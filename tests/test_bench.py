"""The bench harness (experiment expansion, skip/refuse, dry run, aggregation) and the papers'
reference numbers."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from labelless.bench import harness
from labelless.bench.harness import expand, load_experiment, run_experiment
from labelless.bench.reference import (
    PAPERS,
    REQUIRED_FIELDS,
    backbone_key,
    compare,
    comparison_markdown,
    load_reference,
)
from labelless.errors import ConfigError, LabellessError
from labelless.methods.base import FitContext, FitResult, Method
from labelless.registry import METHODS

TINY = "openclip:labelless-tiny:random"
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


# -- a fast test-only method that counts its fits --------------------------------------------------

FIT_CALLS: list[str] = []


@dataclass
class Inner:
    a: int = 0
    b: int = 0


@dataclass
class CounterConfig:
    """tag: any string (changes the run's identity); inner: nested settings whose defaults
    differ from Inner's own."""

    tag: str = "a"
    inner: Inner = field(default_factory=lambda: Inner(a=5, b=7))


class CounterMethod(Method):
    """Test-only: the zero-shot classifier with class names, counting calls to fit."""

    Config = CounterConfig
    name = "bench-test-counter"

    def fit(self, ctx: FitContext) -> FitResult:
        from labelless.methods.zeroshot import ZeroShotConfig, build_zeroshot

        FIT_CALLS.append(str(ctx.out_dir))
        history = [{"epoch": 1, "loss": 1.0, "pl_acc": 40.0}, {"epoch": 2, "loss": 0.5, "pl_acc": 60.0}]
        return FitResult(build_zeroshot(ctx, ZeroShotConfig()), history=history)


if "bench-test-counter" not in METHODS:
    METHODS.register("bench-test-counter", CounterMethod)


def write_yaml(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def colour_experiment(tmp_path: Path, folder: Path, method: str = "bench-test-counter",
                      seeds=(0, 1), params: dict | None = None, name: str = "exp") -> Path:
    return write_yaml(tmp_path / f"{name}.yaml", {
        "name": name,
        "defaults": {"model": TINY, "texts": "names", "runtime": {"progress": False, "batch_size": 8,
                                                                  "cache_dir": str(tmp_path / "cache")}},
        "grid": {
            "runs": [{"name": "r", "method": method, "params": params or {}}],
            "data": [{"name": "colours", "data": f"imagefolder:root={folder}"}],
            "seed": list(seeds),
        },
    })


# -- expansion ------------------------------------------------------------------------------------

def grid_doc(**over):
    doc = {
        "name": "g",
        "defaults": {"model": TINY, "params": {"crops": 4}, "texts": "names"},
        "grid": {
            "runs": [
                {"name": "clip", "method": "zeroshot", "params": {"scorer": "clip"}},
                {"name": "wca", "method": "zeroshot", "params": {"scorer": "wca"}, "datasets": ["a"]},
            ],
            "data": [
                {"name": "a", "data": "imagefolder:root=A", "texts": "templates:name=clip",
                 "method_params": {"wca": {"crops": 8}}},
                {"name": "b", "data": "imagefolder:root=B", "eval_data": "imagefolder:root=B2"},
            ],
            "model": [TINY, {"name": "other", "model": "openclip:ViT-B-32:openai"}],
            "seed": [0, 1, 2],
        },
    }
    doc["grid"].update(over)
    return doc


def test_expand_grid_sizes_precedence_and_folders(tmp_path):
    exp = load_experiment(write_yaml(tmp_path / "g.yaml", grid_doc()))
    plan = expand(exp, tmp_path / "runs")
    # clip: 2 data x 2 models x 3 seeds; wca only on data set a: 1 x 2 x 3
    assert len(plan) == 12 + 6
    assert len({p.out_dir for p in plan}) == len(plan)
    first = plan[0]
    assert first.out_dir == tmp_path / "runs" / "g" / "clip" / "a" / "openclip-labelless-tiny-random" / "s0"
    assert [p.seed for p in plan[:3]] == [0, 1, 2]
    wca_a = next(p for p in plan if p.run == "wca")
    # defaults.params < run.params < data.method_params[run name]
    assert wca_a.config.params == {"crops": 8, "scorer": "wca"}
    assert wca_a.config.texts == "templates:name=clip"  # the data entry overrides defaults
    clip_b = next(p for p in plan if p.run == "clip" and p.data == "b" and p.model == "other")
    assert clip_b.config.eval_data == "imagefolder:root=B2" and clip_b.config.texts == "names"
    assert clip_b.config.model == "openclip:ViT-B-32:openai"
    assert clip_b.config.runtime.seed == clip_b.config.seed == clip_b.seed
    # deterministic: the same file gives the same folders and hashes
    again = expand(load_experiment(tmp_path / "g.yaml"), tmp_path / "runs")
    assert [(p.out_dir, p.hash) for p in again] == [(p.out_dir, p.hash) for p in plan]
    # runtime is not part of a run's identity
    other_rt = expand(exp, tmp_path / "runs", runtime={"batch_size": 3, "device": "cpu"})
    assert other_rt[0].config.runtime.batch_size == 3
    assert [p.hash for p in other_rt] == [p.hash for p in plan]
    # runs share the feature cache: the default one unless the command line names another
    from labelless.data.features import default_cache_dir

    assert plan[0].config.runtime.cache_dir == str(default_cache_dir())
    assert expand(exp, tmp_path / "runs", runtime={"cache_dir": str(tmp_path)})[0].config.runtime.cache_dir == str(tmp_path)


def test_method_list_and_errors(tmp_path):
    doc = grid_doc()
    del doc["grid"]["runs"]
    doc["grid"]["method"] = ["zeroshot"]
    plan = expand(load_experiment(write_yaml(tmp_path / "m.yaml", doc)), tmp_path)
    assert {p.run for p in plan} == {"zeroshot"} and len(plan) == 12
    bad = grid_doc()
    bad["grid"]["data"][0]["textz"] = "names"
    with pytest.raises(ConfigError, match="textz.*Did you mean 'texts'"):
        load_experiment(write_yaml(tmp_path / "bad.yaml", bad))
    dup = grid_doc()
    dup["grid"]["runs"][1]["name"] = "clip"
    with pytest.raises(ConfigError, match="unique"):
        load_experiment(write_yaml(tmp_path / "dup.yaml", dup))
    unknown = grid_doc()
    unknown["grid"]["runs"][1]["datasets"] = ["c"]
    with pytest.raises(ConfigError, match="unknown data set 'c'"):
        load_experiment(write_yaml(tmp_path / "unk.yaml", unknown))


def test_extends_inherits_defaults_and_axes(tmp_path):
    write_yaml(tmp_path / "base.yaml", grid_doc())
    child = write_yaml(tmp_path / "child.yaml", {
        "name": "child", "extends": "base.yaml",
        "grid": {"runs": [{"name": "new", "method": "zeroshot"}], "seed": [5]},
    })
    exp = load_experiment(child)
    assert [d["name"] for d in exp.data] == ["a", "b"] and exp.seeds == [5]
    assert exp.defaults["params"] == {"crops": 4} and [r["name"] for r in exp.runs] == ["new"]
    assert len(expand(exp, tmp_path)) == 2 * 2 * 1


def test_shipped_experiments_parse():
    main = load_experiment(EXPERIMENTS / "testbed" / "main.yaml")
    plan = expand(main, "runs")
    assert {p.config.method for p in plan} == {"zeroshot"}
    assert {p.run for p in plan} == {"zs-names", "zs-cupl", "wca"}
    assert all(p.config.model == "testbed" and p.config.eval_data == "testbed:split=test" for p in plan)
    adapt = load_experiment(EXPERIMENTS / "testbed" / "adaptation.yaml")
    methods = {r["method"] for r in adapt.runs}
    assert methods >= {"fair", "region-probe", "latteclip", "coft"}  # every paper's method
    from labelless.registry import METHODS

    assert all(m in METHODS for m in methods)
    assert adapt.data == main.data and adapt.seeds == main.seeds


# -- running: skip, refuse, dry run ---------------------------------------------------------------

def test_skip_existing_and_refuse_edited(tmp_path, colour_folder):
    FIT_CALLS.clear()
    path = colour_experiment(tmp_path, colour_folder, params={"inner": {"a": 1}})
    runs = tmp_path / "runs"
    report = run_experiment(path, runs, out=lambda *a: None)
    assert len(FIT_CALLS) == 2 and len(report.ran) == 2 and not report.skipped
    run_dir = runs / "exp" / "r" / "colours" / "openclip-labelless-tiny-random" / "s1"
    assert (run_dir / "results.json").is_file()
    stored = json.loads((run_dir / "bench.json").read_text())
    assert stored["seed"] == 1 and stored["run"] == "r" and stored["hash"] == report.planned[1].hash

    # a partial nested override keeps the method's other nested defaults
    resolved = json.loads((run_dir / "results.json").read_text())["config"]["method"]
    assert resolved == {"tag": "a", "inner": {"a": 1, "b": 7}}

    report2 = run_experiment(path, runs, out=lambda *a: None)
    assert len(FIT_CALLS) == 2, "finished runs must not be fitted again"
    assert len(report2.skipped) == 2 and not report2.ran

    # adding a seed runs only the new one
    path = colour_experiment(tmp_path, colour_folder, seeds=(0, 1, 2), params={"inner": {"a": 1}})
    report3 = run_experiment(path, runs, out=lambda *a: None)
    assert report3.ran == ["r/colours/openclip-labelless-tiny-random/s2"] and len(FIT_CALLS) == 3

    # editing a setting of existing runs is refused before anything runs
    path = colour_experiment(tmp_path, colour_folder, seeds=(0, 1, 2, 3), params={"tag": "b"})
    with pytest.raises(LabellessError, match="never edited"):
        run_experiment(path, runs, out=lambda *a: None)
    assert len(FIT_CALLS) == 3
    assert not (runs / "exp" / "r" / "colours" / "openclip-labelless-tiny-random" / "s3").exists()


def test_dry_run_only_and_unavailable(tmp_path, colour_folder):
    FIT_CALLS.clear()
    path = colour_experiment(tmp_path, colour_folder, seeds=(0, 1))
    lines: list[str] = []
    run_experiment(path, tmp_path / "runs", dry_run=True, out=lines.append)
    text = "\n".join(lines)
    assert "r/colours/openclip-labelless-tiny-random/s0  todo" in text
    assert "2 runs: 2 todo" in text and not FIT_CALLS and not (tmp_path / "runs").exists()

    run_experiment(path, tmp_path / "runs", only=["*/s1"], out=lambda *a: None)
    assert len(FIT_CALLS) == 1 and FIT_CALLS[0].endswith("s1")
    lines.clear()
    run_experiment(path, tmp_path / "runs", dry_run=True, out=lines.append)
    assert "2 runs: 1 done, 1 todo" in "\n".join(lines)
    with pytest.raises(LabellessError, match="matches none"):
        run_experiment(path, tmp_path / "runs", only=["nothing-like-this"], out=lambda *a: None)

    missing = colour_experiment(tmp_path, colour_folder, method="no-such-method", name="missing")
    lines.clear()
    run_experiment(missing, tmp_path / "runs", dry_run=True, out=lines.append)
    assert "unavailable" in "\n".join(lines)
    with pytest.raises(LabellessError, match="'no-such-method' is not registered"):
        run_experiment(missing, tmp_path / "runs", out=lambda *a: None)


def test_interrupted_run_needs_resume(tmp_path, colour_folder, monkeypatch):
    path = colour_experiment(tmp_path, colour_folder, seeds=(0,))
    plan = harness.check_status(expand(load_experiment(path), tmp_path / "runs"))
    plan[0].out_dir.mkdir(parents=True)
    (plan[0].out_dir / "checkpoint.pt").write_bytes(b"x")
    assert harness.check_status(plan)[0].status == "resume"
    calls = []
    monkeypatch.setattr("labelless.runner.run", lambda cfg, resume=False: calls.append(resume))
    with pytest.raises(LabellessError, match="--resume"):
        run_experiment(path, tmp_path / "runs", out=lambda *a: None)
    assert calls == []
    run_experiment(path, tmp_path / "runs", resume=True, aggregate=False, out=lambda *a: None)
    assert calls == [True]


# -- end to end -----------------------------------------------------------------------------------

def test_bench_zeroshot_end_to_end(tmp_path, colour_folder):
    FIT_CALLS.clear()
    path = write_yaml(tmp_path / "e2e.yaml", {
        "name": "e2e",
        "defaults": {"model": TINY, "texts": "names",
                     "runtime": {"progress": False, "batch_size": 8, "cache_dir": str(tmp_path / "cache")}},
        "grid": {
            "runs": [{"name": "zs-clip", "method": "zeroshot", "params": {"scorer": "clip"}},
                     {"name": "counter", "method": "bench-test-counter"}],
            "data": [{"name": "colours", "data": f"imagefolder:root={colour_folder}"}],
            "seed": [0, 1],
        },
    })
    lines: list[str] = []
    report = run_experiment(path, tmp_path / "runs", out=lines.append)
    exp_dir = tmp_path / "runs" / "e2e"
    assert len(report.ran) == 4 and not report.failed
    md = (exp_dir / "results.md").read_text()
    header = md.splitlines()[0]
    assert header.startswith("| run | data | model | split | seeds | runs | top-1 (%)")
    zs = [line for line in md.splitlines() if line.startswith("| zs-clip |")]
    assert len(zs) == 1
    cells = [c.strip() for c in zs[0].strip("|").split("|")]
    assert cells[1:3] == ["colours", "openclip-labelless-tiny-random"] and cells[4] == "2"
    # zero-shot CLIP is deterministic: both seeds give the same accuracy, so std is 0
    top1 = [r["top1"] for r in report.rows if r["run"] == "zs-clip"]
    assert len(top1) == 2 and top1[0] == top1[1] and 0.0 <= top1[0] <= 100.0
    assert cells[5] == "2" and cells[6] == f"{top1[0]:.2f} ± 0.00"  # 2 seeds, 2 runs
    csv_lines = (exp_dir / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run,data,model,family,backbone_spec,setting,method,")
    assert len(csv_lines) == 1 + 4
    assert {r["family"] for r in report.rows} == {"zeroshot:clip", "bench-test-counter"}
    assert (exp_dir / "results.png").stat().st_size > 0
    # the counter's history has pl_acc: one curve figure for the data set x backbone
    curves = harness.history_curves(report.rows)
    assert curves[("colours", "openclip-labelless-tiny-random")] == {"counter pl_acc": [40.0, 60.0]}
    assert (exp_dir / "curves-colours-openclip-labelless-tiny-random.png").is_file()
    assert any("| zs-clip |" in line for line in lines)  # the table was printed
    assert "comparison" not in report.files  # no paper used the tiny backbone on colour images


# -- reference data -------------------------------------------------------------------------------

def test_reference_files_are_valid():
    entries = load_reference()
    assert {e["paper"] for e in entries} == {"FAIR", "LaTTe-CLIP", "CoFT", "Region scoring"}
    datasets = {"eurosat", "dtd", "oxford_flowers", "oxford_pets", "caltech101", "stanford_cars",
                "ucf101", "food101", "sun397", "fgvc_aircraft", "cub", "resisc45", "imagenet",
                "cifar100", "aid", "average"}
    for e in entries:
        assert all(k in e for k in REQUIRED_FIELDS), e
        assert 0.0 <= e["value"] <= 100.0 and e["metric"] == "top1"
        assert e["dataset"] in datasets, e["dataset"]
        assert e["source"].startswith("papers/"), e["source"]
    for paper in PAPERS:
        doc = json.loads((Path(harness.__file__).parent / "reference" / f"{paper}.json").read_text())
        assert doc["notes"] and doc["entries"]
    # exactly one number per (paper, table, row, data set)
    keys = [(e["paper"], e["table"], e["method"], e["dataset"]) for e in entries]
    assert len(keys) == len(set(keys))


def test_reference_rows_agree_with_printed_averages():
    """A transcription check: every row's printed average is the mean of its printed values
    (to rounding), except the one inconsistency of the paper itself, recorded in a note."""
    rows: dict[tuple, dict[str, dict]] = {}
    for e in load_reference():
        rows.setdefault((e["paper"], e["table"], e["method"]), {})[e["dataset"]] = e
    checked = 0
    for key, r in rows.items():
        if "average" not in r:
            continue
        mean = statistics.fmean(e["value"] for d, e in r.items() if d != "average")
        if "note" in r["average"]:
            assert key[2].startswith("FLYP") and abs(mean - r["average"]["value"]) > 0.05
            continue
        assert abs(mean - r["average"]["value"]) <= 0.006, (key, mean)
        checked += 1
    assert checked == 9 + 7 + 5  # FAIR Table 1, FAIR Table 2, LaTTe-CLIP Table 1 (one excepted)


def test_reference_spot_values():
    """Numbers read by hand from the papers."""
    def value(paper, table, method, dataset):
        (e,) = [e for e in load_reference(paper) if e["table"] == table and e["method"] == method
                and e["dataset"] == dataset]
        return e

    e = value("fair", "Table 1", "FAIR (ours)", "eurosat")
    assert e["value"] == 91.92 and e["family"] == "fair" and e["backbone_key"] == "ViT-B-32/openai"
    assert value("fair", "Table 1", "CuPL [42]", "sun397")["value"] == 65.57
    assert value("fair", "Table 2", "FAIR (ours)", "ucf101")["backbone_key"] == "ViT-B-16/openai"
    assert value("LaTTe-CLIP", "Table 1", "LATTECLIP (ours)", "fgvc_aircraft")["value"] == 22.02
    pre = value("latteclip", "Table 1", "Pre-trained CLIP", "eurosat")
    assert pre["value"] == 42.95 and pre["family"] == "zeroshot:clip"
    assert pre["backbone_key"] == "ViT-B-32/laion2b_s34b_b79k"
    soft = value("region_scoring", "Table 1", "Random Crop / pseudo-label global / Soft Neg. Margin", "cub")
    assert soft["value"] == 65.59 and soft["primary"]
    assert soft["variant"] == {"scoring": "soft_margin", "regions": "crops", "target": "global"}
    lin = value("region_scoring", "Table 1", "no candidates (global embedding) / pseudo-label - / Global Linear",
                "fgvc_aircraft")
    assert lin["value"] == 45.51 and lin["variant"] == {"scoring": "global_linear"}
    assert value("coft", "abstract page benchmark list", "CoFT (variant not stated)", "ucf101")["value"] == 80.23


def test_backbone_key():
    assert backbone_key("openclip:ViT-B-32:openai") == "ViT-B-32/openai"
    assert backbone_key("openclip:ViT-B-32-quickgelu:openai") == "ViT-B-32/openai"
    assert backbone_key("hf:openai/clip-vit-base-patch32") == "ViT-B-32/openai"
    assert backbone_key("openclip:ViT-B-32:laion2b_s34b_b79k") == "ViT-B-32/laion2b_s34b_b79k"
    assert backbone_key("openclip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K") == "ViT-B-32/laion2b_s34b_b79k"
    assert backbone_key("testbed") == "testbed"


def test_compare_matches_family_dataset_backbone():
    rows = [
        {"run": "zs-cupl", "method": "zeroshot", "method_config": {"scorer": "cupl"}, "dataset": "eurosat",
         "backbone_spec": "openclip:ViT-B-32:openai", "top1": 52.0, "setting": "inductive"},
        {"run": "zs-cupl", "method": "zeroshot", "method_config": {"scorer": "cupl"}, "dataset": "eurosat",
         "backbone_spec": "openclip:ViT-B-32:openai", "top1": 54.0, "setting": "inductive"},
        # LaTTe-CLIP's zero-shot row is for laion2b weights, FAIR's for OpenAI's
        {"run": "zs", "method": "zeroshot", "method_config": {"scorer": "clip"}, "dataset": "eurosat",
         "backbone_spec": "openclip:ViT-B-32:laion2b_s34b_b79k", "top1": 43.0},
        {"run": "coft+", "method": "coft+", "dataset": "dtd", "backbone_spec": "hf:openai/clip-vit-base-patch16",
         "top1": 50.0},
        {"run": "rp", "method": "region-probe", "method_config": {"scoring": "entropy", "regions": "crops",
                                                                   "target": "global", "labels": "pseudo"},
         "dataset": "cub", "backbone_spec": "openclip:ViT-B-32:openai", "top1": 60.0},
        {"run": "rp2", "method": "region-probe", "method_config": {"lr": 1.0}, "dataset": "cub",
         "backbone_spec": "openclip:ViT-B-32:openai", "top1": 60.0},
        {"run": "fair", "method": "fair", "method_config": {"ablation": "none"}, "dataset": "eurosat",
         "backbone_spec": "openclip:ViT-B-32:openai", "top1": 90.0},
        {"run": "fair-wo-las", "method": "fair", "method_config": {"ablation": "wo_las"}, "dataset": "eurosat",
         "backbone_spec": "openclip:ViT-B-32:openai", "top1": 70.0},
        {"run": "x", "method": "zeroshot", "method_config": {"scorer": "cupl"}, "dataset": "eurosat",
         "backbone_spec": "testbed", "top1": 99.0},
    ]
    m = {(r["run"], r["paper"]): r for r in compare(rows)}
    assert set(m) == {("zs-cupl", "FAIR"), ("zs", "LaTTe-CLIP"), ("coft+", "CoFT"), ("rp", "Region scoring"),
                      ("rp2", "Region scoring"), ("fair", "FAIR")}
    assert m[("fair", "FAIR")]["paper_value"] == 91.92  # an ablation is not compared with the full method
    cupl = m[("zs-cupl", "FAIR")]
    assert cupl["ours"] == 53.0 and cupl["seeds"] == 2 and cupl["paper_value"] == 50.06
    assert cupl["delta"] == pytest.approx(53.0 - 50.06) and cupl["ours_std"] == pytest.approx(2 ** 0.5)
    assert m[("zs", "LaTTe-CLIP")]["paper_value"] == 42.95
    assert "inferred" in m[("coft+", "CoFT")]["caveat"]
    assert m[("rp", "Region scoring")]["paper_value"] == 61.15  # the variant's own row
    assert "paper: labels=true, this run: labels=pseudo" in m[("rp", "Region scoring")]["caveat"]
    assert m[("rp2", "Region scoring")]["paper_value"] == 65.59  # no variant keys: the primary row
    md = comparison_markdown(compare(rows))
    assert "| zs-cupl | eurosat | ViT-B-32/openai | 53.00 ± 1.41 | 2 | FAIR Table 1 | CuPL [42] | 50.06 | +2.94 |" in md


def test_run_folders_of_variants_do_not_collide():
    """``coft`` and ``coft+`` (and the demo's "CoFT" / "CoFT+") once shared a run folder, so the
    second run silently reused the first one's results."""
    from labelless.demo import DEMO_RUNS
    from labelless.runner import RunConfig, default_out
    from labelless.utils.paths import slug

    outs = {m: default_out(RunConfig(method=m, model="testbed", data="testbed:split=train"))
            for m in ("coft", "coft+")}
    assert outs["coft"] != outs["coft+"]
    slugs = [slug(r.name) for r in DEMO_RUNS]
    assert len(set(slugs)) == len(slugs), slugs


def test_one_slug_two_flavours_name_folders_as_before():
    """Run folders and experiment folders already on disk were named by two helpers; the one
    that replaced them must give the same names (expected values worked out from the former
    rules: runs turn '+' into '-plus' and cut at 60, experiments keep '+' and cut at 80)."""
    from labelless.bench.harness import _slug as exp_slug
    from labelless.utils.paths import slug

    assert slug("coft+-testbed-train-s0") == "coft-plus-testbed-train-s0"
    assert slug("CoFT +") == "CoFT-plus"
    assert slug("eval-folder") == "eval-folder" and slug("a b/c:d") == "a-b-c-d"
    assert slug("x" * 70) == "x" * 60 and slug("///") == "run"
    assert exp_slug("coft+") == "coft+" and exp_slug("openclip:ViT-B-32:laion2b") == "openclip-ViT-B-32-laion2b"
    assert exp_slug(".hidden.") == "hidden" and exp_slug("y" * 90) == "y" * 80 and exp_slug("::") == "x"


def test_one_testbed_recipe_per_method_everywhere():
    """The demo, recipes/*/testbed*.yaml and the current testbed experiments use the same settings
    per method (labelless.demo holds them; YAML cannot import them). Files that record earlier
    recipes (adaptation.yaml, dev-suite.yaml, the retired heldout-suite.yaml) are history."""
    import yaml

    from labelless.demo import (
        COFT_PLUS_TESTBED,
        COFT_TESTBED,
        DEMO_RUNS,
        FAIR_TESTBED,
        FLYP_TESTBED_OPTIM,
        LATTE_TESTBED_OPTIM,
        REGION_TESTBED,
    )

    latte = {"captions": "testbed", "groups": "testbed", "optim": LATTE_TESTBED_OPTIM}
    expected = {"fair": FAIR_TESTBED, "fair-no-las": {**FAIR_TESTBED, "ablation": "no_las"},
                "latteclip": latte, "flyp-pl": {"optim": FLYP_TESTBED_OPTIM}, "coft": COFT_TESTBED,
                "coft-plus": COFT_PLUS_TESTBED, "region-probe": REGION_TESTBED}
    exp = load_experiment(EXPERIMENTS / "testbed" / "heldout-303-suite.yaml")
    assert {r["name"] for r in exp.runs} >= (set(expected) - {"fair-no-las"}) | {"zs-cupl"}
    for r in exp.runs:
        if r["name"] in expected:
            assert r.get("params", {}) == expected[r["name"]], r["name"]
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    files = {"fair": "fair/testbed.yaml", "latteclip": "latteclip/testbed.yaml",
             "flyp-pl": "latteclip/flyp-pl-testbed.yaml", "coft": "coft/testbed.yaml",
             "coft-plus": "coft/testbed-plus.yaml", "region-probe": "region-probe/testbed.yaml"}
    for run, rel in files.items():
        raw = yaml.safe_load((recipes / rel).read_text())
        assert raw["params"] == expected[run], rel
        assert raw["label_texts"] == raw["texts"] == "testbed:what=descriptions", rel
    demo = {(e.method, e.params.get("ablation")): e.params for e in DEMO_RUNS if e.method != "zeroshot"}
    assert demo[("fair", None)] == FAIR_TESTBED and demo[("fair", "no_las")] == expected["fair-no-las"]
    assert demo[("coft", None)] == COFT_TESTBED and demo[("coft+", None)] == COFT_PLUS_TESTBED
    assert demo[("latteclip", None)] == latte and demo[("region-probe", None)] == REGION_TESTBED
    assert demo[("flyp-pl", None)] == {"optim": FLYP_TESTBED_OPTIM}


def test_task_suites_are_disjoint_and_measure_the_right_split():
    from labelless.testbed import TaskConfig, task_hash
    from labelless.testbed.taskfile import load_task_file

    def tasks(name, split):
        exp = load_experiment(EXPERIMENTS / "testbed" / name)
        assert exp.baseline == "zs-cupl"
        out = {}
        for d in exp.data:
            path = d["data"].split("task=")[1].split(",")[0]
            assert d["eval_data"] == f"testbed:task={path},split={split}"  # never tune on test
            assert d["texts"] == d["label_texts"] == f"testbed:task={path},what=descriptions"
            out[d["name"]] = task_hash(load_task_file(Path(__file__).resolve().parents[1] / path))
        return out

    dev, held = tasks("dev-suite.yaml", "val"), tasks("heldout-303-suite.yaml", "test")
    retired = tasks("heldout-suite.yaml", "test")
    assert len(dev) >= 6 and len(held) >= 6
    assert task_hash(TaskConfig()) in dev.values()  # the shipped task is a dev task
    assert not set(dev.values()) & set(held.values())
    assert not set(retired.values()) & set(held.values())  # a new draw, not the retired tasks
    for name in ("dev-tuning-1.yaml", "dev-tuning-2.yaml", "dev-tuning-3.yaml"):  # tuned on dev val only
        assert tasks(name, "val") == dev
