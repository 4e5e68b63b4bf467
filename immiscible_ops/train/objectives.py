"""Training objectives beside the trainer loop: DDPM epsilon-prediction (sampled with DDIM) and
flow matching on the linear path (sampled with an Euler ODE solver). Each turns (data, noise) into
a loss and samples a model at a given number of steps; the noise is whatever the coupling chose."""

from typing import Optional

import torch

from immiscible_ops.train import models

OBJECTIVES = ("ddpm", "flow")
T_SAMPLINGS = ("uniform", "logit-normal")
# Flow time t in [0, 1] reaches the model scaled like DDPM's integer timesteps, so the same
# sinusoidal embeddings (UNet, MLP) see a comparable frequency range.
FLOW_TIME_SCALE = 1000.0


class Objective:
    """make_xt/target/loss for training; sample(model, shape, steps) for evaluation."""

    name = "base"

    def loss(self, net, x0, noise, labels, generator) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, model, shape, *, steps, generator, device, labels=None, clip=None):
        raise NotImplementedError


class DDPM(Objective):
    """Epsilon-prediction at integer timesteps of a diffusers DDPMScheduler; DDIM (eta=0) sampling."""

    name = "ddpm"

    def __init__(self, train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2"):
        self.train_timesteps = train_timesteps
        self.ddpm, self.ddim = models.build_schedulers(train_timesteps, beta_schedule)

    def loss(self, net, x0, noise, labels, generator):
        t = torch.randint(0, self.train_timesteps, (x0.shape[0],), generator=generator, device=x0.device)
        xt = self.ddpm.add_noise(x0, noise, t)
        return torch.nn.functional.mse_loss(net(xt, t, labels), noise)

    def sample(self, model, shape, *, steps, generator, device, labels=None, clip=None):
        return models.ddim_sample(model, self.ddim, shape, steps=steps, generator=generator,
                                  device=device, labels=labels, clip=clip)


def flow_xt(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear path x_t = (1 - t) x0 + t noise, t [B] broadcast over the sample dimensions."""
    tb = t.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - tb) * x0 + tb * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Velocity d x_t / dt of the linear path: noise - x0."""
    return noise - x0


@torch.no_grad()
def euler_sample(velocity, x1: torch.Tensor, steps: int, return_path: bool = False):
    """Integrates dx/dt = velocity(x, t) from t=1 (noise x1) to t=0 with `steps` uniform Euler steps.
    With return_path, also returns the velocities evaluated at each step (for straightness)."""
    if steps <= 0:
        raise ValueError(f"steps: expected a positive integer, got {steps}")
    x = x1
    ts = torch.linspace(1.0, 0.0, steps + 1, device=x1.device)
    vs = []
    for i in range(steps):
        v = velocity(x, ts[i])
        if return_path:
            vs.append(v)
        x = x + (ts[i + 1] - ts[i]) * v
    return (x, vs) if return_path else x


class FlowMatching(Objective):
    """Rectified-flow / conditional flow matching: x_t = (1 - t) x + t noise, target noise - x."""

    name = "flow"

    def __init__(self, t_sampling: str = "uniform"):
        if t_sampling not in T_SAMPLINGS:
            raise ValueError(f"t_sampling: expected one of {', '.join(T_SAMPLINGS)}, got {t_sampling!r}")
        self.t_sampling = t_sampling

    def sample_t(self, n, generator, device):
        if self.t_sampling == "uniform":
            return torch.rand(n, generator=generator, device=device)
        # Logit-normal(0, 1) as in SD3: more weight on the middle of the path.
        return torch.sigmoid(torch.randn(n, generator=generator, device=device))

    def loss(self, net, x0, noise, labels, generator):
        t = self.sample_t(x0.shape[0], generator, x0.device)
        xt = flow_xt(x0, noise, t)
        return torch.nn.functional.mse_loss(net(xt, t * FLOW_TIME_SCALE, labels), flow_target(x0, noise))

    def _velocity(self, model, labels):
        def v(x, t):
            return model(x, (t * FLOW_TIME_SCALE).expand(x.shape[0]), labels)
        return v

    def sample(self, model, shape, *, steps, generator, device, labels=None, clip=None):
        x1 = torch.randn(shape, generator=generator, device=device)
        x = euler_sample(self._velocity(model, labels), x1, steps)
        return x.clamp(-clip, clip) if clip is not None else x

    @torch.no_grad()
    def straightness(self, model, shape, *, steps, generator, device, labels=None) -> float:
        """Mean over the path of |v(x_t, t) - (x1 - x0)|^2 / |x1 - x0|^2, with x0 the Euler
        endpoint from noise x1: 0 for a perfectly straight learned path."""
        x1 = torch.randn(shape, generator=generator, device=device)
        x0, vs = euler_sample(self._velocity(model, labels), x1, steps, return_path=True)
        chord = (x1 - x0).flatten(1)
        dev = torch.stack([(v.flatten(1) - chord).pow(2).sum(1) for v in vs]).mean(0)
        return float((dev / chord.pow(2).sum(1).clamp_min(1e-12)).mean())


def build_objective(name: str, *, t_sampling: str = "uniform", train_timesteps: int = 1000,
                    beta_schedule: str = "squaredcos_cap_v2") -> Objective:
    if name == "ddpm":
        return DDPM(train_timesteps, beta_schedule)
    if name == "flow":
        return FlowMatching(t_sampling)
    raise ValueError(f"objective: expected one of {', '.join(OBJECTIVES)}, got {name!r}")
