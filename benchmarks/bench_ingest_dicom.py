"""Ingest throughput of the `ct` adapter on DICOM series, with 1 and N reader processes.

The series are built from one real 512x512 head CT slice (pydicom-data's 693_UNCR.dcm): each
copy gets its own SOP/Series UID and slice position, so the ingest does the real work
(header scan, grouping, decoding, HU, resampling, windowing, zarr writes). The baseline
(--workers 1) is measured in the same run as the parallel ingest. Spawned reader processes
pay a fixed start-up (importing torch, domainclust and MONAI); it is measured on an ingest of
one slice per worker and reported apart, since it does not grow with the data.

    .venv/bin/python benchmarks/bench_ingest_dicom.py --series 8 --slices 60 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pydicom
from domainclust.modalities.medical.adapter import expand_sources
from domainclust.modalities.medical.ct import ADAPTER, CT_DEFAULTS
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from domainclust.data.ingest import run_ingest


def write_series(folder: Path, *, series: int, slices: int) -> int:
    """`series` folders of `slices` CT files each; returns the number of files."""
    template = get_testdata_file("693_UNCR.dcm", download=False)
    if template is None:
        raise SystemExit("needs pydicom-data (pip install pydicom-data) for 693_UNCR.dcm")
    ds = pydicom.dcmread(template)
    z0 = float(ds.ImagePositionPatient[2])
    for s in range(series):
        ds.SeriesInstanceUID = generate_uid()
        (folder / f"series{s}").mkdir(parents=True)
        for i in range(slices):
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i + 1
            ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z0 + 2.5 * i]
            ds.save_as(folder / f"series{s}" / f"{i:04d}.dcm")
    return series * slices


def timed_ingest(source: Path, out: Path, *, workers: int, options: dict) -> dict:
    start = time.perf_counter()
    report = run_ingest(ADAPTER, [source], out, options=options, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    tiles = report["tiles_written"]
    return {"workers": workers, "seconds": round(seconds, 2), "tiles": tiles,
            "tiles_per_s": round(tiles / seconds, 1),
            "tiles_per_s_per_core": round(tiles / seconds / workers, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2, help="parallel run to compare")
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--spacing", type=float, default=1.0, help="mm; 0 keeps native")
    args = parser.parse_args()
    options = {**CT_DEFAULTS, "tile_size": args.tile_size,
               "spacing": args.spacing or None}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_series(root / "dicom", series=args.series, slices=args.slices)
        start = time.perf_counter()
        items = ADAPTER.discover([root / "dicom"], options)
        scan = time.perf_counter() - start
        assert len(items) == args.series, [i.info.get("skip") for i in items]
        assert sum(len(f) for _, f in expand_sources([root / "dicom"])) == files
        # One one-slice series per worker: every worker starts and imports what it needs.
        write_series(root / "tiny", series=args.workers, slices=1)
        tiny = [timed_ingest(root / "tiny", root / f"t{w}.zarr", workers=w, options=options)
                for w in (1, args.workers)]
        runs = [timed_ingest(root / "dicom", root / f"w{w}.zarr", workers=w, options=options)
                for w in (1, args.workers)]
    base, par = runs
    startup = max(0.0, tiny[1]["seconds"] - tiny[0]["seconds"])
    steady = max(par["seconds"] - startup, 1e-3)
    result = {
        "files": files, "series": args.series, "cpu_count": os.cpu_count(),
        "header_scan_files_per_s": round(files / scan, 1),
        "runs": runs,
        "slices_per_s_1_worker": round(files / base["seconds"], 1),
        f"worker_startup_s_{args.workers}_workers": round(startup, 2),
        f"speedup_{args.workers}_workers": round(base["seconds"] / par["seconds"], 2),
        f"speedup_{args.workers}_workers_excluding_startup": round(base["seconds"] / steady, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
