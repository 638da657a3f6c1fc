"""faiss k-means and flat k-NN; on the GPU when the installed faiss was built with GPUs."""

from __future__ import annotations

import numpy as np
import torch


def faiss_has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _host(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


class FaissBackend:
    name = "faiss"

    def __init__(self, device: torch.device) -> None:
        import faiss

        self.device = torch.device(device)
        self.use_gpu = self.device.type == "cuda"
        if self.use_gpu and not faiss_has_gpu():
            raise RuntimeError(f"faiss {faiss.__version__} has no GPU support")
        self.gpu_id = (self.device.index or 0) if self.use_gpu else None

    def kmeans(
        self, x: torch.Tensor, *, k: int, iterations: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import faiss

        xh = _host(x)
        # max_points_per_centroid large: no subsampling of points (the paper's setting).
        # gpu=True: every visible GPU (under torchrun rank 0 clusters while the others wait).
        km = faiss.Kmeans(
            xh.shape[1], k, niter=iterations, seed=seed, gpu=self.use_gpu,
            max_points_per_centroid=len(xh) + 1, min_points_per_centroid=1, verbose=False,
        )
        km.train(xh)
        _, labels = km.index.search(xh, 1)
        return (torch.from_numpy(labels[:, 0].astype(np.int64)).to(self.device),
                torch.from_numpy(km.centroids.copy()).to(self.device))

    def knn(
        self, database: torch.Tensor, queries: torch.Tensor, *, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import faiss

        db = _host(database)
        index = faiss.IndexFlatL2(db.shape[1])
        if self.use_gpu:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), self.gpu_id, index)
        index.add(db)
        dist, idx = index.search(_host(queries), k)
        return torch.from_numpy(dist).to(self.device), torch.from_numpy(idx).to(self.device)
