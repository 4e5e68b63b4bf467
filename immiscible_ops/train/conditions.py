"""Continuous conditions derived from each sample, as a caption embedding is from its image, and
the conditional metrics that score samples against them.

  points (any 2-D set; gmm's modes): the unit vector of the point's angle about the training
      mean, E = 2. It names the mode of gmm and where on the mode's ring the point sits, and
      leaves the radius free.
  images (digits, folders): the 4x4 average-pooled thumbnail per channel, centred on the
      training set's mean thumbnail and scaled to unit length, E = 16 * C: a coarse description
      of the layout, not the image.

Both are unit vectors, so the cosine distance is the natural condition metric (C2OT's default),
and "adherence" is the mean cosine between the condition a sample was generated for and the
condition derived back from the sample, the analogue of a CLIP score. Condition classes (for
per-condition W2 on points, and for in-class coupling where data has no labels) are the
nearest of 8 angular sectors centred on gmm's modes."""

import math

import torch

SECTORS = 8
THUMBNAIL = 4


class DerivedConditions:
    """cond(x [N, ...]) -> [N, E] unit vectors; the centring is fixed by the training set."""

    def __init__(self, kind: str, train_x: torch.Tensor):
        self.kind = kind
        self.center = self._raw(train_x).mean(0)

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "points":
            return x.float()
        thumb = torch.nn.functional.adaptive_avg_pool2d(x.float(), THUMBNAIL)
        return thumb.flatten(1)

    @property
    def dim(self) -> int:
        return self.center.numel() if self.kind == "image" else 2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = self._raw(x) - self.center.to(x.device)
        return torch.nn.functional.normalize(v, dim=1)

    def classes(self, x: torch.Tensor) -> torch.Tensor:
        """LongTensor [N]: the angular sector of each point about the training mean."""
        v = self._raw(x) - self.center.to(x.device)
        angle = torch.atan2(v[:, 1], v[:, 0])
        return torch.round(angle / (2 * math.pi / SECTORS)).long() % SECTORS

    def adherence(self, samples: torch.Tensor, conditions: torch.Tensor) -> float:
        """Mean cos(condition asked for, condition of the sample), in [-1, 1], higher is better."""
        return float((self(samples) * conditions.to(samples.device)).sum(1).mean())


def per_condition_w2(samples: torch.Tensor, real: torch.Tensor, classes: torch.Tensor,
                     w2_distance, min_count: int = 2) -> float:
    """Mean over condition classes of W2(samples generated for the class, real of the class):
    sample i was generated for real[i]'s condition, so classes index both. Classes with fewer
    than min_count points are left out (NaN when all are)."""
    values = []
    for c in classes.unique().tolist():
        sel = classes == c
        if int(sel.sum()) >= min_count:
            values.append(w2_distance(samples[sel], real[sel]))
    return float(sum(values) / len(values)) if values else math.nan
