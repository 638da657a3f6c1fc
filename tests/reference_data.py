"""Tiny reference datasets in their real layouts, made of crops of real photographs (small JPEGs).

- ImageNet: `train/<wnid>/*.JPEG`, flat `val/ILSVRC2012_val_NNNNNNNN.JPEG` and the devkit's
  `ILSVRC2012_devkit_t12/data/{meta.mat, ILSVRC2012_validation_ground_truth.txt}`, with devkit
  ids deliberately not in WNID order (as in the real devkit) and one non-leaf synset;
- Places365-Standard: `categories_places365.txt`, `places365_train_standard.txt`,
  `places365_val.txt`, `data_256/<letter>/<class>/*.jpg`, `val_256/Places365_val_*.jpg`;
- PASCAL VOC 2007: `VOCdevkit/VOC2007/{Annotations, ImageSets/Main, JPEGImages}`;
- PASCAL VOC 2012 segmentation: `VOCdevkit/VOC2012/{JPEGImages, SegmentationClass,
  ImageSets/Segmentation}`, masks as palette PNGs with the VOC palette and a void (255) border;
- a Flickr-like folder of unlabelled images in sub-folders.

Each class is cut from its own photograph, so a network can tell classes apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skimage_data

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
WNIDS = ("n01440764", "n01443537", "n02102040")
PLACES = ("/a/abbey", "/b/beach", "/c/canyon")
SIZE = (44, 36)  # width, height: not square, so centre cropping is exercised


def _photo(index: int) -> np.ndarray:
    return getattr(skimage_data, PHOTOS[index % len(PHOTOS)])()


def crop(class_index: int, k: int, *, rng: np.random.Generator) -> Image.Image:
    """A small crop of the class's photograph at a random place and scale."""
    image = _photo(class_index)
    h, w = image.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) // 2))
    top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    patch = Image.fromarray(image[top:top + side, left:left + side])
    return patch.resize(SIZE, Image.Resampling.BILINEAR)


def write_imagenet(root: Path, *, train_per_class: int = 4, val_per_class: int = 2,
                   n_classes: int = 2) -> Path:
    rng = np.random.default_rng(0)
    wnids = WNIDS[:n_classes]
    for c, wnid in enumerate(wnids):
        (root / "train" / wnid).mkdir(parents=True)
        for k in range(train_per_class):
            crop(c, k, rng=rng).save(root / "train" / wnid / f"{wnid}_{k + 1}.JPEG", quality=90)
    (root / "val").mkdir(parents=True)
    # Devkit ids in reverse WNID order: a reader that assumed id order = WNID order would swap.
    devkit_id = {wnid: n_classes - i for i, wnid in enumerate(wnids)}
    truth = []
    number = 0
    for k in range(val_per_class):
        for c, wnid in enumerate(wnids):
            number += 1
            crop(c, 100 + k, rng=rng).save(root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG",
                                          quality=90)
            truth.append(devkit_id[wnid])
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{t}\n" for t in truth))
    write_devkit_meta(data / "meta.mat", {i: w for w, i in devkit_id.items()})
    return root


def write_devkit_meta(path: Path, wnid_of: dict[int, str]) -> None:
    """meta.mat as the devkit ships it: a `synsets` struct array, leaves and one inner node."""
    from scipy.io import savemat

    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
              ("num_children", "O"), ("children", "O"), ("wordnet_height", "O"),
              ("num_train_images", "O")]
    rows = [(i, w, f"class {w}", "", 0, np.zeros((0,), np.float64), 0, 4)
            for i, w in sorted(wnid_of.items())]
    rows.append((len(rows) + 1, "n00001740", "entity", "", len(rows),
                 np.arange(1, len(rows) + 1, dtype=np.float64), 1, 0))
    synsets = np.empty((len(rows), 1), dtype=fields)
    for r, values in enumerate(rows):
        for (name, _), value in zip(fields, values, strict=True):
            synsets[r, 0][name] = value
    savemat(path, {"synsets": synsets})


def write_places365(root: Path, *, train_per_class: int = 4, val_per_class: int = 2,
                    n_classes: int = 2) -> Path:
    rng = np.random.default_rng(1)
    classes = PLACES[:n_classes]
    root.mkdir(parents=True)
    (root / "categories_places365.txt").write_text(
        "".join(f"{c} {i}\n" for i, c in enumerate(classes)))
    train_lines, val_lines = [], []
    for c, name in enumerate(classes):
        folder = root / "data_256" / name.lstrip("/")
        folder.mkdir(parents=True)
        for k in range(train_per_class):
            crop(c + 1, k, rng=rng).save(folder / f"{k + 1:08d}.jpg", quality=90)
            train_lines.append(f"{name}/{k + 1:08d}.jpg {c}")
    (root / "val_256").mkdir()
    number = 0
    for k in range(val_per_class):
        for c in range(n_classes):
            number += 1
            file = f"Places365_val_{number:08d}.jpg"
            crop(c + 1, 100 + k, rng=rng).save(root / "val_256" / file, quality=90)
            val_lines.append(f"{file} {c}")
    (root / "places365_train_standard.txt").write_text("\n".join(train_lines) + "\n")
    (root / "places365_val.txt").write_text("\n".join(val_lines) + "\n")
    return root


ANNOTATION = """<annotation>
  <folder>VOC2007</folder>
  <filename>{id}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}
</annotation>
"""
OBJECT = """  <object>
    <name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>
    <difficult>{difficult}</difficult>
    <bndbox><xmin>2</xmin><ymin>3</ymin><xmax>30</xmax><ymax>28</ymax></bndbox>
  </object>"""
VOC_CLASSES_USED = ("cat", "person")


def write_voc2007(root: Path, *, trainval: int = 6, test: int = 4) -> Path:
    """VOCdevkit/VOC2007 with cat / person images (one difficult object), trainval and test."""
    rng = np.random.default_rng(2)
    year = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (year / sub).mkdir(parents=True)
    sets: dict[str, list[str]] = {"trainval": [], "test": []}
    for n in range(trainval + test):
        image_id = f"{n + 1:06d}"
        c = n % 2
        objects = [(VOC_CLASSES_USED[c], 0)] + ([(VOC_CLASSES_USED[1 - c], 1)] if n == 1 else [])
        body = "\n".join(OBJECT.format(name=o, difficult=d) for o, d in objects)
        (year / "Annotations" / f"{image_id}.xml").write_text(
            ANNOTATION.format(id=image_id, w=SIZE[0], h=SIZE[1], objects=body))
        crop(c + 2, n, rng=rng).save(year / "JPEGImages" / f"{image_id}.jpg", quality=90)
        sets["trainval" if n < trainval else "test"].append(image_id)
    for name, ids in sets.items():
        (year / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return root / "VOCdevkit"


def voc_palette() -> list[int]:
    """The PASCAL VOC palette, flattened for `Image.putpalette` (class bits spread on R, G, B)."""
    flat = []
    for i in range(256):
        c, rgb = i, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << shift
            c >>= 3
        flat += rgb
    return flat


def write_voc2012(root: Path, *, train: int = 3, val: int = 2) -> tuple[Path, dict[str, np.ndarray]]:
    """VOCdevkit/VOC2012 with a cat (8) or a person (15) box on background in each image, a void
    (255) border one pixel wide around it, as the real masks have; returns the devkit folder and
    each id's mask as written (uint8, 255 void)."""
    rng = np.random.default_rng(4)
    year = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (year / sub).mkdir(parents=True)
    masks: dict[str, np.ndarray] = {}
    sets: dict[str, list[str]] = {"train": [], "val": []}
    for n in range(train + val):
        image_id = f"2007_{n + 1:06d}"
        mask = np.zeros(SIZE[::-1], np.uint8)
        top, left = 4 + n, 6 + 2 * n
        mask[top - 1:top + 21, left - 1:left + 19] = 255
        mask[top:top + 20, left:left + 18] = 8 if n % 2 else 15
        image = Image.fromarray(mask, mode="L").convert("P")
        image.putpalette(voc_palette())
        image.save(year / "SegmentationClass" / f"{image_id}.png")
        crop(n % 2 + 2, n, rng=rng).save(year / "JPEGImages" / f"{image_id}.jpg", quality=90)
        masks[image_id] = mask
        sets["train" if n < train else "val"].append(image_id)
    for name, ids in sets.items():
        (year / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return root / "VOCdevkit", masks


def write_flickr(root: Path, *, n: int = 12) -> Path:
    rng = np.random.default_rng(3)
    for k in range(n):
        folder = root / f"{k % 3:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        crop(k, k, rng=rng).save(folder / f"{k:010d}.jpg", quality=90)
    return root
