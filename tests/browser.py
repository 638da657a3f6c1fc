"""Open a page in headless Chromium and read back what the page itself saw (test helper).

An inline script, put at the top of a copy of the page, records every load error and, on
`load`, every image's `naturalWidth` and the resources fetched, into a `<pre>` element that
`--dump-dom` prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Without these flags Chromium hangs on network lookups and first-run work on this machine.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
PROBE = """<script>
window.__failed = [];
window.addEventListener("error", e => window.__failed.push(
  (e.target && (e.target.currentSrc || e.target.src || e.target.href) || e.message || "?")
    .slice(0, 80)), true);
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({id: i.id, complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight}));
  const fetched = performance.getEntriesByType("resource").map(r => r.name.slice(0, 80));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images, failed: window.__failed, fetched});
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def probe_page(page: Path, *, chromium: str, timeout: float = 60.0) -> dict:
    """{images: [{id, complete, width, height}], failed: [...], fetched: [...]} as the page saw."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
        result = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000",
             "--dump-dom", copy.as_uri()],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.DOTALL)
    if not found:
        raise AssertionError(f"Chromium printed no probe (rc {result.returncode}): "
                             f"{result.stderr[-2000:]}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")
                      .replace("&lt;", "<").replace("&gt;", ">"))


def screenshot(page: Path, out: Path, *, chromium: str, width: int, height: int) -> None:
    """A PNG of the page's first `height` pixels at `width`."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={tmp}/profile", "--hide-scrollbars",
             f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri()],
            capture_output=True, timeout=120, check=True,
        )
