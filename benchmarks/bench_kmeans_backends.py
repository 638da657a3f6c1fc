"""k-means backends on N × 256 descriptors: time and objective of each backend that works here,
with ratios against the first one measured (faiss on CPU), all in the same run.

    python benchmarks/bench_kmeans_backends.py                    # CPU: N=20000, k=1000
    python benchmarks/bench_kmeans_backends.py --n 1280000 --k 1000 10000   # on a GPU machine
    python benchmarks/bench_kmeans_backends.py --quick            # check the script runs
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from domainclust.clustering.backends import available
from domainclust.clustering.kmeans import kmeans
from domainclust.device import limit_cpu_threads


def descriptors(n: int, d: int, *, seed: int = 0) -> np.ndarray:
    """Unit-norm points around many overlapping centres (whitened-descriptor-like)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)]
    x += rng.standard_normal((n, d), dtype=np.float32) * 1.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def run(x: np.ndarray, *, k: int, backend: str, device: torch.device, iterations: int) -> dict:
    xt = torch.from_numpy(x).to(device)
    kmeans(xt[: 4 * k], k=k, iterations=1, backend=backend, device=device)  # warm-up, probe
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = kmeans(xt, k=k, iterations=iterations, backend=backend, device=device, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"backend": backend, "device": str(device), "seconds": time.perf_counter() - t0,
            "objective": r.objective}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, nargs="+", default=[20000])
    p.add_argument("--k", type=int, nargs="+", default=[1000])
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    cores = limit_cpu_threads()
    if args.quick:
        args.n, args.k = [3000], [50]
    targets = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    combos = []
    for device in targets:
        status = available(device)
        print(f"{device}: " + ", ".join(f"{b}={s}" for b, s in status.items()), flush=True)
        combos += [(b, device) for b, s in status.items() if s == "ok"]
    rows = []
    for n in args.n:
        x = descriptors(n, args.d)
        for k in args.k:
            print(f"N={n} d={args.d} k={k} iterations={args.iterations} ({cores} CPU cores)")
            base = None
            for backend, device in combos:
                if device.type == "cpu" and n * k > 1.5e9:  # minutes to hours on CPU; skip
                    continue
                r = run(x, k=k, backend=backend, device=device, iterations=args.iterations)
                base = base or r
                r.update(n=n, k=k, speedup=base["seconds"] / r["seconds"],
                         objective_ratio=r["objective"] / base["objective"])
                rows.append(r)
                print(f"  {backend:6s} {r['device']:5s} {r['seconds']:8.2f} s   "
                      f"x{r['speedup']:6.2f} vs {base['backend']}-{base['device']}   "
                      f"objective {r['objective']:.1f} (ratio {r['objective_ratio']:.4f})",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
