"""One DeepCluster epoch, stage by stage (stage, extract + descriptors, cluster, train), for
AlexNet at 224 px, ResNet-50 at 224 px and a small-tile network (ResNet-18) at 64 px, on the
device found here; then the cost of descriptors + k-means as N grows (time and peak RSS of
each stage, in fresh processes), against the smallest N in the same run.

    python benchmarks/bench_epoch.py                          # CPU: N=128 tiles per network
    python benchmarks/bench_epoch.py --n 20000 --batch 256    # a GPU machine
    python benchmarks/bench_epoch.py --scale 10000 100000 1000000 --skip-epoch
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from domainclust.config import resolve
from domainclust.data.store import StoreSpec, TileStoreWriter

NETWORKS = [("alexnet", 224), ("resnet50", 224), ("resnet18", 64)]


def photo_store(path: Path, *, n: int, size: int) -> Path:
    """N different crops of scikit-image's bundled photographs, as a uint8 RGB TileStore."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    w = TileStoreWriter(path, StoreSpec(modality="rgb", channels=("red", "green", "blue"),
                                        tile_size=size, dtype="uint8", scale=(1 / 255,) * 3,
                                        offset=(0.0,) * 3))
    batch = []
    for i in range(n):
        img = photos[i % len(photos)]
        c = int(rng.integers(size // 2, min(img.shape[:2])))
        y, x = rng.integers(0, img.shape[0] - c + 1), rng.integers(0, img.shape[1] - c + 1)
        tile = Image.fromarray(img[y : y + c, x : x + c]).resize((size, size), Image.BILINEAR)
        batch.append(np.asarray(tile).transpose(2, 0, 1))
        if len(batch) == 1024 or i == n - 1:
            w.append(np.stack(batch))
            batch = []
    w.finish()
    return path


def epoch(arch: str, size: int, *, n: int, k: int, batch: int, tmp: Path) -> dict:
    from domainclust.engine.deepcluster import pretrain

    store = photo_store(tmp / f"{arch}-{size}.zarr", n=n, size=size)
    config = resolve(overrides=[f"store={store}", f"arch={arch}", f"k={k}", "epochs=1",
                                f"batch_size={batch}", "pca_dim=64" if n < 1000 else "pca_dim=256"])
    t0 = time.perf_counter()
    record = pretrain(config, tmp / f"run-{arch}-{size}", progress=False, log=lambda _: None)[0]
    record["wall"] = time.perf_counter() - t0
    return record


def high_water_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scale_child(n: int, d: int, k: int) -> None:
    """Descriptors of N streamed D-dim features, then k-means on them; time + peak RSS."""
    from domainclust.clustering.kmeans import kmeans
    from domainclust.device import limit_cpu_threads
    from domainclust.engine.descriptors import compute_descriptors

    limit_cpu_threads()
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(256, d, generator=g) / np.sqrt(d)
    spectrum = torch.logspace(1.5, -1, 256)

    def batches():
        for start in range(0, n, 1024):
            b = min(1024, n - start)
            yield (torch.randn(b, 256, generator=g) * spectrum) @ basis + 0.05 * torch.randn(b, d, generator=g)

    base = high_water_mb()
    t0 = time.perf_counter()
    desc, _ = compute_descriptors(batches(), pca_dim=256)
    t1 = time.perf_counter()
    mem_desc = high_water_mb()
    kmeans(desc, k=k, iterations=20, seed=0)
    t2 = time.perf_counter()
    print(json.dumps({"n": n, "descriptors_s": t1 - t0, "kmeans_s": t2 - t1, "base_mb": base,
                      "after_descriptors_mb": mem_desc, "after_kmeans_mb": high_water_mb()}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--scale", type=int, nargs="*", default=[10000, 30000, 100000])
    p.add_argument("--scale-d", type=int, default=2048)
    p.add_argument("--scale-k", type=int, default=100)
    p.add_argument("--skip-epoch", action="store_true")
    p.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        scale_child(*args.child)
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.skip_epoch:
        print(f"one epoch on {device}: N={args.n} tiles, k={args.k}, batch {args.batch}")
        with tempfile.TemporaryDirectory() as tmp:
            for arch, size in NETWORKS:
                r = epoch(arch, size, n=args.n, k=args.k, batch=args.batch, tmp=Path(tmp))
                s = r["seconds"]
                total = sum(s.values())
                parts = "  ".join(f"{name} {sec:6.2f} s ({100 * sec / total:3.0f}%)"
                                  for name, sec in s.items())
                print(f"  {arch:8s} {size:3d} px: {parts}  | epoch {args.n / total:7.1f} tiles/s, "
                      f"train {args.n / s['train']:7.1f} tiles/s", flush=True)
    if args.scale:
        print(f"descriptors (D={args.scale_d} -> 256) + k-means (k={args.scale_k}) as N grows, CPU:")
        first = None
        for n in args.scale:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), str(args.scale_d),
                                  str(args.scale_k)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            first = first or r
            grow = n / first["n"]
            print(f"  N={n:8d}: descriptors {r['descriptors_s']:7.2f} s (x{r['descriptors_s'] / first['descriptors_s']:.1f}"
                  f" for x{grow:.0f} N)  k-means {r['kmeans_s']:7.2f} s (x{r['kmeans_s'] / first['kmeans_s']:.1f})  "
                  f"peak RSS {r['after_kmeans_mb']:.0f} MB (+{r['after_kmeans_mb'] - first['after_kmeans_mb']:.0f} MB"
                  f" vs smallest; N x 256 x 4 B = {n * 1024 / 2**20:.0f} MB)", flush=True)


if __name__ == "__main__":
    main()
