"""VOC 2007 classification: 11-point AP against hand-checked values and a devkit-style reference,
the VOC-layout reader on real XML annotations, and the two training protocols."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from domainclust.errors import DomainclustError
from domainclust.evaluation.voc.images import evaluate_voc
from domainclust.evaluation.voc.layout import (
    VOC_CLASSES,
    mean_average_precision,
    parse_annotation,
    read_voc,
    voc07_average_precision,
)
from domainclust.evaluation.voc.protocols import (
    VocSettings,
    multilabel_loss,
    train_multilabel,
    trainable_parameters,
)
from domainclust.networks.model import DeepClusterNet, ModelSpec
from domainclust.rundir import RunDir


def reference_ap(scores: list[float], gt: list[int]) -> float:
    """VOCevalcls.m, line by line: difficult (0) entries count as neither TP nor FP."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    n_pos = sum(g > 0 for g in gt)
    tp = fp = 0
    recall, precision = [], []
    for i in order:
        tp += gt[i] > 0
        fp += gt[i] < 0
        recall.append(tp / n_pos)
        precision.append(tp / (tp + fp) if tp + fp else float("nan"))
    ap = 0.0
    for t in [k / 10 for k in range(11)]:
        p = [pr for r, pr in zip(recall, precision) if r >= t and not math.isnan(pr)]
        ap += (max(p) if p else 0.0) / 11
    return ap


def test_ap_hand_checked_cases() -> None:
    # TP, FP, TP, FP: precision 1 up to recall 0.5 (6 points), then 2/3 (5 points).
    assert voc07_average_precision([0.9, 0.8, 0.7, 0.6], [1, -1, 1, -1]) == pytest.approx(
        (6 * 1 + 5 * 2 / 3) / 11)
    assert voc07_average_precision([0.9, 0.8, 0.1], [1, 1, -1]) == pytest.approx(1.0)
    # One positive ranked last of four: precision 1/4 at every recall threshold.
    assert voc07_average_precision([0.9, 0.8, 0.7, 0.1], [-1, -1, -1, 1]) == pytest.approx(0.25)
    # A difficult image ranked first is ignored: same AP as without it.
    assert voc07_average_precision([0.99, 0.9, 0.8, 0.7, 0.6], [0, 1, -1, 1, -1]) == pytest.approx(
        (6 * 1 + 5 * 2 / 3) / 11)
    assert math.isnan(voc07_average_precision([0.5, 0.4], [-1, 0]))


def test_ap_matches_the_devkit_reference_on_random_rankings() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(5, 40))
        gt = rng.choice([-1, -1, 0, 1], size=n)
        gt[0] = 1
        scores = rng.random(n)
        assert voc07_average_precision(scores, gt) == pytest.approx(
            reference_ap(scores.tolist(), gt.tolist()), abs=1e-12)


def test_map_skips_classes_without_positives() -> None:
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4], [0.1, 0.3, 0.9]])
    targets = np.array([[1, -1, -1], [-1, 1, -1], [-1, 0, -1]])
    m, aps = mean_average_precision(scores, targets)
    assert aps[0] == pytest.approx(1.0) and aps[1] == pytest.approx(1.0) and math.isnan(aps[2])
    assert m == pytest.approx(1.0)
    with pytest.raises(DomainclustError, match="no class has a positive"):
        mean_average_precision(scores, -np.ones_like(targets))


ANNOTATION = """<annotation>
  <folder>VOC2007</folder><filename>{id}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
OBJECT = """<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>
  <difficult>{difficult}</difficult>
  <bndbox><xmin>2</xmin><ymin>3</ymin><xmax>30</xmax><ymax>28</ymax></bndbox></object>"""

IMAGES = {  # id: [(class, difficult)]
    "000005": [("chair", 0), ("chair", 1), ("dog", 1)],
    "000007": [("car", 0)],
    "000009": [("person", 0), ("person", 1), ("horse", 0)],
    "000012": [("car", 1), ("dog", 0)],
}


def write_voc(root: Path, *, with_class_lists: bool = True) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objects in IMAGES.items():
        body = "\n".join(OBJECT.format(name=n, difficult=d) for n, d in objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            ANNOTATION.format(id=image_id, w=48, h=40, objects=body))
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{image_id}.jpg")
    sets = {"trainval": ["000005", "000007", "000009", "000012"], "test": ["000005", "000009",
                                                                          "000012", "000007"]}
    for name, ids in sets.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    if with_class_lists:
        lines = {"000005": -1, "000007": 1, "000009": -1, "000012": 0}
        (root / "ImageSets" / "Main" / "car_trainval.txt").write_text(
            "".join(f"{i} {v:2d}\n" for i, v in lines.items()))
    return root


def test_reader_parses_real_xml_with_difficult_flags(tmp_path: Path) -> None:
    voc = read_voc(write_voc(tmp_path / "VOC2007"), "trainval")
    assert voc.ids == ["000005", "000007", "000009", "000012"] and voc.targets.shape == (4, 20)
    t = {(i, c): int(voc.targets[r, VOC_CLASSES.index(c)]) for r, i in enumerate(voc.ids)
         for c in VOC_CLASSES}
    assert t[("000005", "chair")] == 1  # one clear chair beats a difficult one
    assert t[("000005", "dog")] == 0  # only a difficult dog: ignored
    assert t[("000012", "car")] == 0 and t[("000012", "dog")] == 1
    assert t[("000009", "person")] == 1 and t[("000009", "horse")] == 1
    assert t[("000007", "person")] == -1 and t[("000007", "car")] == 1
    ann = parse_annotation(tmp_path / "VOC2007" / "Annotations" / "000009.xml")
    assert ann.size == (48, 40, 3) and ann.objects[1].difficult and ann.objects[0].bbox == (2, 3, 30, 28)
    assert voc.image_path(0).name == "000005.jpg"


def test_reader_errors_are_clean(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "VOC2007")
    (root / "ImageSets" / "Main" / "car_trainval.txt").write_text("000007 -1\n")
    with pytest.raises(DomainclustError, match="car_trainval.txt: image 000007 is -1 for 'car'"):
        read_voc(root, "trainval")
    with pytest.raises(DomainclustError, match="val.txt is missing"):
        read_voc(root, "val")
    (root / "Annotations" / "000007.xml").write_text("<annotation><object>")
    with pytest.raises(DomainclustError, match="000007.xml is not valid XML"):
        parse_annotation(root / "Annotations" / "000007.xml")


def test_difficult_targets_do_not_contribute_to_the_loss() -> None:
    logits = torch.tensor([[5.0, -3.0], [0.2, 9.0]])
    targets = torch.tensor([[1, 0], [-1, 0]], dtype=torch.int8)
    other = logits.clone()
    other[:, 1] = -100.0  # change only the difficult column
    assert multilabel_loss(logits, targets) == pytest.approx(float(multilabel_loss(other, targets)))


def synthetic_checkpoint(run: Path, *, channels: tuple[str, ...] = ("red", "green", "blue")
                         ) -> Path:
    """A checkpoint in the format `pretrain` writes (random weights), 32 px."""
    spec = ModelSpec(arch="alexnet", stem="stride1", frontend="none", channels=channels, raw_channels=(),
                     tile_size=32)
    torch.manual_seed(0)
    net = DeepClusterNet(spec, n_clusters=5)
    RunDir(run).save_checkpoint({"format": 1, "epoch": 0, "spec": dataclasses.asdict(spec),
                                 "n_clusters": 5, "model": net.state_dict(), "optimizer": {},
                                 "history": [], "store": {"path": str(run / "gone.zarr")}})
    return run / "checkpoints" / "last.pt"


def test_protocols_train_the_layers_they_name(tmp_path: Path) -> None:
    spec = ModelSpec(arch="alexnet", stem="stride1", frontend="none", channels=("r", "g", "b"), raw_channels=(),
                     tile_size=32)
    x = torch.randn(8, 3, 32, 32)
    targets = torch.tensor(np.random.default_rng(0).choice([-1, 0, 1], size=(8, 20)),
                           dtype=torch.int8)
    settings = VocSettings(steps=2, batch_size=4)
    for protocol, conv_changes in (("fc6-8", False), ("all", True)):
        torch.manual_seed(0)
        net = DeepClusterNet(spec, n_clusters=20)
        conv = {k: v.clone() for k, v in net.backbone.convs.state_dict().items()}
        fc6 = net.backbone.classifier[1].weight.clone()
        train_multilabel(net, x, targets, protocol=protocol, settings=settings, seed=0)
        after = net.backbone.convs.state_dict()
        changed = any(not torch.equal(conv[k], after[k]) for k in conv)  # weights or BN stats
        assert changed == conv_changes, protocol
        assert not torch.equal(fc6, net.backbone.classifier[1].weight)
        assert all(p.requires_grad for p in net.parameters())  # nothing left frozen
    resnet = DeepClusterNet(dataclasses.replace(spec, arch="resnet18"), n_clusters=20)
    with pytest.raises(DomainclustError, match="fc6-8 needs fc6/fc7"):
        trainable_parameters(resnet, "fc6-8")


def test_evaluate_voc_end_to_end(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "VOC2007")
    checkpoint = synthetic_checkpoint(tmp_path / "run")
    result = evaluate_voc(checkpoint, root, protocol="fc6-8", settings=VocSettings(steps=2),
                          device="cpu")
    assert result.n_train == 4 and result.n_test == 4
    present = {c: ap for c, ap in result.per_class_ap.items() if not math.isnan(ap)}
    assert set(present) == {"chair", "car", "person", "horse", "dog"}
    # The mean is over the classes present in the test images only.
    assert result.mean_ap == pytest.approx(sum(present.values()) / len(present))
    assert "VOC07 classification, protocol fc6-8" in result.table()


def test_evaluate_voc_refuses_a_network_that_is_not_rgb(tmp_path: Path) -> None:
    checkpoint = synthetic_checkpoint(tmp_path / "run", channels=("gray",))
    with pytest.raises(DomainclustError, match="only a 3-channel"):
        evaluate_voc(checkpoint, write_voc(tmp_path / "VOC2007"), device="cpu")



def test_cli_eval_voc(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from domainclust.cli import app

    root = write_voc(tmp_path / "VOC2007")
    result = CliRunner().invoke(app, [
        "eval", "voc", "--checkpoint", str(synthetic_checkpoint(tmp_path / "run")), "--voc-root",
        str(root), "--protocol", "all", "--steps", "1", "--device", "cpu", "--out",
        str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "VOC07 classification, protocol all" in result.output
    assert "normalisation is unknown" in result.output  # the synthetic run's store is gone
    assert json.loads((tmp_path / "out" / "voc.json").read_text())["protocol"] == "all"
