"""immiscible_noise: Gaussian noise already coupled to a batch, the one line a training loop needs."""

from typing import Optional

import torch

from immiscible_ops.ops import assign

METHODS = ("assign", "none")


def immiscible_noise(x: torch.Tensor, *, method: str = "assign",
                     generator: Optional[torch.Generator] = None,
                     groups: Optional[torch.Tensor] = None, **assign_kwargs) -> torch.Tensor:
    """Returns noise shaped and typed like x [B, ...].

    method "assign": B standard-normal draws permuted so that noise[i] is x[i]'s partner in the
    minimum-distance assignment (keyword arguments go to `assign`); "none": plain noise.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if method == "none":
        return noise
    return noise[assign(x, noise, groups=groups, **assign_kwargs)]
