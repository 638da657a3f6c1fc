"""Descriptor + clustering step: ours vs the reference approach, measured in the same run.

Reference (DeepCluster's code): faiss `PCAMatrix` whitening → L2 → faiss k-means.
Ours: streaming covariance + partial eigh whitening → L2 → k-means (`domainclust.clustering.kmeans`).
Both cluster the same N × D features into k clusters with 20 iterations, no subsampling.
Then the peak memory of our descriptor pass over N = 200 000 streamed features, in a fresh
process (the features are generated batch by batch and never held together).

    python benchmarks/bench_descriptors.py            # N=20000, D=4096, k=1000; 200k memory run
    python benchmarks/bench_descriptors.py --quick    # small sizes, to check the script runs
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import faiss
import numpy as np
import torch

from domainclust.clustering.kmeans import kmeans
from domainclust.device import limit_cpu_threads
from domainclust.engine.descriptors import compute_descriptors


def feature_batches(n: int, d: int, *, batch: int = 256, seed: int = 0):
    """fc7-like features: a decaying spectrum over a random basis, a mean offset, some noise."""
    g = torch.Generator().manual_seed(seed)
    rank = min(512, d)
    basis = torch.randn(rank, d, generator=g) / np.sqrt(d)
    spectrum = torch.logspace(1.5, -1, rank)
    offset = torch.randn(d, generator=g)
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = torch.randn(b, rank, generator=g) * spectrum
        yield z @ basis + offset + 0.05 * torch.randn(b, d, generator=g)


def reference(x: np.ndarray, *, pca_dim: int, k: int, seed: int) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    pca = faiss.PCAMatrix(x.shape[1], pca_dim, -0.5)
    pca.train(x)
    y = pca.apply_py(x)
    faiss.normalize_L2(y)
    t1 = time.perf_counter()
    km = faiss.Kmeans(pca_dim, k, niter=20, seed=seed, max_points_per_centroid=len(x) + 1)
    km.train(y)
    _, labels = km.index.search(y, 1)
    return t1 - t0, time.perf_counter() - t1, labels[:, 0]


def ours(x: np.ndarray, *, pca_dim: int, k: int, seed: int) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    desc, _ = compute_descriptors(torch.from_numpy(x).split(256), pca_dim=pca_dim)
    t1 = time.perf_counter()
    labels = kmeans(desc, k=k, iterations=20, seed=seed).labels
    return t1 - t0, time.perf_counter() - t1, labels


def high_water_mb() -> float:
    """Peak RSS of this process's own memory map (VmHWM). Unlike ru_maxrss, it does not carry
    over the parent's peak across fork + exec."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_child(n: int, d: int, pca_dim: int) -> None:
    limit_cpu_threads()
    base = high_water_mb()
    t0 = time.perf_counter()
    desc, _ = compute_descriptors(feature_batches(n, d, seed=1), pca_dim=pca_dim)
    print(json.dumps({"n": n, "d": d, "descriptors_shape": list(desc.shape),
                      "peak_rss_mb": high_water_mb(), "rss_after_imports_mb": base,
                      "seconds": time.perf_counter() - t0}))


def compare(*, n: int, d: int, k: int, pca_dim: int, seed: int) -> None:
    x = torch.cat(list(feature_batches(n, d))).numpy()
    o_desc, o_km, o_labels = ours(x, pca_dim=pca_dim, k=k, seed=seed)
    print(f"ours:      descriptors {o_desc:7.2f} s   k-means {o_km:6.2f} s   "
          f"total {o_desc + o_km:7.2f} s", flush=True)
    r_desc, r_km, r_labels = reference(x, pca_dim=pca_dim, k=k, seed=seed)
    print(f"reference: descriptors {r_desc:7.2f} s   k-means {r_km:6.2f} s   "
          f"total {r_desc + r_km:7.2f} s", flush=True)
    from sklearn.metrics import normalized_mutual_info_score

    print(f"speed-up (reference / ours): {(r_desc + r_km) / (o_desc + o_km):.1f}x   "
          f"(descriptors alone {r_desc / o_desc:.1f}x); "
          f"NMI between the two clusterings {normalized_mutual_info_score(o_labels, r_labels):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="skip the timing comparison")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peak_memory_child(*args.child)
        return
    cores = limit_cpu_threads()
    n, d, k, big = (2000, 512, 50, 20000) if args.quick else (20000, 4096, 1000, 200000)
    pca_dim, seed = 256, 0
    print(f"{cores} cores; N={n} D={d} k={k} pca_dim={pca_dim}", flush=True)
    if not args.memory_only:
        compare(n=n, d=d, k=k, pca_dim=pca_dim, seed=seed)
    print(f"peak memory of the descriptor pass over N={big} x D={d} streamed features ...",
          flush=True)
    out = subprocess.run([sys.executable, __file__, "--child", str(big), str(d), str(pca_dim)],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB (of which {r['rss_after_imports_mb']:.0f} MB is "
          f"the interpreter with torch/faiss loaded) in {r['seconds']:.0f} s; "
          f"descriptors {tuple(r['descriptors_shape'])}; "
          f"holding the raw features would take {big * d * 4 / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
