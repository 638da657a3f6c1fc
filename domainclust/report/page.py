"""The report page: one self-contained HTML file, every image embedded as a data URI."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from domainclust.evaluation.lowshot.result import LowShotResult, interval
from domainclust.report.figures import Figure
from domainclust.report.lowshot import method_order

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta, .caption, .note { color: #555; font-size: 0.9em; }
.note { background: #fff6d6; padding: 0.4em 0.7em; border-left: 3px solid #e0b000; }
img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
.helped { background: #d9f2d9; } .did-not-help { background: #f8d7d7; }
.inconclusive { background: #eee; }
table.overlays img.panel { border: none; image-rendering: pixelated; display: block; }
table.overlays td, table.overlays th { padding: 2px; vertical-align: middle;
  text-align: center; }
.swatch { display: inline-block; width: 1em; height: 1em; margin: 0 0.3em 0 0.8em;
  vertical-align: middle; border: 1px solid #999; }
.swatch.checker { background: repeating-conic-gradient(#c8c8c8 0 25%, #f5f5f5 0 50%) 0 0 / 6px 6px; }
"""


@dataclass(frozen=True)
class Section:
    """A heading and its HTML body (already escaped)."""

    title: str
    body: str


def data_uri(png: bytes) -> str:
    """A PNG embedded in the page, so the file stands alone."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_section(figure: Figure) -> Section:
    return Section(figure.title,
                   f'<img id="fig-{escape(figure.name)}" alt="{escape(figure.title)}" '
                   f'src="{data_uri(figure.png)}">\n'
                   f'<p class="caption">{escape(figure.caption)}</p>')


def note_section(title: str, text: str) -> Section:
    return Section(title, f'<p class="note">{escape(text)}</p>')


def lowshot_tables(result: LowShotResult, *, source: Path, shots_label: str = "shots/class") -> str:
    """The results table (mean [95 % CI] per method) and the verdict per shot count."""
    methods = method_order(result.rows)
    keys = sorted({(r.protocol, r.metric, r.shots) for r in result.rows})
    cell = {(r.protocol, r.metric, r.shots, r.method): r for r in result.rows}
    head = "".join(f"<th>{escape(m)}</th>" for m in methods)
    lines = [f"<table><tr><th>protocol</th><th>metric</th><th>{escape(shots_label)}</th>"
             f"{head}</tr>"]
    for protocol, metric, shots in keys:
        cells = []
        for m in methods:
            r = cell.get((protocol, metric, shots, m))
            cells.append("<td></td>" if r is None else
                         f"<td>{r.mean:.3f} {interval(r.ci_low, r.ci_high)} "
                         f'<span class="meta">n={r.repeats}</span></td>')
        lines.append(f'<tr><td class="text">{escape(protocol)}</td>'
                     f'<td class="text">{escape(metric)}</td><td>{shots}</td>'
                     + "".join(cells) + "</tr>")
    lines.append("</table>")
    lines.append(f'<p class="caption">Mean [95 % CI] over n repeats (n/a: one repeat gives no '
                 f"interval). Split: {escape(result.split)}. Source: {escape(source.name)}.</p>")
    if result.verdict:
        lines.append(f"<table><tr><th>{escape(shots_label)}</th><th>verdict</th>"
                     "<th>best baseline</th><th>difference</th><th>95 % CI</th></tr>")
        for v in result.verdict:
            css = v.result.replace(" ", "-")
            lines.append(
                f"<tr><td>{v.shots}</td>"
                f'<td class="text {css}">{escape(v.result)}</td>'
                f'<td class="text">{escape(v.best_baseline)}</td>'
                f"<td>{v.difference:+.3f}</td>"
                f"<td>{interval(v.ci_low, v.ci_high, fmt='+.3f')}</td></tr>")
        lines.append("</table>")
        lines.append('<p class="caption">Difference: pretrained minus the best baseline, paired '
                     "over repeats; the verdict follows from its confidence interval.</p>")
    return "\n".join(lines)


def render_page(*, title: str, facts: Sequence[str], sections: Sequence[Section]) -> str:
    items = "".join(f"<li>{escape(f)}</li>" for f in facts)
    body = "\n".join(f"<section><h2>{escape(s.title)}</h2>\n{s.body}\n</section>"
                     for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f"<title>{escape(title)}</title>\n<style>{STYLE}</style></head>\n"
            f'<body>\n<h1>{escape(title)}</h1>\n<ul class="meta">{items}</ul>\n{body}\n'
            "</body></html>\n")
