"""Label-free diagnostics: the pure functions on hand-made predictions, the pseudo-label flip
tracker, and the property that matters: a run's ``label_free`` record is the same whether its
images have labels or not (every label replaced by -1)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from labelless.cli import main
from labelless.engine.pseudo import FlipTracker
from labelless.eval.label_free import (
    agreement,
    class_balance,
    confidence_summary,
    label_free_diagnostics,
    pseudo_label_flips,
)

TINY = "openclip:labelless-tiny:random"


def test_class_balance_of_even_and_collapsed_predictions():
    even = class_balance(torch.tensor([0, 1, 2, 3] * 5), 4)
    assert even["counts"] == [5, 5, 5, 5]
    assert even["entropy"] == pytest.approx(1.0)
    assert even["max_share"] == even["min_share"] == pytest.approx(25.0)
    collapsed = class_balance(torch.tensor([2] * 9 + [0]), 4)
    assert collapsed["counts"] == [1, 0, 9, 0]
    assert collapsed["classes_used"] == 2
    # -(0.9 ln 0.9 + 0.1 ln 0.1) / ln 4
    assert collapsed["entropy"] == pytest.approx(0.3251 / math.log(4), abs=1e-3)
    assert collapsed["max_share"] == pytest.approx(90.0)
    assert collapsed["min_share"] == 0.0


def test_confidence_summary_histogram_and_quantiles():
    conf = torch.tensor([0.05, 0.15, 0.15, 0.55, 0.95, 1.0])
    s = confidence_summary(conf)
    assert s["mean"] == pytest.approx(2.85 / 6)
    assert s["histogram"]["counts"] == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]  # 1.0 lands in the last bin
    assert len(s["histogram"]["edges"]) == 11
    assert s["quantiles"]["50"] == pytest.approx(0.35)


def test_agreement_flow_counts_the_changes():
    names = ["a", "b", "c"]
    ref = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    new = torch.tensor([0, 1, 1, 1, 2, 2, 0, 1])
    a = agreement(new, ref, names)
    assert a["n_changed"] == 5
    assert a["changed"] == pytest.approx(62.5)
    assert a["agree"] == pytest.approx(37.5)
    assert a["flow"][0] == {"from": "a", "to": "b", "n": 2}
    assert sorted((f["from"], f["to"], f["n"]) for f in a["flow"][1:]) == [("b", "c", 1), ("c", "a", 1), ("c", "b", 1)]
    assert a["flow_pairs"] == 4


def test_flip_tracker_counts_changes_between_epochs():
    t = FlipTracker(6)
    t.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    t.update(torch.tensor([3, 4, 5]), torch.tensor([2, 2, 0]))
    assert t.epoch_end() == {}  # nothing to compare with yet
    t.update(torch.tensor([5, 4, 3]), torch.tensor([0, 1, 2]))  # sample 4 flips
    t.update(torch.tensor([2, 1, 0]), torch.tensor([2, 1, 0]))  # sample 2 flips
    row = t.epoch_end()
    assert row == {"pl_flips": 2, "pl_flip_rate": pytest.approx(100 * 2 / 6)}
    state = t.state_dict()
    resumed = FlipTracker(6)
    resumed.load_state_dict(state)
    resumed.update(torch.arange(6), torch.tensor([0, 1, 2, 2, 1, 0]))
    assert resumed.epoch_end()["pl_flips"] == 0
    assert pseudo_label_flips([{"epoch": 1}, {"epoch": 2, "pl_flips": 3, "pl_flip_rate": 50.0}]) == [
        {"epoch": 2, "flips": 3, "rate": 50.0}]
    assert pseudo_label_flips([{"epoch": 1, "loss": 0.3}]) is None


def test_diagnostics_shapes_are_checked():
    with pytest.raises(ValueError, match="probs must be"):
        label_free_diagnostics(torch.rand(4, 3), None, ["a", "b"])


# -- the run: labels never reach label_free ------------------------------------------------------

def _csv(path: Path, folder: Path, labelled: bool) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for img in sorted(folder.rglob("*.png")):
            w.writerow([str(img), img.parent.name if labelled else ""])
    return path


FAST = {
    "zeroshot": [],
    "fair": ["--set", "optim.epochs=2", "--set", "optim.batch_size=6", "--set", "n_crops=2", "--set", "k=1"],
}


@pytest.mark.parametrize("method", ["zeroshot", "fair"])
def test_label_free_is_unchanged_when_every_label_is_unknown(capsys, tmp_path, colour_folder, method):
    records = {}
    for labelled in (True, False):
        data = _csv(tmp_path / f"data-{labelled}.csv", colour_folder, labelled)
        out = tmp_path / f"run-{labelled}"
        args = ["adapt", "--method", method] if method != "zeroshot" else ["zeroshot"]
        rc = main([*args, "--model", TINY, "--data", f"csv:path={data}", "--classes", "red,green,blue",
                   "--out", str(out), "--no-progress", "--no-cache", *FAST[method]])
        _, err = capsys.readouterr()
        assert rc == 0, err
        records[labelled] = json.loads((out / "results.json").read_text())
        rows = list(csv.DictReader(open(out / "predictions.csv")))
        assert len(rows) == 18 and all(r["predicted"] in ("red", "green", "blue") for r in rows)
        assert all((r["label"] != "") == labelled for r in rows)
    with_labels, without = records[True], records[False]
    assert with_labels["metrics"]["top1"] is not None and without["metrics"] is None
    lf = with_labels["label_free"]
    assert lf["estimated_top1"] is not None and 0 <= lf["estimated_top1"] <= 100
    assert set(lf["estimates"]) >= {lf["estimator"]}
    assert lf == without["label_free"]
    if method == "fair":  # FAIR relabels every epoch: its flips are part of the record
        assert lf["pseudo_label_flips"] and lf["pseudo_label_flips"][0]["epoch"] == 2


# -- estimators on cases worked out by hand -----------------------------------------------------

def test_average_confidence_and_zeroshot_posterior():
    from labelless.eval.estimators import average_confidence, zeroshot_posterior

    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    ref = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    assert average_confidence(probs) == pytest.approx(100 * (0.7 + 0.8 + 0.6) / 3)
    # the run predicts 0, 1, 0: the reference gives those 0.9, 0.5, 0.3
    assert zeroshot_posterior(probs, ref) == pytest.approx(100 * (0.9 + 0.5 + 0.3) / 3)
    assert zeroshot_posterior(probs, None) is None


def test_prior_matching_solved_by_hand():
    from labelless.eval.estimators import prior_matched, zeroshot_balanced

    # q = p * (1, v) per row, renormalised, columns summing to 1 each (uniform prior, N = 2):
    # 0.9/(0.9+0.1v) + 0.6/(0.6+0.4v) = 1  <=>  0.04 v^2 = 0.54  <=>  v = sqrt(13.5)
    ref = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    v = math.sqrt(13.5)
    q = prior_matched(ref)
    assert q[0, 0].item() == pytest.approx(0.9 / (0.9 + 0.1 * v), abs=1e-6)
    assert q[1, 0].item() == pytest.approx(0.6 / (0.6 + 0.4 * v), abs=1e-6)
    assert q.sum(dim=0).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    both_zero = torch.tensor([[0.8, 0.2], [0.7, 0.3]])  # a run predicting class 0 twice
    assert zeroshot_balanced(both_zero, ref) == pytest.approx(50.0, abs=1e-4)
    split = torch.tensor([[0.8, 0.2], [0.3, 0.7]])  # 0 then 1: both get 0.9/(0.9+0.1v)
    assert zeroshot_balanced(split, ref) == pytest.approx(100 * 0.9 / (0.9 + 0.1 * v), abs=1e-4)
    # a reference whose mass is already spread evenly is left as it is
    even = torch.tensor([[0.7, 0.3], [0.3, 0.7]])
    assert prior_matched(even).flatten().tolist() == pytest.approx(even.flatten().tolist(), abs=1e-6)


def test_atc_balanced_and_cot():
    from labelless.eval.estimators import atc_balanced, confidence_optimal_transport

    # COT: balanced one-hot predictions are all right; all on one of 2 classes, half are
    assert confidence_optimal_transport(torch.eye(2).repeat(3, 1)) == pytest.approx(100.0, abs=0.5)
    assert confidence_optimal_transport(torch.tensor([[1.0, 0.0]] * 4)) == pytest.approx(50.0, abs=0.5)
    # ATC: agreement set = images 0-3 with source accuracy 0.75 (an even reference: q = ref)
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.35, 0.65], [0.95, 0.05]])
    ref = torch.tensor([[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75], [0.75, 0.25], [0.25, 0.75]])
    # S confidences 0.9, 0.8, 0.7, 0.6; the 25% quantile is 0.675; images >= 0.675: 0, 1, 2, 5
    assert atc_balanced(probs, ref) == pytest.approx(100 * 4 / 6)


def test_zeroshot_reference_leaves_the_random_numbers_alone(colour_folder):
    """The runner computes the reference just before the method trains: drawing from torch's
    generator there (a DataLoader does) would change every run's training."""
    from labelless.backbones import load_backbone
    from labelless.evidence import zeroshot_reference
    from labelless.methods.base import Runtime
    from labelless.runner import load_data
    from labelless.text import build_texts

    rt = Runtime(device="cpu", progress=False, cache_dir=None)
    ds = load_data(f"imagefolder:root={colour_folder}", None, rt)
    backbone = load_backbone(TINY)
    torch.manual_seed(0)
    state = torch.get_rng_state().clone()
    logits = zeroshot_reference(backbone, ds, ds.classnames, build_texts("templates:name=clip", ds.classnames), rt)
    assert logits.shape == (18, 3)
    assert torch.equal(torch.get_rng_state(), state)


def test_ensemble_balanced_reduces_to_zs_balanced_for_a_re_tempered_reference():
    """A zero-shot run at another logit scale (same argmax, sharper softmax) is the reference
    again once brought back to the reference's confidence: both estimates agree."""
    from labelless.eval.estimators import ensemble_balanced, temper_like, zeroshot_balanced

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 5, generator=g) * 2
    ref = logits.softmax(dim=1)
    sharp = (logits * 6).softmax(dim=1)  # a zero-shot head at 6x the scale
    back = temper_like(sharp, ref)
    assert back.max(dim=1).values.mean().item() == pytest.approx(ref.max(dim=1).values.mean().item(), abs=1e-6)
    assert (back - ref).abs().max().item() < 1e-4
    assert ensemble_balanced(sharp, ref) == pytest.approx(zeroshot_balanced(sharp, ref), abs=1e-2)


def test_backfill_recomputes_the_record_of_a_run_made_without_it(capsys, tmp_path, colour_folder):
    """`labelless evidence` rebuilds label_free from the saved classifier: the same record as the
    run wrote, and a run whose data changed since is refused."""
    data = _csv(tmp_path / "data.csv", colour_folder, True)
    out = tmp_path / "run"
    assert main(["adapt", "--method", "fair", "--model", TINY, "--data", f"csv:path={data}",
                 "--classes", "red,green,blue", "--out", str(out), "--no-progress", "--no-cache",
                 *FAST["fair"]]) == 0
    path = out / "results.json"
    rec = json.loads(path.read_text())
    original = rec.pop("label_free")
    path.write_text(json.dumps(rec))
    (out / "predictions.csv").unlink()
    capsys.readouterr()
    assert main(["evidence", str(tmp_path), "--no-progress", "--no-cache"]) == 0
    assert "1 of 1 run folders backfilled" in capsys.readouterr().out
    again = json.loads(path.read_text())["label_free"]
    assert again.pop("backfilled") is True
    assert again == original and (out / "predictions.csv").is_file()
    assert main(["evidence", str(tmp_path), "--no-progress"]) == 0  # has a record: left alone
    assert "0 of 1" in capsys.readouterr().out
    # the data changed since the run (images removed): refused, nothing is written
    rows = data.read_text().splitlines()
    data.write_text("\n".join(rows[:-3]) + "\n")
    assert main(["evidence", str(tmp_path), "--force", "--no-progress", "--no-cache"]) == 2
    assert "data or artifact changed" in capsys.readouterr().err
