"""The segmentation overlays: a few test tiles, their true masks and each method's predictions
side by side, with the scores table; a section of the run report and a page of its own.

Masks are drawn with one fixed colour table (the PASCAL VOC palette, by class index), so a class
has the same colour in every panel, run and report; unlabelled pixels are a grey checkerboard.
Every panel is its own PNG, enlarged by whole pixels (no smoothing), so what is on the page is
exactly the stored mask.
"""

from __future__ import annotations

import dataclasses
import io
from html import escape
from pathlib import Path

import numpy as np

from domainclust.errors import DomainclustError
from domainclust.evaluation.lowshot.result import LowShotResult, load_lowshot
from domainclust.report.page import Section, data_uri, lowshot_tables, render_page
from domainclust.report.rendering import Renderer, build_renderer
from domainclust.segmentation.examples import (
    EXAMPLES_FILE,
    SegmentExamples,
    check_examples,
    load_examples,
)

PANEL_PIXELS = 96  # panels are enlarged by a whole factor to at least this size
IGNORE_CHECKER = ((200, 200, 200), (245, 245, 245))  # unlabelled pixels: light checkerboard
TABLE_METRICS = ("miou", "dice", "pixel_accuracy")
SEGMENT_FILE = "segment.json"


def voc_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: the PASCAL VOC colour of each class index (its bits spread over R, G, B)."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out[i] = (r, g, b)
    return out


PALETTE = voc_palette()


def colour_masks(masks: np.ndarray, *, scale: int = 1) -> np.ndarray:
    """(n, H, W) class indices → (n, H*scale, W*scale, 3) uint8 in the fixed colour table;
    negative (unlabelled) pixels as a checkerboard finer than one enlarged pixel."""
    masks = np.asarray(masks)
    big = np.repeat(np.repeat(masks, scale, axis=-2), scale, axis=-1)
    out = PALETTE[np.clip(big, 0, len(PALETTE) - 1) % len(PALETTE)]
    rows, cols = np.indices(big.shape[-2:])
    square = max(1, scale // 3)
    checker = np.where((((rows // square) + (cols // square)) % 2 == 0)[..., None],
                       IGNORE_CHECKER[0], IGNORE_CHECKER[1]).astype(np.uint8)
    return np.where((big < 0)[..., None], checker, out)


def panel_scale(size: int) -> int:
    return max(1, -(-PANEL_PIXELS // max(size, 1)))


def example_renderer(examples: SegmentExamples) -> Renderer:
    """How the example tiles are drawn: the modality's default channels (or composite), scaled
    between percentiles of the examples themselves (they are normalised, not as stored)."""
    attrs = {"modality": examples.modality, "channels": examples.channels}
    default = build_renderer(attrs, examples.tiles)
    colour = default.colour or (0,)
    return build_renderer(attrs, examples.tiles,
                          composite=[examples.channels[i] for i in colour])


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _img(image: np.ndarray, *, id_: str, alt: str) -> str:
    return (f'<img id="{escape(id_)}" class="panel" alt="{escape(alt)}" '
            f'src="{data_uri(png(image))}">')


def overlay_tables(examples: SegmentExamples) -> str:
    """One table per shot count: a row per example tile, columns image, true mask, then each
    method's prediction (as the protocol made it, first repeat)."""
    scale = panel_scale(examples.truth.shape[-1])
    renderer = example_renderer(examples)
    pictures = renderer.render(examples.tiles)
    pictures = np.repeat(np.repeat(pictures, scale, axis=1), scale, axis=2)
    truth = colour_masks(examples.truth, scale=scale)
    parts = [legend(examples.classes)]
    for shots in examples.shots:
        methods = [m for m in examples.methods if m[2] == shots]
        head = "".join(f"<th>{escape(m if p == 'none' else f'{m} ({p})')}</th>"
                       for m, p, _ in methods)
        lines = [f'<table class="overlays"><tr><th>test tile</th><th>image</th>'
                 f"<th>true mask</th>{head}</tr>"]
        for t, index in enumerate(examples.indices):
            cells = [_img(pictures[t], id_=f"seg-{shots}-{t}-image", alt=f"tile {index}"),
                     _img(truth[t], id_=f"seg-{shots}-{t}-truth", alt=f"true mask {index}")]
            for m, p, s in methods:
                pred = colour_masks(examples.prediction(m, p, s)[t:t + 1], scale=scale)[0]
                cells.append(_img(pred, id_=f"seg-{shots}-{t}-{m}-{p}",
                                  alt=f"{m} ({p}) on tile {index}"))
            lines.append(f"<tr><td>{index}</td>" + "".join(f"<td>{c}</td>" for c in cells)
                         + "</tr>")
        lines.append("</table>")
        parts.append(f"<h3>{shots} shot tile(s)</h3>\n" + "\n".join(lines))
    parts.append(f'<p class="caption">Seeded test tiles (store ids), repeat {examples.repeat + 1}'
                 f": what each method predicted, as scored. {escape(renderer.caption)}; masks "
                 "in the PASCAL VOC colours by class index, unlabelled pixels as a grey "
                 f"checkerboard, enlarged {scale}x without smoothing.</p>")
    return "\n".join(parts)


def legend(classes: list[str]) -> str:
    items = "".join(
        f'<span class="swatch" style="background: rgb{tuple(int(v) for v in PALETTE[i])}">'
        f"</span>{escape(name)} " for i, name in enumerate(classes))
    return (f'<p class="legend">{items}<span class="swatch checker"></span>unlabelled</p>')


def load_segment(path: Path) -> tuple[LowShotResult | None, SegmentExamples | None, list[str]]:
    """The result at `path` (segment.json), the examples beside it, and what is left out why."""
    try:
        result = load_lowshot(path)
    except DomainclustError as exc:
        return None, None, [f"segmentation results not shown: {exc}"]
    if result is None:
        return None, None, []
    examples_path = path.parent / EXAMPLES_FILE
    try:
        examples = load_examples(examples_path)
        if examples is None:
            return result, None, [f"{examples_path} is missing: no segmentation overlays (run "
                                  "`domainclust finetune --task segment` again)"]
        check_examples(examples, rows={(r.method, r.protocol, r.shots) for r in result.rows},
                       classes=result.settings.get("classes", []), source=path)
    except DomainclustError as exc:
        return result, None, [f"segmentation overlays not shown: {exc}"]
    return result, examples, []


def segment_tables(result: LowShotResult, *, source: Path) -> str:
    """The scores table (mIoU, Dice when binary, pixel accuracy) and the verdicts."""
    shown = dataclasses.replace(result, rows=[r for r in result.rows
                                              if r.metric in TABLE_METRICS])
    return lowshot_tables(shown, source=source, shots_label="shot tiles")


def segment_section(result: LowShotResult, examples: SegmentExamples | None, *,
                    source: Path) -> Section:
    body = segment_tables(result, source=source)
    if examples is not None:
        body = overlay_tables(examples) + "\n" + body
    return Section("Low-shot segmentation", body)


def segment_page(result: LowShotResult, examples: SegmentExamples, *, source: Path) -> str:
    """A page of its own (written beside segment.json): the overlays and the table."""
    facts = [f"{result.n_classes} classes, {result.n_test} test tiles, split: {result.split}",
             f"checkpoint: {Path(result.checkpoint).name}"]
    return render_page(title="Segmentation examples", facts=facts,
                       sections=[segment_section(result, examples, source=source)])
