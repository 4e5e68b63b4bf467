"""Sample-quality metrics: exact W2 for points; Frechet distance and kernel MMD in the features
of a small CNN classifier trained on the training split of the same data (not Inception FID)."""

import json
import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from immiscible_ops.ops import linear_assignment


def w2_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Exact 2-Wasserstein distance between equal-size empirical sets a [N, D], b [N, D]."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"w2_distance: expected two [N, D] sets of equal shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    a, b = a.double().cpu(), b.double().cpu()
    cost = torch.cdist(a, b).square()
    match = linear_assignment(cost)
    return float(cost[torch.arange(a.shape[0]), match].mean().sqrt())


def frechet_distance(fa: torch.Tensor, fb: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(Ca + Cb - 2 (Ca^1/2 Cb Ca^1/2)^1/2) of two feature sets [N, F]."""
    fa, fb = fa.double(), fb.double()
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    ca, cb = torch.cov(fa.T), torch.cov(fb.T)
    # tr sqrt(Ca Cb) through symmetric matrices only: eigh is stable where sqrtm of a product is not.
    ea, va = torch.linalg.eigh(ca)
    sqrt_a = (va * ea.clamp_min(0).sqrt()) @ va.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cb @ sqrt_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * cross)


def mmd2(fa: torch.Tensor, fb: torch.Tensor, kernel: str = "poly") -> float:
    """Unbiased squared MMD between feature sets [N, F], [M, F]; kernel "poly" is KID's cubic
    (x.y/F + 1)^3, "rbf" a Gaussian with the median pairwise distance as bandwidth."""
    fa, fb = fa.double(), fb.double()
    if kernel == "poly":
        d = fa.shape[1]
        k = lambda x, y: (x @ y.T / d + 1.0) ** 3  # noqa: E731
    elif kernel == "rbf":
        both = torch.cat([fa, fb])
        bandwidth = torch.cdist(both, both).median().clamp_min(1e-12)
        k = lambda x, y: torch.exp(-torch.cdist(x, y).square() / (2 * bandwidth ** 2))  # noqa: E731
    else:
        raise ValueError(f"kernel: unknown kernel {kernel!r}; expected poly or rbf")
    n, m = fa.shape[0], fb.shape[0]
    kaa, kbb, kab = k(fa, fa), k(fb, fb), k(fa, fb)
    saa = (kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
    sbb = (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1))
    return float(saa + sbb - 2 * kab.mean())


class FeatureNet(nn.Module):
    """Small CNN classifier; `features` is its penultimate layer, what the metrics compare."""

    def __init__(self, channels: int, num_classes: int, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(8 * width, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def default_cache_dir() -> Path:
    return Path(os.environ.get("IMMISCIBLE_CACHE", Path.home() / ".cache" / "immiscible_ops"))


def _pseudo_labels(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k-means clusters of the pixels stand in for classes on unlabelled data."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x.reshape(x.shape[0], -1).numpy())
    return torch.from_numpy(km.labels_).long()


def feature_extractor(train, *, cache_dir: Optional[Path] = None, epochs: int = 15,
                      seed: int = 0, device="cpu", log=print) -> FeatureNet:
    """FeatureNet (on the CPU) for train, a Dataset of images: trained once on device and cached
    on disk under the data's fingerprint; a fixed seed makes the cached and a retrained net
    identical (on one device kind)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = f"featurenet-{train.fingerprint()}-e{epochs}-s{seed}"
    path = cache_dir / f"{key}.pt"
    labels = train.labels
    num_classes = train.num_classes if labels is not None else 10
    with torch.random.fork_rng():  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        net = FeatureNet(train.x.shape[1], num_classes)
    if path.exists():
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.eval()
    if labels is None:
        labels = _pseudo_labels(train.x, num_classes, seed)
    g = torch.Generator().manual_seed(seed)
    net.to(device)
    images, labels = train.x.to(device), labels.to(device)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    n, batch = train.x.shape[0], 128
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = perm[i:i + batch].to(device)
            x = images[idx]
            # Small shifts make the features respond to shape, not to exact pixel positions.
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            x = torch.roll(x, (dx, dy), (2, 3))
            loss = nn.functional.cross_entropy(net(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float(torch.cat([net(images[i:i + 512]).argmax(1) for i in range(0, n, 512)])
                    .eq(labels).float().mean())
    net.cpu()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # experiment jobs may train the same net at once
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"train_accuracy": acc, "epochs": epochs,
                                                     "seed": seed, "n": n}))
    log(f"feature classifier trained ({n} images, train accuracy {acc:.3f}), cached at {path}")
    return net


@torch.no_grad()
def extract(net: FeatureNet, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    return torch.cat([net.features(x[i:i + batch].float().cpu()) for i in range(0, x.shape[0], batch)])


def image_metrics(net: FeatureNet, real_features: torch.Tensor, samples: torch.Tensor) -> dict:
    f = extract(net, samples)
    return {"fd": frechet_distance(f, real_features), "mmd_poly": mmd2(f, real_features, "poly"),
            "mmd_rbf": mmd2(f, real_features, "rbf")}
