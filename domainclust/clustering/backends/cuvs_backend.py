"""NVIDIA cuVS k-means and brute-force k-NN (optional extra `domainclust[cuvs]`, CUDA only).

Tensors go to cuVS through `__cuda_array_interface__` without a copy to the host.
"""

from __future__ import annotations

import torch


class CuvsBackend:
    name = "cuvs"

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise RuntimeError("cuVS runs on CUDA devices only")
        import cuvs  # noqa: F401 - ImportError here means the extra is not installed

    def kmeans(
        self, x: torch.Tensor, *, k: int, iterations: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from cuvs.cluster import kmeans

        x = x.to(self.device, torch.float32).contiguous()
        # cuVS takes no seed: start from k seeded random rows, like the other backends.
        generator = torch.Generator().manual_seed(seed)
        init = x[torch.randperm(len(x), generator=generator)[:k].to(self.device)].contiguous()
        params = kmeans.KMeansParams(n_clusters=k, max_iter=iterations, tol=0.0,
                                     init_method="Array")
        with torch.cuda.device(self.device):
            centroids, _, _ = kmeans.fit(params, x, init)
            centroids = torch.as_tensor(centroids, device=self.device)
            labels, _ = kmeans.predict(params, x, centroids)
        return torch.as_tensor(labels, device=self.device).long(), centroids.float()

    def knn(
        self, database: torch.Tensor, queries: torch.Tensor, *, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from cuvs.neighbors import brute_force

        db = database.to(self.device, torch.float32).contiguous()
        q = queries.to(self.device, torch.float32).contiguous()
        with torch.cuda.device(self.device):
            index = brute_force.build(db, metric="sqeuclidean")
            dist, idx = brute_force.search(index, q, k)
        return (torch.as_tensor(dist, device=self.device).float(),
                torch.as_tensor(idx, device=self.device).long())
