"""Diagnostic for the consistency experiment on the 8 Gaussians: does 2-step sampling of a model
trained with coupled noise lose because the sampler re-noises with independent noise?

Loads the EMA weights of finished gmm consistency runs (benchmarks/training_efficiency.py
--objectives consistency --datasets gmm ...), samples 1 step as the evaluation does, then takes the
second step twice: re-noised at iCT's 2-step level with fresh independent noise (the sampler) and
with noise assigned to the 1-step samples by immiscible_noise(method="assign"). Prints exact W2 to
the held-out points, per coupling (mean and the three seeds).

    python benchmarks/consistency_renoise.py runs/ct_gmm_digits
"""

import math
import sys
from pathlib import Path

import torch

from immiscible_ops.noise import immiscible_noise
from immiscible_ops.train import metrics, models, objectives
from immiscible_ops.train.trainer import Config, _load_data


def main(root: Path, seeds=(0, 1, 2)) -> int:
    torch.set_num_threads(1)
    for coupling in ("none", "assign", "knn", "flip"):
        rows = []
        for seed in seeds:
            ck = torch.load(root / f"gmm-consistency-{coupling}-s{seed}" / "checkpoint.pt", weights_only=False)
            cfg = Config(**{k: v for k, v in ck["full_config"].items() if k in Config.__dataclass_fields__})
            _, test = _load_data(cfg)
            net = models.build_model("points", (2,), 0, mlp_hidden=cfg.mlp_hidden, mlp_depth=cfg.mlp_depth)
            net.load_state_dict(ck["ema"])
            net.eval()
            o = ck["objective"]
            ct = objectives.Consistency(o["sigma_data"], o["total_steps"], o["s0"], o["s1"])
            real = test.x[:cfg.eval_samples]
            with torch.no_grad():
                # The evaluation's own starting noise, so w2@1 reproduces the logged value.
                x1 = ct.sample(net, real.shape, steps=1, generator=torch.Generator().manual_seed(cfg.seed + 12345),
                               device="cpu")
                tau = ct.sample_sigmas(2)[1]
                row = {"w2@1": metrics.w2_distance(x1, real)}
                for name, method in (("independent", "none"), ("assigned", "assign")):
                    z = immiscible_noise(x1, method=method, generator=torch.Generator().manual_seed(7 + seed))
                    x = x1 + math.sqrt(tau ** 2 - ct.sigma_min ** 2) * z
                    row[f"w2@2, {name} re-noise"] = metrics.w2_distance(
                        ct.denoise(net, x, torch.full((x.shape[0],), tau)), real)
            rows.append(row)
        cells = ", ".join(f"{k} {sum(r[k] for r in rows) / len(rows):.3f} ({' / '.join(f'{r[k]:.3f}' for r in rows)})"
                          for k in rows[0])
        print(f"{coupling}: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/experiment")))
