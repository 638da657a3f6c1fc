"""One whole DeepCluster epoch: ours against the reference design, on the same images, same run.

The reference design (the paper's code): a separate extraction pass that decodes every JPEG
(resize 256, centre crop 224), faiss `PCAMatrix` whitening + L2 + `faiss.Kmeans`, then training
that decodes every sampled JPEG again (RandomResizedCrop + flip), with the same network, sampler,
batch size and optimiser. Ours: `domainclust pretrain` for one epoch from a TileStore of the same
images at 224 px (staged once, augmented from the staged tiles). Both take the images from the
same N crops of scikit-image's bundled photographs (JPEG quality 90 for the reference).

    python benchmarks/bench_epoch_vs_reference.py              # N=512, AlexNet, k=10, batch 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_datapath import SIZE, JpegFolder, make_images  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from domainclust.config import resolve  # noqa: E402
from domainclust.data.store import TileStore  # noqa: E402
from domainclust.device import limit_cpu_threads  # noqa: E402
from domainclust.engine.deepcluster import model_spec, pretrain  # noqa: E402
from domainclust.engine.sampling import EpochSampler, cluster_uniform_indices  # noqa: E402
from domainclust.networks.model import DeepClusterNet  # noqa: E402


class CentreCropJpegs(torch.utils.data.Dataset):
    """The reference extraction input: decode, resize the short side to 256, centre crop 224."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            im = im.convert("RGB").resize((256, 256), Image.BILINEAR)
        top = (256 - SIZE) // 2
        hwc = np.asarray(im, dtype=np.float32)[top:top + SIZE, top:top + SIZE] / 255
        return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))


class Labelled(torch.utils.data.Dataset):
    def __init__(self, images: JpegFolder, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i][0], int(self.labels[i])


def reference_epoch(folder: Path, *, model: DeepClusterNet, k: int, pca_dim: int, batch: int,
                    lr: float, workers: int) -> dict[str, float]:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    files = sorted(folder.glob("*.jpg"))
    model.eval()
    with torch.no_grad():
        feats = [model.features(x).numpy() for x in torch.utils.data.DataLoader(
            CentreCropJpegs(files), batch_size=batch, num_workers=workers)]
    x = np.ascontiguousarray(np.concatenate(feats), dtype=np.float32)
    seconds["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pca = faiss.PCAMatrix(x.shape[1], pca_dim, -0.5)
    pca.train(x)
    y = pca.apply_py(x)
    faiss.normalize_L2(y)
    km = faiss.Kmeans(pca_dim, k, niter=20, seed=0, max_points_per_centroid=len(y) + 1)
    km.train(y)
    labels = km.index.search(y, 1)[1][:, 0]
    seconds["cluster"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.reset_head(k)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-5)
    draw = cluster_uniform_indices(labels, n_draws=len(labels) // batch * batch,
                                   rng=np.random.default_rng(0))
    loader = torch.utils.data.DataLoader(Labelled(JpegFolder(folder, seed=0), labels),
                                         batch_size=batch, sampler=EpochSampler(draw),
                                         num_workers=workers)
    loss_fn = nn.CrossEntropyLoss()
    for xb, yb in loader:
        loss = loss_fn(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds["train"] = time.perf_counter() - t0
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--arch", default="alexnet")
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args()
    cores = limit_cpu_threads()
    with tempfile.TemporaryDirectory() as tmp:
        folder, store_path = make_images(args.n, Path(tmp))
        config = resolve(overrides=[f"store={store_path}", f"arch={args.arch}", f"k={args.k}",
                                    "epochs=1", f"batch_size={args.batch}", "pca_dim=64",
                                    f"workers={args.workers}", "report=false"])
        t0 = time.perf_counter()
        ours = pretrain(config, Path(tmp) / "run", progress=False, log=lambda _: None)[0]
        ours_wall = time.perf_counter() - t0
        torch.manual_seed(config.seed)
        model = DeepClusterNet(model_spec(config, TileStore(store_path)), n_clusters=args.k)
        ref = reference_epoch(folder, model=model, k=args.k, pca_dim=64, batch=args.batch,
                              lr=config.train.lr, workers=args.workers)
    ref_total = sum(ref.values())
    ours_s = ours["seconds"]
    ours_total = sum(ours_s.values())
    print(f"{cores} cores, {args.workers} loader workers, {args.arch} at {SIZE} px, N={args.n}, "
          f"k={args.k}, batch {args.batch}")
    def parts(seconds: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())

    print(f"ours:      {ours_total:6.1f} s  ({parts(ours_s)}; with start-up {ours_wall:.1f} s)")
    print(f"reference: {ref_total:6.1f} s  ({parts(ref)})")
    print(f"whole epoch: x{ref_total / ours_total:.2f} (reference / ours)")


if __name__ == "__main__":
    main()
