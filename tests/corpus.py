"""A damaged-file corpus made from real files, for the ingest robustness tests.

Good files per adapter (pydicom's and pydicom-data's DICOM, nibabel's NIfTI, generated
GeoTIFFs, scikit-image photographs) and mutants of them: truncated, bytes flipped in the header
or in the pixel data, emptied, another format under the adapter's extension, NaN/inf voxels,
absurd header dimensions. DICOM mutants get their own UIDs first, so that they form series of
their own and a good series stays exactly what it was.

`python tests/corpus.py [ROOT] [SEED]` builds the corpus under ROOT, ingests it, and prints a
row per mutation kind (files, named in the report, undetected, tracebacks, hangs, good tiles
lost), then one per hostile case and harmful command of `corpus_cases.py`, each with its
outcome against what it expects; it exits 1 when any row fails.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).parent))

from geotiff_data import make_scene
from medical_data import CT5N, NIBABEL_DATA, pydicom_file

from domainclust.data.ingest import run_ingest
from domainclust.data.modality import get_modality
from domainclust.data.store import TileStore
from domainclust.errors import DomainclustError

KINDS = ("truncated", "header_flips", "pixel_flips", "zero_length", "wrong_extension",
         "nan_inf", "absurd_dims")
# Damage a reader must notice. Flipped bytes may leave a file that decodes to other pixels,
# which no reader can tell from a real image; such a file may be ingested.
MUST_BE_NAMED = {"truncated", "zero_length", "wrong_extension", "absurd_dims"}
HANG_SECONDS = 120  # one adapter's corpus ingests in seconds; this long means a hang


@dataclass
class Mutant:
    path: Path
    kind: str


@dataclass
class Corpus:
    adapter: str
    good: Path  # folder of good files
    bad: Path  # folder of mutants
    mutants: list[Mutant] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def _flip(data: bytes, *, start: int, stop: int, count: int, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    stop = max(start + 1, min(stop, len(out)))
    for at in rng.integers(start, stop, size=count):
        out[at] ^= int(rng.integers(1, 256))
    return bytes(out)


def _generic(data: bytes, kind: str, *, header: int, rng: np.random.Generator) -> bytes | None:
    """The byte-level mutations every format shares; None for the format-specific kinds."""
    if kind == "truncated":
        return data[: int(len(data) * rng.uniform(0.05, 0.9))]
    if kind == "zero_length":
        return b""
    if kind == "header_flips":
        return _flip(data, start=min(header // 4, len(data) - 1), stop=header, count=8, rng=rng)
    if kind == "pixel_flips":
        return _flip(data, start=len(data) // 2, stop=len(data), count=16, rng=rng)
    return None


def _fresh_dicom(source: Path, target: Path, seed: int) -> pydicom.Dataset:
    """A copy with new Series/SOP UIDs, so that damage stays inside a series of its own."""
    ds = pydicom.dcmread(source)
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"series-{seed}"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"sop-{seed}"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(target)
    return ds


def dicom_corpus(root: Path, *, adapter: str, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    corpus = Corpus(adapter, root / "good", root / "bad",
                    options={"spacing": None, "tile_size": 32, "max_background": 1.0})
    corpus.good.mkdir(parents=True)
    corpus.bad.mkdir(parents=True)
    if adapter == "ct":
        sources = [pydicom_file("CT_small.dcm"), *sorted(CT5N.iterdir())]
    else:
        sources = [pydicom_file("MR_small.dcm"), NIBABEL_DATA / "0.dcm"]
    for s in sources:
        shutil.copy(s, corpus.good / f"{s.stem}.dcm")
    photo = root / "photo.jpg"
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(photo)
    n = 0
    for kind in KINDS:
        if kind == "nan_inf":
            continue  # DICOM pixels are integers
        for source in sources[:3]:
            target = corpus.bad / f"{kind}_{n:03d}.dcm"
            n += 1
            if kind == "wrong_extension":
                shutil.copy(photo, target)
            elif kind == "absurd_dims":
                ds = _fresh_dicom(source, target, seed * 1000 + n)
                ds.Rows, ds.Columns = 65535, 65535
                ds.save_as(target)
            else:
                ds = _fresh_dicom(source, target, seed * 1000 + n)
                data = target.read_bytes()
                header = len(data) - len(ds.PixelData)
                target.write_bytes(_generic(data, kind, header=header, rng=rng))
            corpus.mutants.append(Mutant(target, kind))
    if adapter == "mri":
        nifti_mutants(corpus, rng)
    return corpus


def nifti_mutants(corpus: Corpus, rng: np.random.Generator) -> None:
    source = NIBABEL_DATA / "anatomical.nii"
    shutil.copy(source, corpus.good / "anatomical.nii")
    data = source.read_bytes()
    for i, kind in enumerate(KINDS):
        target = corpus.bad / f"{kind}_nifti_{i}.nii"
        if kind == "wrong_extension":
            shutil.copy(pydicom_file("MR_small.dcm"), target)
        elif kind == "nan_inf":
            image = nib.load(source)
            values = np.asarray(image.dataobj, dtype=np.float32)
            values[: values.shape[0] // 3] = np.nan
            values[-2:] = np.inf
            nib.save(nib.Nifti1Image(values, image.affine), target)
        elif kind == "absurd_dims":
            image = nib.load(source)
            header = image.header.copy()
            out = bytearray(data)
            header["dim"][1:4] = 30000
            out[:348] = header.binaryblock
            target.write_bytes(bytes(out))
        else:
            target.write_bytes(_generic(data, kind, header=352, rng=rng))
        corpus.mutants.append(Mutant(target, kind))


def geotiff_corpus(root: Path, *, seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    # Nodata pixels are filled with the dataset's low percentile, which a damaged scene that
    # still reads shifts: keep whole-valid tiles only, so tiles compare byte for byte.
    corpus = Corpus("geotiff", root / "good", root / "bad",
                    options={"tile_size": 32, "max_nodata": 0.0})
    corpus.good.mkdir(parents=True)
    corpus.bad.mkdir(parents=True)
    good = [corpus.good / "a.tif", corpus.good / "b.tif"]
    make_scene(good[0], height=96, width=128, seed=0)
    make_scene(good[1], height=64, width=96, seed=1, crs="EPSG:32634")
    for i, kind in enumerate(KINDS):
        if kind in ("nan_inf", "absurd_dims"):
            continue  # float scenes change the dataset's statistics: see test_geotiff
        for j, source in enumerate(good):
            target = corpus.bad / f"{kind}_{j}.tif"
            if kind == "wrong_extension":
                Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(
                    target, format="PNG")
            else:
                target.write_bytes(_generic(source.read_bytes(), kind, header=512, rng=rng))
            corpus.mutants.append(Mutant(target, kind))
    return corpus


def rgb_corpus(root: Path, *, seed: int) -> Corpus:
    from skimage import data as skimage_data

    rng = np.random.default_rng(seed)
    corpus = Corpus("rgb", root / "good", root / "bad", options={"tile_size": 32})
    corpus.good.mkdir(parents=True)
    corpus.bad.mkdir(parents=True)
    good = []
    for name, fmt in (("astronaut", "JPEG"), ("chelsea", "PNG"), ("coffee", "JPEG")):
        path = corpus.good / f"{name}.{'jpg' if fmt == 'JPEG' else 'png'}"
        Image.fromarray(getattr(skimage_data, name)()).save(path, format=fmt)
        good.append(path)
    for i, kind in enumerate(KINDS):
        if kind == "nan_inf":
            continue  # 8-bit photographs hold no floats
        for source in good:
            target = corpus.bad / f"{kind}_{source.name}"
            if kind == "wrong_extension":
                shutil.copy(pydicom_file("CT_small.dcm"), target)
            elif kind == "absurd_dims":  # a PNG whose header claims 2^31 - 1 px a side
                out = bytearray((corpus.good / "chelsea.png").read_bytes())
                out[16:24] = (2**31 - 1).to_bytes(4, "big") * 2
                target = target.with_suffix(".png")
                target.write_bytes(bytes(out))
            else:
                target.write_bytes(_generic(source.read_bytes(), kind, header=200, rng=rng))
            corpus.mutants.append(Mutant(target, kind))
    return corpus


BUILDERS: dict[str, Callable[[Path, int], Corpus]] = {
    "ct": lambda root, seed: dicom_corpus(root, adapter="ct", seed=seed),
    "mri": lambda root, seed: dicom_corpus(root, adapter="mri", seed=seed),
    "geotiff": lambda root, seed: geotiff_corpus(root, seed=seed),
    "rgb": lambda root, seed: rgb_corpus(root, seed=seed),
}


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise Hang in the main thread after `seconds` (SIGALRM)."""
    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def ingest(corpus: Corpus, sources: list[Path], out: Path) -> dict[str, Any]:
    modality = get_modality(corpus.adapter)
    return run_ingest(modality.ingest.args[0], sources, out,
                      options={**modality.defaults, **corpus.options}, workers=1,
                      progress=False)


def tile_digests(store: Path) -> Counter:
    s = TileStore(store)
    return Counter(hashlib.sha1(t.tobytes()).hexdigest() for t in s.read(np.arange(s.n)))


@dataclass
class Outcome:
    """What one adapter's corpus did: per kind, files, named, ingested undetected."""

    adapter: str
    files: Counter = field(default_factory=Counter)
    named: Counter = field(default_factory=Counter)
    unnamed: list[Mutant] = field(default_factory=list)
    traceback: str | None = None
    hang: bool = False
    good_tiles: int = 0
    good_tiles_lost: int = 0


def run_corpus(corpus: Corpus, work: Path) -> Outcome:
    """Ingest the good files alone, then good + mutants; compare and count."""
    outcome = Outcome(corpus.adapter, files=Counter(m.kind for m in corpus.mutants))
    ingest(corpus, [corpus.good], work / "clean.zarr")
    clean = tile_digests(work / "clean.zarr")
    outcome.good_tiles = sum(clean.values())
    try:
        with deadline(HANG_SECONDS):
            report = ingest(corpus, [corpus.good, corpus.bad], work / "all.zarr")
    except Hang:
        outcome.hang = True
        return outcome
    except DomainclustError as exc:
        outcome.traceback = f"DomainclustError: {exc}"  # with good files present, none is due
        return outcome
    except Exception:  # noqa: BLE001 - what the suite looks for
        outcome.traceback = traceback.format_exc()
        return outcome
    got = tile_digests(work / "all.zarr")
    outcome.good_tiles_lost = sum((clean - got).values())
    named = {s["path"] for s in report["skipped"]}
    for m in corpus.mutants:
        if str(m.path) in named:
            outcome.named[m.kind] += 1
        else:
            outcome.unnamed.append(m)
    return outcome


HEADER = (f"{'adapter':8s} {'kind':26s} {'files':>5s} {'named':>5s} {'undetected':>10s} "
          f"{'tracebacks':>10s} {'hangs':>5s} {'good tiles lost':>16s}  outcome")


def mutation_rows(o: Outcome) -> list[str]:
    """One row per mutation kind of an adapter's corpus; tracebacks, hangs and good tiles lost
    are those of the adapter's one ingest of every kind together."""
    rows = []
    broke = o.traceback is not None or o.hang or o.good_tiles_lost
    for kind in KINDS:
        if not o.files[kind]:
            continue
        undetected = o.files[kind] - o.named[kind]
        bad = broke or (kind in MUST_BE_NAMED and undetected)
        lost = f"{o.good_tiles_lost} of {o.good_tiles}"
        verdict = "FAIL" if bad else "ok" if kind in MUST_BE_NAMED else "ok (may pass)"
        rows.append(f"{o.adapter:8s} {kind:26s} {o.files[kind]:5d} {o.named[kind]:5d} "
                    f"{undetected:10d} {int(o.traceback is not None):10d} {int(o.hang):5d} "
                    f"{lost:>16s}  {verdict}")
    return rows


def main(root: Path, seed: int = 0) -> int:
    """Build and ingest the corpus and the cases under `root`; print the table; the number of
    rows that failed."""
    from corpus_cases import CASES, REFUSALS, CaseOutcome, cases_table, run_case, run_refusal

    print(HEADER)
    failed = 0
    for adapter, build in BUILDERS.items():
        work = root / adapter
        shutil.rmtree(work, ignore_errors=True)
        outcome = run_corpus(build(work / "files", seed), work)
        rows = mutation_rows(outcome)
        failed += sum("FAIL" in r for r in rows)
        print("\n".join(rows), flush=True)
    outcomes = []
    for case in CASES:
        work = root / "cases" / case.kind
        shutil.rmtree(work, ignore_errors=True)
        try:
            with deadline(HANG_SECONDS):
                outcomes.append(run_case(case, work))
        except Hang:
            outcomes.append(CaseOutcome(case.kind, case.adapter, hang=True, problem="hang"))
    refusals = []
    for refusal in REFUSALS:
        work = root / "refusals" / refusal.kind
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        refusals.append(run_refusal(refusal, work))
    print("\n".join(cases_table(outcomes, refusals)))
    failed += sum(not o.ok for o in outcomes) + sum(not r.ok for r in refusals)
    print(f"\n{failed} row(s) failed")
    return failed


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/domainclust-corpus"),
                  seed=int(sys.argv[2]) if len(sys.argv) > 2 else 0) > 0)
