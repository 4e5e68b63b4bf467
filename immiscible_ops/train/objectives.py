"""Training objectives beside the trainer loop: DDPM epsilon-prediction (sampled with DDIM), flow
matching on the linear path (sampled with an Euler ODE solver) and consistency training (iCT,
sampled in one or a few consistency steps). Each turns (data, noise) into a loss and samples a
model at a given number of steps; the noise is whatever the coupling chose."""

import math
from typing import Optional

import torch

from immiscible_ops.train import models

OBJECTIVES = ("ddpm", "flow", "consistency")
T_SAMPLINGS = ("uniform", "logit-normal")
# Flow time t in [0, 1] reaches the model scaled like DDPM's integer timesteps, so the same
# sinusoidal embeddings (UNet, MLP) see a comparable frequency range.
FLOW_TIME_SCALE = 1000.0


class Objective:
    """What the trainer loop sees of an objective, and all it sees:

    - loss(net, x0, noise, labels, generator, step=k): the training loss of one batch at training
      step k (0-based); `noise` is the coupled noise for x0, `generator` the run's RNG for anything
      else the objective draws. Objectives whose loss does not change over training ignore k.
    - sample(model, shape, steps=..., ...): samples at a number of function evaluations.
    - diagnostics(model, shape, steps=..., ...): extra evaluation scores (a dict, often empty).
    - state(): the settings the objective derived from the run (e.g. from the data) that a
      resumed run must reproduce; the trainer stores it in the checkpoint and compares on resume.
    """

    name = "base"

    def loss(self, net, x0, noise, labels, generator, step: int = 0) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, model, shape, *, steps, generator, device, labels=None, clip=None):
        raise NotImplementedError

    def diagnostics(self, model, shape, *, steps, generator, device, labels=None) -> dict:
        return {}

    def state(self) -> dict:
        return {}


class DDPM(Objective):
    """Epsilon-prediction at integer timesteps of a diffusers DDPMScheduler; DDIM (eta=0) sampling."""

    name = "ddpm"

    def __init__(self, train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2"):
        self.train_timesteps = train_timesteps
        self.ddpm, self.ddim = models.build_schedulers(train_timesteps, beta_schedule)

    def loss(self, net, x0, noise, labels, generator, step: int = 0):
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

    def loss(self, net, x0, noise, labels, generator, step: int = 0):
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

    def diagnostics(self, model, shape, *, steps, generator, device, labels=None) -> dict:
        return {"straightness": self.straightness(model, shape, steps=steps, generator=generator,
                                                  device=device, labels=labels)}

    @torch.no_grad()
    def straightness(self, model, shape, *, steps, generator, device, labels=None) -> float:
        """Mean over the path of |v(x_t, t) - (x1 - x0)|^2 / |x1 - x0|^2, with x0 the Euler
        endpoint from noise x1: 0 for a perfectly straight learned path."""
        x1 = torch.randn(shape, generator=generator, device=device)
        x0, vs = euler_sample(self._velocity(model, labels), x1, steps, return_path=True)
        chord = (x1 - x0).flatten(1)
        dev = torch.stack([(v.flatten(1) - chord).pow(2).sum(1) for v in vs]).mean(0)
        return float((dev / chord.pow(2).sum(1).clamp_min(1e-12)).mean())


# Improved consistency training (iCT: Song & Dhariwal, "Improved Techniques for Training
# Consistency Models", 2023). Its constants are for data in [-1, 1] with sigma_data = 0.5
# (CIFAR-10); Consistency scales every one that has the data's units by sigma_data / 0.5.
ICT_SIGMA_DATA = 0.5
ICT_SIGMA_MIN, ICT_SIGMA_MAX, ICT_RHO = 0.002, 80.0, 7.0
ICT_P_MEAN, ICT_P_STD = -1.1, 2.0  # lognormal over the noise levels of the sampled index
ICT_HUBER_C = 0.00054  # pseudo-Huber c = 0.00054 sqrt(dimension)
ICT_SIGMA_2STEP = 0.821  # iCT's intermediate noise level for two-step sampling on CIFAR-10
ICT_S0, ICT_S1 = 10, 1280  # curriculum: discretization steps at the start and at the end


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = ICT_RHO) -> torch.Tensor:
    """n noise levels [n] float64, ascending: (smin^(1/rho) + i/(n-1) (smax^(1/rho) - smin^(1/rho)))^rho."""
    if n < 2:
        raise ValueError(f"n: expected at least 2 noise levels, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (lo + ramp * (hi - lo)) ** rho
    # Exact ends: the boundary condition f(x, sigma_min) = x needs sigma equal to sigma_min.
    s[0], s[-1] = sigma_min, sigma_max
    return s


def ict_curriculum(step: int, total_steps: int, s0: int = ICT_S0, s1: int = ICT_S1) -> int:
    """iCT's N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K / (log2 floor(s1 / s0) + 1)):
    the number of noise levels at training step k (0-based) of K, doubling K/(stages) steps apart."""
    stage_len = max(1, total_steps // (int(math.log2(s1 // s0)) + 1))
    return min(s0 * 2 ** (step // stage_len), s1) + 1


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class Consistency(Objective):
    """Consistency training from scratch in iCT's form: the student f(x + sigma_{n+1} z,
    sigma_{n+1}) is pulled towards the same network, without gradient, at x + sigma_n z, with the
    SAME z (the coupled noise); f = c_skip x + c_out F(c_in x, c_noise) so that f(x, sigma_min) = x;
    pseudo-Huber distance weighted by 1 / (sigma_{n+1} - sigma_n); index n drawn from iCT's
    discretized lognormal; the number of levels doubles over training (ict_curriculum).
    Sampling: f(sigma_max z, sigma_max) at one step, iCT's multistep chain at more."""

    name = "consistency"

    def __init__(self, sigma_data: float, total_steps: int, s0: int = ICT_S0, s1: int = ICT_S1):
        if not sigma_data > 0 or not math.isfinite(sigma_data):
            raise ValueError(f"sigma_data: expected a positive number (the data's std), got {sigma_data}")
        if total_steps <= 0:
            raise ValueError(f"total_steps: expected a positive integer, got {total_steps}")
        if s0 < 1 or s1 < s0:
            raise ValueError(f"s0, s1: expected 1 <= s0 <= s1, got s0={s0}, s1={s1}")
        self.sigma_data = float(sigma_data)
        self.total_steps, self.s0, self.s1 = int(total_steps), int(s0), int(s1)
        # Noise levels live in the data's units: iCT's range, relative to sigma_data, is kept.
        self.scale = self.sigma_data / ICT_SIGMA_DATA
        self.sigma_min, self.sigma_max = ICT_SIGMA_MIN * self.scale, ICT_SIGMA_MAX * self.scale
        self.p_mean, self.p_std = ICT_P_MEAN + math.log(self.scale), ICT_P_STD
        self._grids = {}

    def state(self) -> dict:
        return {"sigma_data": self.sigma_data, "total_steps": self.total_steps, "s0": self.s0, "s1": self.s1}

    def num_levels(self, step: int) -> int:
        return ict_curriculum(step, self.total_steps, self.s0, self.s1)

    def grid(self, n: int):
        """(sigmas [n], index probabilities [n-1], weights 1/(sigma_{i+1} - sigma_i) [n-1]), float64."""
        if n not in self._grids:
            s = karras_sigmas(n, self.sigma_min, self.sigma_max)
            cdf = torch.erf((s.log() - self.p_mean) / (math.sqrt(2) * self.p_std))
            p = cdf[1:] - cdf[:-1]
            self._grids[n] = (s, p / p.sum(), 1 / (s[1:] - s[:-1]))
        return self._grids[n]

    def time_input(self, sigma: torch.Tensor) -> torch.Tensor:
        # The consistency-models code's 1000 * 0.25 log(sigma), on sigma in CIFAR-like units.
        return 250.0 * torch.log(sigma / self.scale)

    def denoise(self, net, x: torch.Tensor, sigma: torch.Tensor, labels=None) -> torch.Tensor:
        """f(x, sigma) = c_skip x + c_out F(c_in x, c_noise); sigma [B]. Exactly x at sigma_min."""
        sd2 = self.sigma_data ** 2
        d = sigma - self.sigma_min
        # c_skip = sd^2 / (d^2 + sd^2) written as 1 / (1 + (d / sd)^2): at d = 0 that is exactly 1
        # (a scalar over a tensor is computed as scalar * reciprocal, which can be 1 - 1 ulp).
        c_skip = torch.reciprocal(1 + (d / self.sigma_data) ** 2)
        c_out = d * self.sigma_data / torch.sqrt(sigma * sigma + sd2)
        c_in = torch.rsqrt(sigma * sigma + sd2)
        out = net(x * _bcast(c_in, x), self.time_input(sigma), labels)
        return _bcast(c_skip, x) * x + _bcast(c_out, x) * out

    def loss(self, net, x0, noise, labels, generator, step: int = 0):
        sig, probs, weights = self.grid(self.num_levels(step))
        i = torch.multinomial(probs.to(x0.device), x0.shape[0], replacement=True, generator=generator)
        sig = sig.to(x0.device, x0.dtype)
        s_lo, s_hi = sig[i], sig[i + 1]
        w = weights.to(x0.device, x0.dtype)[i]
        # Teacher first: a no-grad forward before the student's keeps DDP's reducer untouched.
        with torch.no_grad():
            target = self.denoise(net, x0 + _bcast(s_lo, x0) * noise, s_lo, labels)
        pred = self.denoise(net, x0 + _bcast(s_hi, x0) * noise, s_hi, labels)
        diff = (pred - target).flatten(1)
        c = ICT_HUBER_C * self.scale * math.sqrt(diff.shape[1])
        return (w * (torch.sqrt(diff.pow(2).sum(1) + c * c) - c)).mean()

    def sample_sigmas(self, steps: int) -> list:
        """Noise levels of a `steps`-evaluation chain, descending from sigma_max: iCT's two-step
        level 0.821 (scaled) at 2; at more, the rho = 7 grid from sigma_max down to that level."""
        if steps <= 0:
            raise ValueError(f"steps: expected a positive integer, got {steps}")
        last = ICT_SIGMA_2STEP * self.scale
        if steps == 1:
            return [self.sigma_max]
        return karras_sigmas(steps, last, self.sigma_max).flip(0).tolist()

    @torch.no_grad()
    def sample(self, model, shape, *, steps, generator, device, labels=None, clip=None):
        sigmas = self.sample_sigmas(steps)
        n = shape[0]
        x = self.sigma_max * torch.randn(shape, generator=generator, device=device)
        for j, sigma in enumerate(sigmas):
            if j:
                z = torch.randn(shape, generator=generator, device=device)
                x = x + math.sqrt(sigma ** 2 - self.sigma_min ** 2) * z
            x = self.denoise(model, x, torch.full((n,), sigma, device=device), labels)
            if clip is not None:
                x = x.clamp(-clip, clip)
        return x


def build_objective(name: str, *, t_sampling: str = "uniform", train_timesteps: int = 1000,
                    beta_schedule: str = "squaredcos_cap_v2", data_std: Optional[float] = None,
                    total_steps: Optional[int] = None, ct_s0: int = ICT_S0,
                    ct_s1: int = ICT_S1) -> Objective:
    """The objective `name`; consistency needs the training data's std and the curriculum's length."""
    if name == "ddpm":
        return DDPM(train_timesteps, beta_schedule)
    if name == "flow":
        return FlowMatching(t_sampling)
    if name == "consistency":
        if data_std is None or total_steps is None:
            raise ValueError("objective: consistency needs data_std and total_steps")
        return Consistency(data_std, total_steps, ct_s0, ct_s1)
    raise ValueError(f"objective: expected one of {', '.join(OBJECTIVES)}, got {name!r}")
