"""Readers for the reference dataset layouts: which image files form a split, and their labels.

Nothing here decodes an image; a reader returns the files and integer labels of one split, which
the `rgb` adapter then ingests (through a `path,label` CSV). Layouts, as the datasets ship:

- ImageNet (ILSVRC2012): `train/<wnid>/*.JPEG`; `val/` either flat (`ILSVRC2012_val_00000001.JPEG`
  ...) with the devkit's `data/ILSVRC2012_validation_ground_truth.txt` (one ILSVRC2012_ID per
  image, in image-number order) and `data/meta.mat` (ILSVRC2012_ID → WNID), or already sorted
  into `val/<wnid>/` folders. Labels are the index of the WNID in sorted order (as torchvision),
  the same for both splits.
- Places365-Standard: `categories_places365.txt` (`/a/abbey 0`), `places365_train_standard.txt`
  (`/a/abbey/00000001.jpg 0`) and `places365_val.txt` (`Places365_val_00000001.jpg 165`), in the
  root or in `filelist_places365-standard/`; images under `data_256/` (or `data_large/`,
  `data_256_standard/`, `data_large_standard/`) and `val_256/` (or `val_large/`).
- PASCAL VOC 2007: the folder holding `Annotations/`, `ImageSets/Main/`, `JPEGImages/` (given
  directly, or a `VOCdevkit/` holding `VOC2007/`); read by `domainclust.evaluation.voc.layout`.
- PASCAL VOC 2012 segmentation: the folder holding `JPEGImages/`, `SegmentationClass/` and
  `ImageSets/Segmentation/{train,val,trainval}.txt` (or a `VOCdevkit/` holding `VOC2012/`); each
  listed id has `JPEGImages/<id>.jpg` and a palette PNG `SegmentationClass/<id>.png` whose pixel
  indices are the classes (0 background, 1-20 the VOC classes) and 255 the void border.
- An image folder (the Flickr pools): every image below it, unlabelled.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domainclust.errors import DomainclustError
from domainclust.evaluation.voc.layout import VOC_CLASSES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
DEVKIT_NAMES = ("ILSVRC2012_devkit_t12", "devkit", "ILSVRC2012_devkit")
PLACES_TRAIN_DIRS = ("data_256", "data_large", "data_256_standard", "data_large_standard")
PLACES_VAL_DIRS = ("val_256", "val_large")
PLACES_LISTS = ("", "filelist_places365-standard")


@dataclass(frozen=True)
class LabelledImages:
    """The image files of one split, their labels (-1: none) and the class names by label."""

    dataset: str
    split: str
    root: Path  # the folder to ingest (every path lies below it)
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def labels_csv(self) -> str:
        """`path,label` rows for the rgb adapter (absolute paths: the CSV may live elsewhere)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "label"])
        for path, label in zip(self.paths, self.labels, strict=True):
            writer.writerow([str(path.resolve()), label])
        return buf.getvalue()


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith(".") and p.is_file())


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DomainclustError(f"{path} not found: {what}")
    return path


def _class_folders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def imagenet(root: Path | str, split: str) -> LabelledImages:
    """The `train` or `val` split of an ILSVRC2012 folder (see the module docstring)."""
    root = Path(root)
    train = _require_dir(root / "train", f"{root} is not an ImageNet folder (train/<wnid>/...)")
    wnids = _class_folders(train)
    if not wnids:
        raise DomainclustError(f"{train} holds no class folders (<wnid>/)")
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        paths, labels = [], []
        for wnid in wnids:
            files = _images(train / wnid)
            paths += files
            labels += [index[wnid]] * len(files)
        return _checked("imagenet", split, train, paths, labels, wnids)
    if split != "val":
        raise DomainclustError(f"ImageNet has splits train and val, not '{split}'")
    val = _require_dir(root / "val", f"{root} has no val/ folder")
    folders = _class_folders(val)
    if folders:
        stray = [f for f in folders if f not in index]
        if stray:
            raise DomainclustError(f"{val / stray[0]} is not one of the {len(wnids)} classes of "
                                   f"{train}")
        paths, labels = [], []
        for wnid in folders:
            files = _images(val / wnid)
            paths += files
            labels += [index[wnid]] * len(files)
        return _checked("imagenet", split, val, paths, labels, wnids)
    files = _images(val)
    truth = _devkit_val_wnids(root)
    paths, labels = [], []
    for path in files:
        match = re.search(r"_(\d+)$", path.stem)
        if match is None:
            raise DomainclustError(f"{path}: expected an ILSVRC2012_val_NNNNNNNN image name")
        number = int(match.group(1))
        if not 1 <= number <= len(truth):
            raise DomainclustError(f"{path}: image number {number} is beyond the {len(truth)} "
                                   "lines of the devkit's validation ground truth")
        wnid = truth[number - 1]
        if wnid not in index:
            raise DomainclustError(f"{path}: its devkit class {wnid} is not a folder of {train}")
        paths.append(path)
        labels.append(index[wnid])
    return _checked("imagenet", split, val, paths, labels, wnids)


def _devkit(root: Path) -> Path:
    for name in DEVKIT_NAMES:
        data = root / name / "data"
        if data.is_dir():
            return data
    raise DomainclustError(
        f"{root / 'val'} holds images directly, so their labels come from the ILSVRC2012 devkit, "
        f"but none of {', '.join(str(root / n / 'data') for n in DEVKIT_NAMES)} exists; unpack "
        "ILSVRC2012_devkit_t12.tar.gz into it or sort val/ into <wnid>/ folders")


def _devkit_val_wnids(root: Path) -> list[str]:
    """The WNID of every validation image, by image number - 1."""
    data = _devkit(root)
    truth_file = data / "ILSVRC2012_validation_ground_truth.txt"
    meta_file = data / "meta.mat"
    try:
        ids = [int(line) for line in truth_file.read_text().split()]
    except FileNotFoundError:
        raise DomainclustError(f"{truth_file} is missing from the devkit") from None
    except ValueError:
        raise DomainclustError(f"{truth_file} must hold one integer class id per line") from None
    wnid_of = read_devkit_meta(meta_file)
    unknown = sorted({i for i in ids if i not in wnid_of})
    if unknown:
        raise DomainclustError(f"{truth_file} uses class id(s) {unknown[:5]} that {meta_file} "
                               "does not define")
    return [wnid_of[i] for i in ids]


def read_devkit_meta(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID → WNID of the devkit's leaf synsets (`meta.mat`, MATLAB format)."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
    except FileNotFoundError:
        raise DomainclustError(f"{path} is missing from the devkit") from None
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise DomainclustError(f"{path} is not the devkit's meta.mat (a 'synsets' struct): "
                               f"{exc}") from None
    try:
        rows = zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"], strict=True)
        return {int(i): str(w) for i, w, children in rows if int(children) == 0}
    except (ValueError, KeyError, TypeError) as exc:
        raise DomainclustError(f"{path}: synsets lack ILSVRC2012_ID / WNID / num_children "
                               f"({exc})") from None


def places365(root: Path | str, split: str) -> LabelledImages:
    """The `train` (standard) or `val` split of a Places365-Standard folder."""
    root = Path(root)
    categories = _places_list(root, "categories_places365.txt")
    classes: dict[int, str] = {}
    for line, (name, label) in _pairs(categories):
        if label in classes:
            raise DomainclustError(f"{categories} line {line}: label {label} given twice")
        classes[label] = name
    if sorted(classes) != list(range(len(classes))):
        raise DomainclustError(f"{categories}: labels must run 0..{len(classes) - 1}")
    names = tuple(classes[i] for i in range(len(classes)))
    if split == "train":
        listing = _places_list(root, "places365_train_standard.txt")
        folder = _first_dir(root, PLACES_TRAIN_DIRS, what="Places365 training images")
    elif split == "val":
        listing = _places_list(root, "places365_val.txt")
        folder = _first_dir(root, PLACES_VAL_DIRS, what="Places365 validation images")
    else:
        raise DomainclustError(f"Places365 has splits train and val, not '{split}'")
    paths, labels = [], []
    for line, (rel, label) in _pairs(listing):
        if label not in classes:
            raise DomainclustError(f"{listing} line {line}: label {label} is not in {categories}")
        path = folder / rel.lstrip("/")
        if not path.is_file():
            raise DomainclustError(f"{listing} line {line} lists {rel}, but {path} does not exist")
        paths.append(path)
        labels.append(label)
    return _checked("places365", split, folder, paths, labels, names)


def _places_list(root: Path, name: str) -> Path:
    for sub in PLACES_LISTS:
        path = root / sub / name if sub else root / name
        if path.is_file():
            return path
    raise DomainclustError(f"{name} not found in {root} or {root / PLACES_LISTS[1]}; is {root} a "
                           "Places365-Standard folder?")


def _first_dir(root: Path, names: tuple[str, ...], *, what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DomainclustError(f"{what}: none of {', '.join(names)} exists in {root}")


def _pairs(path: Path) -> list[tuple[int, tuple[str, int]]]:
    """(line number, (name, integer label)) of a whitespace-separated `name label` file."""
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DomainclustError(f"{path} line {number}: expected `name label`, got {line!r}")
        out.append((number, (parts[0], int(parts[1]))))
    return out


def voc2007(root: Path | str) -> Path:
    """The VOC2007 folder (Annotations/, ImageSets/Main/, JPEGImages/) at or below `root`."""
    root = Path(root)
    for candidate in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if all((candidate / d).is_dir() for d in ("Annotations", "ImageSets/Main", "JPEGImages")):
            return candidate
    raise DomainclustError(f"{root} is not a VOC2007 folder: it needs Annotations/, "
                           "ImageSets/Main/ and JPEGImages/ (or a VOC2007/ folder holding them)")


VOC2012_DIRS = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
VOC_SEGMENTATION_CLASSES = ("background", *VOC_CLASSES)
VOC_VOID = 255  # the border and unlabelled pixels of a VOC mask: ignored when scoring


@dataclass(frozen=True)
class SegmentationImages:
    """The image files of one split and their mask files, with the class names by index."""

    dataset: str
    split: str
    root: Path
    images: tuple[Path, ...]
    masks: tuple[Path, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def mask(self, i: int) -> np.ndarray:
        """The class ids of image `i` (-1 void), refused when not the size of its image."""
        from PIL import Image

        mask = read_voc_mask(self.masks[i], n_classes=len(self.classes))
        with Image.open(self.images[i]) as image:
            width, height = image.size
        if mask.shape != (height, width):
            raise DomainclustError(f"{self.masks[i]} is {mask.shape[1]}x{mask.shape[0]} px, its "
                                   f"image {self.images[i]} {width}x{height}")
        return mask


def voc2012(root: Path | str) -> Path:
    """The VOC2012 folder (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) at or
    below `root`."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if all((candidate / d).is_dir() for d in VOC2012_DIRS):
            return candidate
    raise DomainclustError(f"{root} is not a VOC2012 segmentation folder: it needs "
                           f"{', '.join(d + '/' for d in VOC2012_DIRS)} (or a VOC2012/ folder "
                           "holding them)")


def voc2012_segmentation(root: Path | str, split: str) -> SegmentationImages:
    """The images and masks listed by `ImageSets/Segmentation/<split>.txt`, in its order."""
    folder = voc2012(root)
    sets = folder / "ImageSets" / "Segmentation"
    listing = sets / f"{split}.txt"
    if not listing.is_file():
        found = sorted(p.stem for p in sets.glob("*.txt"))
        raise DomainclustError(f"{listing} not found: VOC2012 segmentation split '{split}' is "
                               f"not listed; splits here: {', '.join(found) or 'none'}")
    images, masks = [], []
    for number, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name = line.split()[0]
        image = folder / "JPEGImages" / f"{name}.jpg"
        mask = folder / "SegmentationClass" / f"{name}.png"
        for path in (image, mask):
            if not path.is_file():
                raise DomainclustError(f"{listing} line {number} lists {name}, but {path} does "
                                       "not exist")
        images.append(image)
        masks.append(mask)
    if not images:
        raise DomainclustError(f"{listing} lists no image")
    return SegmentationImages(dataset="voc2012", split=split, root=folder, images=tuple(images),
                              masks=tuple(masks), classes=VOC_SEGMENTATION_CLASSES)


def read_voc_mask(path: Path | str, *, n_classes: int = len(VOC_SEGMENTATION_CLASSES)
                  ) -> np.ndarray:
    """(H, W) int16 class ids of a VOC palette PNG mask, -1 where it is void (255): the class
    per pixel as the store and the segmentation protocol take it (negative: unlabelled)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise DomainclustError(
                    f"{path} is a {image.mode} image; a VOC SegmentationClass mask is a palette "
                    "PNG whose pixel indices are the class ids (convert colour masks to indices "
                    "first)")
            mask = np.asarray(image)
    except (OSError, UnidentifiedImageError) as exc:
        raise DomainclustError(f"{path} is not a readable PNG mask ({exc})") from None
    stray = np.unique(mask[(mask >= n_classes) & (mask != VOC_VOID)])
    if stray.size:
        raise DomainclustError(f"{path} holds class id(s) {stray[:5].tolist()}: VOC masks hold "
                               f"0..{n_classes - 1} and {VOC_VOID} (void)")
    out = mask.astype(np.int16)
    out[mask == VOC_VOID] = -1
    return out


def image_folder(root: Path | str, split: str = "all") -> LabelledImages:
    """Every image below `root`, unlabelled (the Flickr pools)."""
    root = _require_dir(Path(root), "an image folder is needed")
    return _checked("folder", split, root, _images(root), [], ())


def _checked(dataset: str, split: str, root: Path, paths: list[Path], labels: list[int],
             classes: list[str] | tuple[str, ...]) -> LabelledImages:
    if not paths:
        raise DomainclustError(f"{root}: no images found for the {dataset} {split} split")
    return LabelledImages(dataset=dataset, split=split, root=root, paths=tuple(paths),
                          labels=tuple(labels) if labels else (-1,) * len(paths),
                          classes=tuple(classes))


READERS = {"imagenet": imagenet, "places365": places365, "flickr": image_folder}


def read_split(dataset: str, root: Path | str, split: str) -> LabelledImages:
    """The images of `split` of a dataset given by name (`imagenet`, `places365`, `flickr`)."""
    if dataset not in READERS:
        raise DomainclustError(f"no image-store reader for dataset '{dataset}'; readers: "
                               f"{', '.join(READERS)}")
    return READERS[dataset](root, split)
