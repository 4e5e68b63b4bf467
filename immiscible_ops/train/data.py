"""Training data: sklearn digits, 2-D toy distributions, image folders and .npy/.npz arrays,
all returned as a `Dataset` of float tensors with an optional label vector and a held-out split."""

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

TOY_2D = ("gmm", "moons", "checkerboard")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Dataset:
    """x [N, C, H, W] in [-1, 1] (kind "image") or [N, D] (kind "points"); labels [N] long or None."""

    name: str
    kind: str
    x: torch.Tensor
    labels: Optional[torch.Tensor]
    class_names: Optional[List[str]] = None

    @property
    def num_classes(self) -> int:
        return 0 if self.labels is None else int(self.labels.max()) + 1

    def fingerprint(self) -> str:
        """Hash of the values and labels: keys caches (the metric's classifier) to this exact data."""
        h = hashlib.sha256(self.x.contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def subset(self, index: torch.Tensor) -> "Dataset":
        labels = None if self.labels is None else self.labels[index]
        return Dataset(self.name, self.kind, self.x[index], labels, self.class_names)

    def split(self, test_fraction: float, seed: int = 0):
        """(train, test) by a seeded permutation, so every run and the classifier cache agree."""
        n = self.x.shape[0]
        n_test = max(1, int(round(n * test_fraction)))
        if n_test >= n:
            raise ValueError(f"data: {n} samples are too few to hold out {n_test} for evaluation")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self.subset(perm[n_test:]), self.subset(perm[:n_test])


def load_dataset(spec: str, *, n_points: int = 8000, image_size: Optional[int] = None,
                 seed: int = 0) -> Dataset:
    """spec: "digits", "patches", one of TOY_2D, a folder of PNG/JPG images, or a .npy/.npz file."""
    if spec == "digits":
        ds = _digits()
    elif spec == "patches":
        ds = sample_image_patches()
    elif spec in TOY_2D:
        return Dataset(spec, "points", toy_2d(spec, n_points, seed), None)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"data: {spec!r} is neither a built-in dataset (digits, patches, {', '.join(TOY_2D)}) "
                f"nor an existing path ({path.resolve()} not found)")
        ds = _image_folder(path) if path.is_dir() else _array_file(path)
    if image_size is not None and ds.kind == "image" and ds.x.shape[-1] != image_size:
        ds.x = torch.nn.functional.interpolate(ds.x, size=(image_size, image_size),
                                               mode="bilinear", align_corners=False,
                                               antialias=True).clamp_(-1, 1)
    return ds


def _digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the digits dataset needs scikit-learn: pip install immiscible_ops[train]") from e
    d = load_digits()
    # Pixel values are 0..16; keep the native 8x8 so a small UNet trains in seconds on a CPU.
    x = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    return Dataset("digits", "image", x, torch.from_numpy(d.target).long(),
                   [str(i) for i in range(10)])


def toy_2d(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """n points [n, 2] of a toy distribution scaled to roughly unit variance."""
    g = torch.Generator().manual_seed(seed)
    if name == "gmm":
        # 8 modes on a circle: mode dropping is easy to see and to measure.
        k = torch.randint(0, 8, (n,), generator=g)
        angle = k.float() * (2 * math.pi / 8)
        centers = torch.stack([angle.cos(), angle.sin()], 1) * 1.5
        return centers + 0.12 * torch.randn(n, 2, generator=g)
    if name == "moons":
        upper = torch.rand(n, generator=g) < 0.5
        a = torch.rand(n, generator=g) * math.pi
        pts = torch.where(upper.unsqueeze(1), torch.stack([a.cos(), a.sin()], 1),
                          torch.stack([1 - a.cos(), 0.5 - a.sin()], 1))
        pts = pts + 0.05 * torch.randn(n, 2, generator=g)
        return (pts - torch.tensor([0.5, 0.25])) * 1.2
    if name == "checkerboard":
        # 4x4 board, points in the 8 "black" squares.
        cell = torch.randint(0, 8, (n,), generator=g)
        row = cell // 2
        col = 2 * (cell % 2) + row % 2
        u = torch.rand(n, 2, generator=g)
        return (torch.stack([col, row], 1).float() + u) / 2 - 1.0
    raise ValueError(f"data: unknown 2-D distribution {name!r}; expected one of {', '.join(TOY_2D)}")


def _image_folder(root: Path) -> Dataset:
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("image folders need Pillow: pip install immiscible_ops[train]") from e
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"data: no PNG/JPG images found under {root.resolve()}")
    # Labels only when every image sits in a first-level subfolder: a class-per-folder layout.
    parents = [p.relative_to(root).parts for p in files]
    labelled = all(len(parts) >= 2 for parts in parents)
    images, size, first = [], None, None
    modes = set()
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                modes.add(im.mode)
                images.append(im.copy())
        except Exception as e:  # PIL raises several types for broken files
            raise ValueError(f"data: cannot read image {p}: {e}") from e
        if size is None:
            size, first = images[-1].size, p
        elif images[-1].size != size:
            raise ValueError(
                f"data: images of mixed sizes: {first} is {size[0]}x{size[1]} but {p} is "
                f"{images[-1].size[0]}x{images[-1].size[1]}; resize them to one size first")
    gray = modes <= {"L", "1", "I;16", "I"}
    arrays = [np.asarray(im.convert("L" if gray else "RGB"), dtype=np.float32) for im in images]
    x = torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0
    x = x.unsqueeze(1) if gray else x.permute(0, 3, 1, 2)
    labels, names = None, None
    if labelled:
        names = sorted({parts[0] for parts in parents})
        index = {n: i for i, n in enumerate(names)}
        labels = torch.tensor([index[parts[0]] for parts in parents], dtype=torch.long)
    return Dataset(root.name, "image", x.contiguous(), labels, names)


def _array_file(path: Path) -> Dataset:
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"data: {path} is not a folder, .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"data: cannot read array file {path}: {e}") from e
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        keys = set(loaded.files)
        xkey = next((k for k in ("x", "images", "data") if k in keys), None)
        if xkey is None:
            raise ValueError(f"data: {path} has arrays {sorted(keys)}; expected one named x, images or data")
        arr = loaded[xkey]
        ykey = next((k for k in ("y", "labels") if k in keys), None)
        if ykey is not None:
            labels = torch.from_numpy(np.asarray(loaded[ykey])).long().flatten()
    else:
        arr = loaded
    if arr.ndim == 2:
        x = torch.from_numpy(arr.astype(np.float32))
        kind = "points"
    elif arr.ndim in (3, 4):
        x = torch.from_numpy(_to_unit_range(arr))
        if x.dim() == 3:
            x = x.unsqueeze(1)
        elif x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.permute(0, 3, 1, 2)  # channels-last, e.g. CIFAR-10 as [N, 32, 32, 3]
        kind = "image"
    else:
        raise ValueError(f"data: {path} holds an array of shape {arr.shape}; expected [N, D] points "
                         "or [N, H, W], [N, H, W, C], [N, C, H, W] images")
    if labels is not None and labels.numel() != x.shape[0]:
        raise ValueError(f"data: {path} has {x.shape[0]} samples but {labels.numel()} labels")
    return Dataset(path.stem, kind, x.contiguous(), labels)


def _to_unit_range(arr: np.ndarray) -> np.ndarray:
    """Images to [-1, 1]: uint8 as 0..255, floats in [0, 1] as such, anything else min-max scaled."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 127.5 - 1.0
    a = arr.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return a * 2.0 - 1.0
    if lo >= -1.0 and hi <= 1.0:
        return a
    return (a - lo) / max(hi - lo, 1e-12) * 2.0 - 1.0


def sample_image_patches(size: int = 32, stride: int = 16) -> Dataset:
    """32x32x3 colour patches cut on a stride-16 grid from the two photographs scikit-learn ships
    inside its wheel (china.jpg, flower.jpg, 427x640x3): real images at CIFAR's dimension with no
    download. Labels: which photograph (0 china, 1 flower)."""
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise ImportError("the patches dataset needs scikit-learn: pip install immiscible_ops[train]") from e
    images = load_sample_images().images
    xs, ys = [], []
    for label, img in enumerate(images):
        t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1.0
        p = t.unfold(1, size, stride).unfold(2, size, stride)  # [C, nh, nw, size, size]
        p = p.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size)
        xs.append(p)
        ys.append(torch.full((p.shape[0],), label, dtype=torch.long))
    return Dataset("patches", "image", torch.cat(xs).contiguous(), torch.cat(ys), ["china", "flower"])
