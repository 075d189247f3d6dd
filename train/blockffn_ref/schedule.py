"""Schedules: the adaptive lambda_cs factor (SPEC §6.4) and the WSD learning rate.

Steps are counted from 1 (step s is the s-th optimizer update).

Adaptive lambda_cs (:class:`AdaptiveLambda`)
--------------------------------------------
* Steps 1 .. n_stable use lambda0.
* The CS loss of every step is recorded with :meth:`AdaptiveLambda.observe`.  The
  steps are grouped into windows of n_adjust steps aligned to multiples of
  n_adjust: window j holds steps (j-1)*n_adjust+1 .. j*n_adjust.
* At every step s that is a multiple of n_adjust with s >= n_stable (and a
  previous window to compare with):

      gamma  = mean(L_cs over the window ending at s) / mean(L_cs over the window before)
      ratio  = gamma                      if gamma <= 1
               max(gamma_min, gamma)      otherwise        (gamma_min = 1.025)
      target = min(ratio * lambda(s), max_factor * lambda0)  (max_factor = 4)

  and lambda moves linearly from lambda(s) to target over the next n_adjust
  steps: lambda(s + j) = lambda(s) + (target - lambda(s)) * j / n_adjust,
  j = 1 .. n_adjust, so the target is reached exactly at the next decision.

This is the behaviour of the original code (cap at 4*lambda0 and the linear ramp
are not in the paper's Eq. 7, SPEC §6.4/§11.3).

WSD learning rate (:func:`wsd_lr`)
----------------------------------
With N total steps, W = round(warmup_frac*N) warm-up steps and
D = round(decay_frac*N) decay steps::

    s <= W:             lr = peak * s / W                  (linear warm-up)
    W < s <= N - D:     lr = peak                          (stable)
    s >  N - D:         q = (s - (N - D)) / D  in (0, 1]   (decay progress)
                        lr = peak * (m + (1 - m) * shape(q)),  m = min_lr_ratio
                        shape: linear 1-q | cosine (1+cos(pi q))/2 | sqrt 1-sqrt(q)
                               | exp: lr = peak * m**q
"""

from __future__ import annotations

import math
from typing import List, Optional


class AdaptiveLambda:
    """The adaptive lambda_cs scheduler.  Use :meth:`value` (lambda for step s,
    1-based) before the step and :meth:`observe` (the step's CS loss) after it."""

    def __init__(self, lambda0: float, n_stable: int, n_adjust: int, gamma_min: float = 1.025,
                 max_factor: float = 4.0):
        if n_adjust < 1 or n_stable < 0:
            raise ValueError("n_adjust must be >= 1 and n_stable >= 0")
        self.lambda0 = float(lambda0)
        self.n_stable = int(n_stable)
        self.n_adjust = int(n_adjust)
        self.gamma_min = float(gamma_min)
        self.max_factor = float(max_factor)
        # current linear ramp: lambda(s) = start + (target - start) * (s - s0) / n_adjust, capped at target
        self.ramp_start = self.lambda0
        self.ramp_target = self.lambda0
        self.ramp_step = 0  # s0
        self.window: List[float] = []  # CS losses of the current window
        self.prev_mean: Optional[float] = None  # mean CS loss of the previous window
        self.last_step = 0
        self.history: List[dict] = []  # one entry per decision (for logs / tests)

    def value(self, step: int) -> float:
        """lambda_cs for (1-based) step ``step`` (any step after the last observed one)."""
        j = step - self.ramp_step
        if j >= self.n_adjust or self.ramp_start == self.ramp_target:
            return self.ramp_target
        return self.ramp_start + (self.ramp_target - self.ramp_start) * max(j, 0) / self.n_adjust

    def observe(self, step: int, cs_loss: float) -> None:
        """Record the CS loss of step ``step`` (steps must come in order 1, 2, ...)."""
        if step != self.last_step + 1:
            raise ValueError(f"expected step {self.last_step + 1}, got {step}")
        self.last_step = step
        self.window.append(float(cs_loss))
        if step % self.n_adjust != 0:
            return
        cur_mean = sum(self.window) / len(self.window)
        if step >= self.n_stable and self.prev_mean is not None and self.prev_mean > 0:
            lam = self.value(step)
            gamma = cur_mean / self.prev_mean
            ratio = gamma if gamma <= 1.0 else max(self.gamma_min, gamma)
            target = min(ratio * lam, self.max_factor * self.lambda0)
            self.ramp_start, self.ramp_target, self.ramp_step = lam, target, step
            self.history.append({"step": step, "gamma": gamma, "from": lam, "to": target})
        self.prev_mean = cur_mean
        self.window = []

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "lambda0", "n_stable", "n_adjust", "gamma_min", "max_factor", "ramp_start", "ramp_target",
            "ramp_step", "window", "prev_mean", "last_step", "history")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, list(v) if isinstance(v, list) else v)


def wsd_lr(step: int, total_steps: int, peak: float, warmup_frac: float = 0.01, decay_frac: float = 0.2,
           min_lr_ratio: float = 0.0, decay_shape: str = "linear") -> float:
    """Warmup-stable-decay learning rate for (1-based) optimizer step ``step``."""
    N = int(total_steps)
    W = int(round(warmup_frac * N))
    D = int(round(decay_frac * N))
    s = int(step)
    if W > 0 and s <= W:
        return peak * s / W
    if D <= 0 or s <= N - D:
        return peak
    q = min(1.0, (s - (N - D)) / D)
    m = float(min_lr_ratio)
    if decay_shape == "linear":
        f = 1.0 - q
    elif decay_shape == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * q))
    elif decay_shape == "sqrt":
        f = 1.0 - math.sqrt(q)
    elif decay_shape == "exp":
        if m <= 0:
            raise ValueError("exp decay needs min_lr_ratio > 0")
        return peak * m ** q
    else:
        raise ValueError(f"unknown decay_shape {decay_shape!r}")
    return peak * (m + (1.0 - m) * f)
