"""PASCAL VOC 2007 classification: the VOC-layout reader and the 11-point average precision.

Layout read (the devkit's)::

    ROOT/Annotations/<id>.xml          objects with <name> and <difficult>
    ROOT/ImageSets/Main/<set>.txt      image ids of a set (train, val, trainval, test)
    ROOT/ImageSets/Main/<cls>_<set>.txt  optional per-class truth: "<id> 1|-1|0"
    ROOT/JPEGImages/<id>.jpg

Image-level targets follow the devkit: 1 if the image has a non-difficult object of the class,
0 ("difficult", ignored in training and scoring) if it has only difficult ones, -1 otherwise.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from domainclust.errors import DomainclustError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


@dataclass(frozen=True)
class VocObject:
    name: str
    difficult: bool
    bbox: tuple[int, int, int, int] | None  # xmin, ymin, xmax, ymax


@dataclass
class VocAnnotation:
    image_id: str
    filename: str
    size: tuple[int, int, int] | None  # width, height, depth
    objects: list[VocObject] = field(default_factory=list)


@dataclass
class VocSet:
    root: Path
    image_set: str
    ids: list[str]
    targets: np.ndarray  # (N, n_classes) int8: 1 present, 0 difficult only, -1 absent
    classes: tuple[str, ...]
    annotations: list[VocAnnotation]

    def image_path(self, i: int) -> Path:
        return self.root / "JPEGImages" / self.annotations[i].filename


def _text(node: ET.Element, tag: str, default: str | None = None) -> str | None:
    child = node.find(tag)
    return child.text.strip() if child is not None and child.text else default


def parse_annotation(path: Path | str) -> VocAnnotation:
    """One Annotations/<id>.xml file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DomainclustError(f"VOC annotation {path} is missing") from None
    except ET.ParseError as exc:
        raise DomainclustError(f"VOC annotation {path} is not valid XML: {exc}") from None
    size = root.find("size")
    dims = None
    if size is not None:
        try:
            dims = tuple(int(_text(size, t, "0")) for t in ("width", "height", "depth"))
        except ValueError:
            raise DomainclustError(f"{path}: <size> holds non-integer values") from None
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name")
        if not name:
            raise DomainclustError(f"{path}: an <object> without a <name>")
        box = obj.find("bndbox")
        bbox = None
        if box is not None:
            try:
                bbox = tuple(int(float(_text(box, t, "0"))) for t in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                raise DomainclustError(f"{path}: <bndbox> of '{name}' is not numeric") from None
        objects.append(VocObject(name=name, difficult=_text(obj, "difficult", "0") == "1",
                                 bbox=bbox))
    filename = _text(root, "filename") or f"{path.stem}.jpg"
    return VocAnnotation(image_id=path.stem, filename=filename, size=dims, objects=objects)


def image_targets(annotation: VocAnnotation, classes: tuple[str, ...] = VOC_CLASSES) -> np.ndarray:
    """(n_classes,) int8 image-level targets (1 / 0 difficult only / -1) of one annotation."""
    out = np.full(len(classes), -1, dtype=np.int8)
    for obj in annotation.objects:
        if obj.name not in classes:
            continue
        c = classes.index(obj.name)
        out[c] = 1 if not obj.difficult else max(out[c], 0)
    return out


def read_image_set(root: Path | str, image_set: str) -> list[str]:
    path = Path(root) / "ImageSets" / "Main" / f"{image_set}.txt"
    try:
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise DomainclustError(f"{path} is missing; is {root} a VOC-layout folder "
                               "(Annotations/, ImageSets/Main/, JPEGImages/)?") from None
    if not ids:
        raise DomainclustError(f"{path} lists no images")
    return ids


def _check_class_lists(root: Path, image_set: str, ids: list[str], targets: np.ndarray,
                       classes: tuple[str, ...]) -> None:
    """The per-class files, where present, must agree with the annotations."""
    row = {image_id: i for i, image_id in enumerate(ids)}
    for c, name in enumerate(classes):
        path = root / "ImageSets" / "Main" / f"{name}_{image_set}.txt"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 2 or parts[0] not in row:
                continue
            if int(parts[1]) != targets[row[parts[0]], c]:
                raise DomainclustError(
                    f"{path}: image {parts[0]} is {parts[1]} for '{name}' but its annotation "
                    f"says {targets[row[parts[0]], c]}; the VOC folder is inconsistent")


def read_voc(root: Path | str, image_set: str = "trainval", *,
             classes: tuple[str, ...] = VOC_CLASSES) -> VocSet:
    """The image ids and image-level targets of one VOC image set."""
    root = Path(root)
    ids = read_image_set(root, image_set)
    annotations = [parse_annotation(root / "Annotations" / f"{i}.xml") for i in ids]
    targets = np.stack([image_targets(a, classes) for a in annotations])
    _check_class_lists(root, image_set, ids, targets, classes)
    return VocSet(root=root, image_set=image_set, ids=ids, targets=targets, classes=classes,
                  annotations=annotations)


def voc07_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """11-point interpolated AP of one class (VOC 2007 devkit); targets 0 are ignored.

    NaN when the class has no positive example.
    """
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    keep = targets != 0
    scores, targets = scores[keep], targets[keep]
    n_pos = int((targets > 0).sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(targets[order] > 0)
    fp = np.cumsum(targets[order] < 0)
    recall = tp / n_pos
    precision = tp / np.maximum(tp + fp, 1)
    ap = 0.0
    for t in np.linspace(0.0, 1.0, 11):
        above = precision[recall >= t - 1e-12]
        ap += (above.max() if above.size else 0.0) / 11
    return float(ap)


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """(mAP over classes with positives, per-class AP) for (N, C) scores and targets."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise DomainclustError(f"scores {scores.shape} and targets {targets.shape} must both "
                               "be (images, classes)")
    aps = np.array([voc07_average_precision(scores[:, c], targets[:, c])
                    for c in range(scores.shape[1])])
    if np.isnan(aps).all():
        raise DomainclustError("no class has a positive example; mAP is undefined")
    return float(np.nanmean(aps)), aps
