"""torchcfm's minibatch-OT sampler with the exact plan from this package's solver.

    from immiscible_ops.integrations.torchcfm import OTPlanSampler
    sampler = OTPlanSampler(method="exact")                # torchcfm's constructor and methods
    x0, x1 = sampler.sample_plan(x0, x1)

    from immiscible_ops.integrations.torchcfm import ExactOptimalTransportConditionalFlowMatcher
    FM = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)   # torchcfm's class, our plan
    # or, on a flow matcher you already have:  FM.ot_sampler = OTPlanSampler("exact")

What method="exact" does, against torchcfm's (POT's ot.emd on the CPU):
  * the cost is torchcfm's: torch.cdist(x0, x1) ** 2 on the flattened batches (divided by its max
    with normalize_cost), in the inputs' dtype; for equal batch sizes the uniform-marginal plan
    is a permutation matrix with entries 1/B, found by linear_assignment on that cost (exact,
    float64 inside). It is ot.emd's plan whenever ot.emd converges and the optimum is unique, and
    optimal when ot.emd stops at its iteration cap (it does at B=2048, docs/PERF.md);
  * unequal batch sizes have no permutation plan: ot.emd (POT) solves them, as in torchcfm;
  * sampling is torchcfm's, on numpy's global random state: sample_plan draws batch_size pairs
    from the plan, WITH replacement by default (replace=True), so on a permutation plan some
    pairs repeat and others drop out, exactly as in torchcfm; replace=False returns every pair
    once, in random order. With np.random seeded alike, the pairs are torchcfm's (for a power-of-two
    B straight from the permutation, else through the dense plan as torchcfm does);
  * a cost the solver rejects (NaN inputs) gives the uniform plan and, with warn, torchcfm's
    warning; num_threads is accepted and unused (one problem, solved on one thread);
  * solver="exact" (default) solves on the CPU, as torchcfm does; "auto" solves on the inputs'
    device (the CUDA auction on GPU inputs: within 1e-6 of the optimum, no host round trip for
    the cost).
Methods "sinkhorn", "unbalanced" and "partial" are POT's entropic solvers: their plans come from
torchcfm's own OTPlanSampler (an ImportError says how to install it when it is missing); sampling
is the same code either way.
"""

import warnings
from typing import Optional, Union

import numpy as np
import torch

from immiscible_ops import _checks, ops

METHODS = _checks.OT_METHODS
_INSTALL = "pip install --no-deps torchcfm && pip install pot"


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1) if x.dim() > 2 else x


class OTPlanSampler:
    """torchcfm.optimal_transport.OTPlanSampler's interface; method="exact" is solved by
    immiscible_ops.linear_assignment (module docstring)."""

    def __init__(self, method: str, reg: float = 0.05, reg_m: float = 1.0,
                 normalize_cost: bool = False, num_threads: Union[int, str] = 1,
                 warn: bool = True, *, solver: str = "exact") -> None:
        _checks.check_choice("method", method, METHODS)
        _checks.check_choice("solver", solver, _checks.SOLVERS)  # linear_assignment's solvers
        self.method = method
        self.reg = reg
        self.reg_m = reg_m
        self.normalize_cost = normalize_cost
        self.num_threads = num_threads
        self.warn = warn
        self.solver = solver
        self._entropic = None
        if method != "exact":
            try:
                from torchcfm.optimal_transport import OTPlanSampler as TorchCFMSampler
            except ImportError as e:
                raise _checks.missing_dependency(
                    f"method {method!r} is one of POT's entropic solvers, which come from "
                    "torchcfm's own sampler (or use method='exact')", _INSTALL) from e
            self._entropic = TorchCFMSampler(method, reg=reg, reg_m=reg_m,
                                             normalize_cost=normalize_cost,
                                             num_threads=num_threads, warn=warn)

    # -----------------------------------------------------------------------------------------
    # plans

    def cost(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """x0 [n0, *dim], x1 [n1, *dim] -> [n0, n1] squared Euclidean cost, torchcfm's formula."""
        m = torch.cdist(_flat(x0.detach()), _flat(x1.detach())) ** 2
        if self.normalize_cost:
            m = m / m.max()
        return m

    def assignment(self, x0: torch.Tensor, x1: torch.Tensor) -> Optional[np.ndarray]:
        """Equal batch sizes B: the optimal permutation (x0[i] goes with x1[perm[i]]) as an int64
        array [B], or None when the cost is rejected (NaN, or no finite assignment)."""
        _checks.check_equal_batches(x0, x1)
        m = self.cost(x0, x1)
        if self.solver == "exact":
            m = m.cpu()
        perm = ops.linear_assignment(m, solver=self.solver, validate=False).cpu().numpy()
        return None if perm.size and perm[0] < 0 else perm

    def get_map(self, x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
        """x0 [n0, *dim], x1 [n1, *dim] -> numpy float64 [n0, n1]: the OT plan (uniform
        marginals, squared Euclidean cost); a permutation matrix / B for equal sizes."""
        if self._entropic is not None:
            return self._entropic.get_map(x0, x1)
        n0, n1 = x0.shape[0], x1.shape[0]
        if n0 != n1:
            return self._emd(x0, x1)
        perm = self.assignment(x0, x1)
        if perm is None:
            return self._uniform(n0, n1)
        plan = np.zeros((n0, n1))
        plan[np.arange(n0), perm] = np.ones(n0) / n0  # ot.unif's masses, so ot.emd's entries
        return plan

    def _emd(self, x0, x1) -> np.ndarray:
        try:
            import ot
        except ImportError as e:
            raise _checks.missing_dependency(
                f"batches of {x0.shape[0]} and {x1.shape[0]} have no permutation plan; POT's "
                "ot.emd solves them", "pip install pot") from e
        m = self.cost(x0, x1).cpu().numpy()
        plan = ot.emd(ot.unif(x0.shape[0]), ot.unif(x1.shape[0]), m, numThreads=self.num_threads)
        if np.abs(plan.sum()) < 1e-8 or not np.all(np.isfinite(plan)):
            return self._uniform(*plan.shape)
        return plan

    def _uniform(self, n0: int, n1: int) -> np.ndarray:
        if self.warn:
            warnings.warn("Numerical errors in OT plan, reverting to uniform plan.", stacklevel=2)
        return np.ones((n0, n1)) / (n0 * n1)

    # -----------------------------------------------------------------------------------------
    # sampling (numpy's global random state, as torchcfm)

    def sample_map(self, pi: np.ndarray, batch_size: int, replace: bool = True):
        """pi [n0, n1] plan -> (i, j) int64 arrays [batch_size]: pairs drawn from pi."""
        p = pi.flatten()
        p = p / p.sum()
        choices = np.random.choice(pi.shape[0] * pi.shape[1], p=p, size=batch_size,
                                   replace=replace)
        return np.divmod(choices, pi.shape[1])

    def _sample_indices(self, x0, x1, replace: bool):
        b = x0.shape[0]
        if self._entropic is None and replace and b == x1.shape[0] and b and b & (b - 1) == 0:
            perm = self.assignment(x0, x1)
            if perm is not None:
                # With B a power of two every sum of masses 1/B is exact, so np.random.choice
                # over the dense plan (torchcfm's sample_map) reduces to this: the same B
                # uniforms, the same pairs, without a B x B plan.
                k = np.searchsorted(np.arange(1, b + 1) / b, np.random.random_sample(b), side="right")
                return k, perm[k]
        return self.sample_map(self.get_map(x0, x1), b, replace=replace)

    def sample_plan(self, x0: torch.Tensor, x1: torch.Tensor, replace: bool = True):
        """(x0[i], x1[j]) for batch_size = len(x0) pairs (i, j) drawn from the plan."""
        i, j = self._sample_indices(x0, x1, replace)
        return x0[i], x1[j]

    def sample_plan_with_labels(self, x0, x1, y0=None, y1=None, replace: bool = True):
        """(x0[i], x1[j], y0[i], y1[j]) as sample_plan; a label batch that is None stays None."""
        i, j = self._sample_indices(x0, x1, replace)
        return (x0[i], x1[j], y0[i] if y0 is not None else None, y1[j] if y1 is not None else None)

    def sample_plan_with_scipy(self, x0: torch.Tensor, x1: torch.Tensor):
        """(x0, x1[perm]): every pair of the optimal permutation once, x0's order kept (torchcfm's
        method of this name, which returns the batches flattened; here they keep their shape)."""
        perm = self.assignment(x0, x1)
        if perm is None:
            raise ValueError("x0: the cost matrix has NaN entries or no finite assignment")
        return x0, x1[torch.as_tensor(perm, device=x1.device)]

    def sample_trajectory(self, X: torch.Tensor) -> np.ndarray:
        """X [bs, times, *dim] -> numpy [bs, times, *dim]: trajectories that follow the plans
        between consecutive times (one draw per row and step, as torchcfm)."""
        indices = [np.arange(X.shape[0])]
        for t in range(X.shape[1] - 1):
            x0, x1 = X[:, t], X[:, t + 1]
            perm = (self.assignment(x0, x1) if self._entropic is None
                    and x0.shape[0] == x1.shape[0] else None)
            if perm is not None:
                # One-hot rows: choice() returns the row's column, after one uniform each.
                np.random.random_sample(len(indices[-1]))
                indices.append(perm[indices[-1]])
                continue
            pi = self.get_map(x0, x1)
            indices.append(np.array([np.random.choice(pi.shape[1], p=pi[i] / pi[i].sum())
                                     for i in indices[-1]]))
        return np.stack([X[:, t][indices[t]] for t in range(X.shape[1])], axis=1)


def _flow_matchers() -> dict:
    try:
        from torchcfm import conditional_flow_matching as cfm
    except ImportError as e:
        raise _checks.missing_dependency(
            "the flow matchers subclass torchcfm's (or use OTPlanSampler on its own)",
            _INSTALL) from e

    class ExactOptimalTransportConditionalFlowMatcher(cfm.ExactOptimalTransportConditionalFlowMatcher):
        """torchcfm's OT-CFM (sigma as there), its minibatch plan from immiscible_ops."""

        def __init__(self, sigma: Union[float, int] = 0.0):
            super().__init__(sigma)
            self.ot_sampler = OTPlanSampler(method="exact")

    class SchrodingerBridgeConditionalFlowMatcher(cfm.SchrodingerBridgeConditionalFlowMatcher):
        """torchcfm's SB-CFM; ot_method="exact" plans from immiscible_ops, others from torchcfm."""

        def __init__(self, sigma: Union[float, int] = 1.0, ot_method: str = "exact"):
            super().__init__(sigma, ot_method)
            self.ot_sampler = OTPlanSampler(method=ot_method, reg=2 * self.sigma**2)

    return {c.__name__: c for c in (ExactOptimalTransportConditionalFlowMatcher,
                                    SchrodingerBridgeConditionalFlowMatcher)}


_FLOW_MATCHERS = ("ExactOptimalTransportConditionalFlowMatcher",
                  "SchrodingerBridgeConditionalFlowMatcher")


def __getattr__(name):
    # The flow matchers exist only where torchcfm is installed: built on first access.
    if name in _FLOW_MATCHERS:
        classes = _flow_matchers()
        globals().update(classes)
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
