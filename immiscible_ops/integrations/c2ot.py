"""C2OT's condition-aware minibatch OT sampler with this package's solver on the tensors' device.

    from immiscible_ops.integrations.c2ot import OTConditionalPlanSampler
    sampler = OTConditionalPlanSampler(condition_weight=100.0, target_r=0.2)   # C2OT's arguments
    x0, x1, y0, y1 = sampler.sample_plan_with_labels(x0, x1, y, y)

What it keeps from C2OT (Cheng & Schwing, "The Curse of Conditions"):
  * the cost: M = ||x0_i - x1_j||^2 ("l2_squared", default) or ||.|| ("l2") on the flattened
    batches, plus w * C with C = 1 - cos(y0_i, y1_j) ("cosine", default) or ||y0_i - y1_j||^2
    ("l2_squared"), in float32;
  * what comes back: (x0, x1[j], y0, y1[j]) for the optimal permutation j: the prior side (x0,
    y0) keeps its order, the data side and its conditions are permuted together;
  * target_r: w is chosen so that r = mean over (i, j) of [M + w * C <= M[j, j]] (pairs at most
    as costly as data j's independent pair) is target_r, 0 when even w = 0 gives less than
    target_r, at most 1e8; after each call condition_weight holds the w used (a float);
  * condition-aware when condition_weight is nonzero or target_r is given; plain OT otherwise.

What differs:
  * w is found exactly, as the largest w whose r is still >= target_r, with one kthvalue on the
    device (immiscible_ops.ops.condition_weight_for_r), where C2OT doubles and bisects on the host:
    max_num_iter and target_r_tol are accepted for C2OT's signature and not needed;
  * C2OT passes the w found as the next call's starting guess and turns the condition cost off
    for good once a search returns 0; here every call with target_r searches afresh;
  * the solve runs on the inputs' device (the CUDA auction on GPU tensors, within 1e-6 of the
    optimum; exact on the CPU) instead of scipy on the host; inputs are never modified (C2OT
    normalizes the caller's condition tensors in place for the cosine cost).
"""

from typing import Optional

import torch

from immiscible_ops import _checks, ops

X_NORMS = _checks.C2OT_X_NORMS
CONDITION_NORMS = _checks.C2OT_CONDITION_NORMS


class OTConditionalPlanSampler:
    """C2OT's sampler (same constructor, same sample_plan_with_labels); solver: "auto" (the
    inputs' device) or "exact" (this package's CPU solver)."""

    def __init__(self, condition_weight: Optional[float] = None, target_r: Optional[float] = None,
                 max_num_iter: int = 10, target_r_tol: float = 1e-3, x_norm: str = "l2_squared",
                 condition_norm: str = "cosine", *, solver: str = "auto"):
        _checks.check_c2ot_sampler(condition_weight, target_r, max_num_iter, target_r_tol, x_norm,
                                   condition_norm, solver)
        self.condition_weight = condition_weight
        self.target_r = target_r
        self.max_num_iter = max_num_iter
        self.target_r_tol = target_r_tol
        self.x_norm = x_norm
        self.condition_norm = condition_norm
        self.solver = solver

    @property
    def condition_aware(self) -> bool:
        return bool(self.condition_weight) or self.target_r is not None

    def get_x_cost_matrix(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """x0 [N, ...], x1 [N, ...] -> M [N, N], M[i, j] the cost of pairing x0_i with x1_j."""
        return ops.pairwise_distance(x0.reshape(x0.shape[0], -1), x1.reshape(x1.shape[0], -1),
                                     metric=X_NORMS[self.x_norm], precision="fp32")

    def get_condition_cost_matrix(self, y0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
        """y0 [N, ...], y1 [N, ...] -> C [N, N], C[i, j] the distance of y0_i to y1_j."""
        return ops.condition_distance(y0, y1, CONDITION_NORMS[self.condition_norm])

    @torch.no_grad()
    def sample_plan_with_labels(self, x0: torch.Tensor, x1: torch.Tensor,
                                y0: Optional[torch.Tensor], y1: Optional[torch.Tensor]):
        """prior x0 [N, ...], data x1 [N, ...], their conditions y0, y1 [N, ...] (usually the
        same tensor) -> (x0, x1[j], y0, y1[j]) for the optimal permutation j."""
        _checks.check_c2ot_plan(x0, x1, y0, y1, self.condition_aware)
        # Rows are the data, columns the prior: C2OT's r compares entry (i, j) with data j's
        # independent pair M[j, j], which is the row's diagonal in this orientation.
        dist = self.get_x_cost_matrix(x0, x1).T
        cost = dist
        if self.condition_aware:
            cond = self.get_condition_cost_matrix(y0, y1).T
            # Equal conditions are at distance 0, not at float32 rounding noise (1 - cos(c, c) =
            # +-6e-8), which would decide by its sign whether target_r counts the pair.
            same = (y1.reshape(y1.shape[0], -1) == y0.reshape(y0.shape[0], -1)).all(1)
            cond.diagonal().masked_fill_(same, 0.0)
            if self.target_r is not None:
                w = ops.condition_weight_for_r(dist, cond, self.target_r)
            else:
                w = torch.tensor(float(self.condition_weight), device=dist.device)
            cost = dist + w * cond
        data_to_prior = ops.linear_assignment(cost, solver=self.solver)
        j = torch.empty_like(data_to_prior)
        j[data_to_prior] = torch.arange(j.shape[0], device=j.device)
        if self.target_r is not None:
            self.condition_weight = float(w)  # after the solve, which has synchronized already
        return x0, x1[j], y0, None if y1 is None else y1[j]
