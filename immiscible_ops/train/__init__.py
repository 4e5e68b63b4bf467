"""Reference DDPM trainer with immiscible noise coupling (needs the [train] extra: diffusers,
scikit-learn, matplotlib, tqdm). Run `python -m immiscible_ops.train --help`."""

from immiscible_ops.train.trainer import Config, train

__all__ = ["Config", "train"]
