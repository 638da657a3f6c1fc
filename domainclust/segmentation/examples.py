"""What the segmentation protocol predicted on a few seeded test tiles, kept to be looked at.

The protocol keeps, for its first repeat, the float tiles the networks saw, their true masks and
every method's predicted masks on them; `finetune --task segment` writes them beside
`segment.json` as `segment_examples.npz` and the run report draws them. This module is the one
schema of that file, for the writer and the reader alike:

    tiles        (n, C, H, W) float32  the tiles as the networks saw them (normalised)
    truth        (n, H, W) int16       class index per pixel (into `classes`), -1 unlabelled
    predictions  (m, n, H, W) int16    one predicted mask stack per (method, protocol, shots)
    meta         a JSON string: format, indices (store tile ids), channels, modality, classes,
                 repeat, methods ([method, protocol, shots] per prediction stack), shot_tiles
                 ({shots: the training tiles of that repeat})
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from domainclust.errors import DomainclustError

EXAMPLES_FILE = "segment_examples.npz"
FORMAT = 1
EXAMPLE_TILES = 4  # test tiles shown by default


@dataclass
class SegmentExamples:
    """A few test tiles, their true masks and each method's predictions (see the module)."""

    tiles: np.ndarray
    truth: np.ndarray
    indices: list[int]
    channels: list[str]
    modality: str
    classes: list[str]
    repeat: int = 0
    methods: list[tuple[str, str, int]] = field(default_factory=list)
    predictions: list[np.ndarray] = field(default_factory=list)
    shot_tiles: dict[int, list[int]] = field(default_factory=dict)

    def add(self, *, method: str, protocol: str, shots: int, masks: np.ndarray) -> None:
        """Keep one method's predicted masks of the example tiles."""
        masks = np.asarray(masks)
        if masks.shape != self.truth.shape:
            raise ValueError(f"predictions of {method}/{protocol} have shape {masks.shape}, the "
                             f"example masks {self.truth.shape}")
        self.methods.append((method, protocol, int(shots)))
        self.predictions.append(masks.astype(np.int16))

    def prediction(self, method: str, protocol: str, shots: int) -> np.ndarray:
        return self.predictions[self.methods.index((method, protocol, int(shots)))]

    @property
    def shots(self) -> list[int]:
        return sorted({s for _, _, s in self.methods})

    def save(self, path: Path | str) -> Path:
        from domainclust.atomic import atomic_write

        meta = {"format": FORMAT, "indices": [int(i) for i in self.indices],
                "channels": list(self.channels), "modality": self.modality,
                "classes": list(self.classes), "repeat": self.repeat,
                "methods": [list(m) for m in self.methods],
                "shot_tiles": {str(k): [int(i) for i in v] for k, v in self.shot_tiles.items()}}
        n, _, h, w = self.tiles.shape
        stack = (np.stack(self.predictions) if self.predictions
                 else np.zeros((0, n, h, w), np.int16))
        path = Path(path)
        atomic_write(path, lambda f: np.savez_compressed(
            f, tiles=self.tiles.astype(np.float32), truth=self.truth.astype(np.int16),
            predictions=stack.astype(np.int16), meta=np.array(json.dumps(meta))))
        return path


def load_examples(path: Path | str) -> SegmentExamples | None:
    """The examples stored at `path`, None when there is none; a malformed file is refused."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            tiles, truth, stack = data["tiles"], data["truth"], data["predictions"]
    except (OSError, ValueError, KeyError) as exc:
        raise DomainclustError(f"{path} is not a segmentation examples file ({exc}); write it "
                               "again with `domainclust finetune --task segment`") from None
    if meta.get("format") != FORMAT:
        raise DomainclustError(f"{path} has format {meta.get('format')!r}, this version reads "
                               f"{FORMAT}; write it again with `domainclust finetune --task "
                               "segment`")
    methods = [(str(m), str(p), int(s)) for m, p, s in meta["methods"]]
    if tiles.ndim != 4 or truth.shape != (tiles.shape[0], *tiles.shape[2:]) or \
            stack.shape != (len(methods), *truth.shape):
        raise DomainclustError(f"{path}: tiles {tiles.shape}, masks {truth.shape} and "
                               f"predictions {stack.shape} do not agree")
    return SegmentExamples(
        tiles=tiles, truth=truth, indices=list(meta["indices"]), channels=list(meta["channels"]),
        modality=str(meta["modality"]), classes=list(meta["classes"]),
        repeat=int(meta["repeat"]), methods=methods, predictions=list(stack),
        shot_tiles={int(k): list(v) for k, v in meta["shot_tiles"].items()})


def check_examples(examples: SegmentExamples, *, rows: set[tuple[str, str, int]],
                   classes: list[str], source: Path) -> None:
    """Refuse examples that are not of the result at `source` (another run's file left there)."""
    stray = sorted(set(examples.methods) - rows)
    if stray or list(examples.classes) != list(classes):
        raise DomainclustError(
            f"the examples beside {source} are not of its result (methods {stray[:3]} or classes "
            f"{examples.classes} differ); run `domainclust finetune --task segment` again")


def choose_example_tiles(masks: np.ndarray, *, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of `n` test masks drawn by `rng`, among those showing at least two classes
    when enough do (they show most of what a method gets right or wrong), sorted."""
    shown = np.array([len(np.unique(m[m >= 0])) for m in masks])
    candidates = np.flatnonzero(shown >= 2)
    if len(candidates) < n:
        candidates = np.arange(len(masks))
    return np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
