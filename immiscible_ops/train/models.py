"""Denoisers (a diffusers UNet for images, an MLP for points) and the diffusers schedulers,
behind one call signature: model(x_t, t, labels) -> predicted noise."""

import math
from typing import Optional, Sequence

import torch
from torch import nn

INSTALL_HINT = "pip install immiscible_ops[train]"


def require_diffusers():
    """The diffusers module, or an ImportError that says how to get it."""
    try:
        import diffusers
    except ImportError as e:
        raise ImportError(f"training needs diffusers (UNet2DModel, DDPM/DDIM schedulers): {INSTALL_HINT}") from e
    return diffusers


class UNetDenoiser(nn.Module):
    """diffusers UNet2DModel with a class embedding when num_classes > 0, or a linear projection
    of a continuous condition [B, condition_dim] onto the time embedding."""

    def __init__(self, channels: int, height: int, width: int, widths: Sequence[int] = (32, 64),
                 layers_per_block: int = 1, num_classes: int = 0, condition_dim: int = 0):
        super().__init__()
        diffusers = require_diffusers()
        levels = len(widths)
        factor = 2 ** (levels - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"image size {height}x{width} is not divisible by {factor}, which a UNet with "
                f"{levels} levels (--unet-widths {','.join(map(str, widths))}) needs; pass --image-size "
                "to resize or use fewer levels")
        groups = math.gcd(8, *widths)
        self.unet = diffusers.UNet2DModel(
            sample_size=(height, width), in_channels=channels, out_channels=channels,
            block_out_channels=tuple(widths), layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=groups, num_class_embeds=num_classes or None,
            class_embed_type="identity" if condition_dim else None)
        self.num_classes = num_classes
        # The UNet adds its class embedding to the time embedding (4 x the first width).
        self.condition = nn.Linear(condition_dim, 4 * widths[0]) if condition_dim else None

    def forward(self, x, t, labels: Optional[torch.Tensor] = None):
        if self.condition is not None:
            return self.unet(x, t, class_labels=self.condition(labels)).sample
        return self.unet(x, t, class_labels=labels if self.num_classes else None).sample


class MLPDenoiser(nn.Module):
    """Residual MLP on [B, D] points with a sinusoidal time embedding (and a class embedding, or a
    linear projection of a continuous condition [B, condition_dim])."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, num_classes: int = 0,
                 condition_dim: int = 0):
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Linear(dim, hidden)
        self.time = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label = nn.Embedding(num_classes, hidden) if num_classes else None
        self.condition = nn.Linear(condition_dim, hidden) if condition_dim else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(),
                          nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        half = self.hidden // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        angles = t.float().unsqueeze(1) * freqs
        return torch.cat([angles.sin(), angles.cos()], 1)

    def forward(self, x, t, labels: Optional[torch.Tensor] = None):
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        h = self.inp(x) + self.time(self.embed_time(t))
        if self.label is not None and labels is not None:
            h = h + self.label(labels)
        if self.condition is not None:
            h = h + self.condition(labels)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def build_model(kind: str, sample_shape, num_classes: int, *, unet_widths=(32, 64),
                layers_per_block: int = 1, mlp_hidden: int = 128, mlp_depth: int = 3,
                condition_dim: int = 0) -> nn.Module:
    """UNet for kind "image" (sample_shape [C, H, W]), MLP for "points" ([D]); condition_dim > 0:
    the model's third argument is a float condition [B, condition_dim] instead of labels."""
    if kind == "image":
        c, h, w = sample_shape
        return UNetDenoiser(c, h, w, unet_widths, layers_per_block, num_classes, condition_dim)
    return MLPDenoiser(sample_shape[0], mlp_hidden, mlp_depth, num_classes, condition_dim)


def build_schedulers(num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2"):
    """(DDPMScheduler for training, DDIMScheduler for sampling) sharing one beta schedule."""
    diffusers = require_diffusers()
    ddpm = diffusers.DDPMScheduler(num_train_timesteps=num_train_timesteps,
                                   beta_schedule=beta_schedule, clip_sample=False)
    ddim = diffusers.DDIMScheduler.from_config(ddpm.config)
    return ddpm, ddim


@torch.no_grad()
def ddim_sample(model: nn.Module, ddim, shape, *, steps: int, generator: torch.Generator,
                device, labels: Optional[torch.Tensor] = None, clip: Optional[float] = None):
    """Deterministic (eta=0) DDIM samples [N, ...] from noise drawn with generator."""
    x = torch.randn(shape, generator=generator, device=device)
    ddim.set_timesteps(steps, device=device)
    for t in ddim.timesteps:
        eps = model(x, t.expand(shape[0]).to(device), labels)
        x = ddim.step(eps, t, x, eta=0.0).prev_sample
    return x.clamp(-clip, clip) if clip is not None else x
