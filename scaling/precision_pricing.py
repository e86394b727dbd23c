"""What a training precision costs in loss, as the planner prices it: the law a plan at one precision ranks with.

A law with a precision section (scaling/precision_law.py) prices a profile's precision (its compute dtype and the
integer bits of quantised training) either as a factor on N (Kumar et al.'s N_eff: `profile_penalty`, applied as the
Chinchilla law with A scaled, `law_at_precision`) or, in the additive form, as the loss quantised training adds
(`QuantisedLaw`, `law_with_training_penalty`). `law_at_profile` does both for one profile: `make_plan` calls it, so a
plan with one quantised profile and a plan per profile (scaling/precision_plan.py) price the bits alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.points import ArrayLike
from smallest_loss.scaling.precision_law import KINDS, penalty_strength
from smallest_loss.scaling.precision_law import precision_penalty as law_penalty
from smallest_loss.timing.profile import DeviceProfile

# FP8 training (model.dtype = "float8") rounds the matmuls' inputs, weights and activations, to 8-bit floats; the
# precision law (fitted on integer widths) prices it as 8 bits for both, keys and values unquantised.
FP8_BITS = {"weights": 8, "activations": 8}


def training_bits(dtype: str, bits: dict[str, int] | None = None) -> dict[str, int]:
    """The bits of each quantised kind of tensor ({"weights", "activations", "kv"}) training at `dtype` with the
    integer `bits` of quantised training; float32 and bfloat16 compute alone quantise nothing."""
    return {**(FP8_BITS if dtype == "float8" else {}), **dict(bits or {})}


def profile_penalty(law_file: LawFile, dtype: str, bits: dict[str, int] | None = None) -> float:
    """The factor on N (N_eff / N, Kumar et al. 2025) of training at `dtype` with `bits` ({"weights": 4, ...})
    under the law's precision section (scaling/precision_law.py); 1.0 when the law has none."""
    b = training_bits(dtype, bits)
    factor = float(law_penalty(law_file, b.get("weights"), b.get("activations"), b.get("kv")))
    if not 0.0 < factor <= 1.0:
        raise UserError(f"the law's precision section gives a factor {factor} on N at {dtype}; expected (0, 1]")
    return factor


def law_at_precision(law_file: LawFile, factor: float) -> LawFile:
    """The law of training where N counts as `factor` N: A N_eff^-alpha = (A factor^-alpha) N^-alpha, so the
    Chinchilla law with A scaled (its bootstrap samples each by their own alpha), and every planner path (ranking,
    intervals, edges) prices the precision's loss. A factor of 1 returns the law file unchanged."""
    if factor == 1.0:
        return law_file
    law = law_file.law
    if not isinstance(law, ChinchillaLaw):
        raise UserError("a precision penalty needs a Chinchilla law (fit --form precision)")
    samples = law_file.samples
    if samples is not None and "A" in samples and "alpha" in samples:
        samples = {**samples, "A": np.asarray(samples["A"]) * factor ** -np.asarray(samples["alpha"])}
    scaled = dataclasses.replace(law, A=law.A * factor**-law.alpha)
    return dataclasses.replace(law_file, law=scaled, samples=samples, precision=None)


@dataclass(frozen=True)
class QuantisedLaw(ChinchillaLaw):
    """A Chinchilla law plus the additive precision form's penalty at one training precision:
    L = E + A N^-alpha + B D^-beta + k D^gamma_D / N^gamma_N, k = C sum_k exp(-P_k / gamma) at that precision's
    bits (scaling/precision_law.py). Its compute-optimal allocation is found numerically: in log N at fixed C every
    term is an exponential, so the loss is convex and its slope has one zero."""

    k: float
    gamma_D: float
    gamma_N: float

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
        out = np.asarray(super().loss(N, D)) + self.k * D**self.gamma_D / N**self.gamma_N
        return float(out) if np.ndim(out) == 0 else out

    def optimal_allocation(self, C: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """(N_opt, D_opt) minimising the loss under C = 6ND: bisection on the slope in log N, from a bracket of
        ten decades either side of the Chinchilla optimum."""
        N0, _ = ChinchillaLaw.optimal_allocation(self, C)
        lo, hi = np.log(np.asarray(N0, np.float64)) - 23.0, np.log(np.asarray(N0, np.float64)) + 23.0
        logc = np.log(np.asarray(C, np.float64) / 6.0)
        for _ in range(80):
            x = (lo + hi) / 2
            logD = logc - x
            penalty = self.k * np.exp(self.gamma_D * logD - self.gamma_N * x)
            slope = (-self.alpha * self.A * np.exp(-self.alpha * x) + self.beta * self.B * np.exp(-self.beta * logD)
                     - (self.gamma_D + self.gamma_N) * penalty)  # fmt: skip
            lo, hi = np.where(slope > 0, lo, x), np.where(slope > 0, x, hi)
        N = np.exp((lo + hi) / 2)
        D = np.exp(logc) / N
        return (float(N), float(D)) if N.ndim == 0 else (N, D)


def law_with_training_penalty(law_file: LawFile, dtype: str, bits: dict[str, int] | None = None) -> LawFile:
    """The law of training at `dtype` with `bits` under an additive precision section: a `QuantisedLaw` whose
    penalty strength is that precision's, with each bootstrap sample's own (`penalty_k`, ... in the samples, which
    the intervals read). Any other law file, and unquantised training, come back unchanged."""
    precision = getattr(law_file, "precision", None)
    b = training_bits(dtype, bits)
    if precision is None or precision.penalty is None or not b:
        return law_file
    kinds = (b.get("weights"), b.get("activations"), b.get("kv"))
    strength = float(precision.strength(*kinds))
    if strength == 0.0:
        return law_file
    law, pen = law_file.law, precision.penalty
    quantised = QuantisedLaw(law.E, law.A, law.B, law.alpha, law.beta, pen.C * strength, pen.gamma_D, pen.gamma_N)
    samples, draws = law_file.samples, precision.samples or {}
    if samples is not None and all(f"penalty_{k}" in draws for k in ("C", "gamma_D", "gamma_N")):
        k = np.asarray(draws["penalty_C"], float) * penalty_strength(kinds, [draws.get(f"gamma_{c}") for c in KINDS])
        samples = {**samples, "penalty_k": k, **{f"penalty_{c}": draws[f"penalty_{c}"] for c in ("gamma_D", "gamma_N")}}
    return dataclasses.replace(law_file, law=quantised, samples=samples, precision=None)


def law_at_profile(law_file: LawFile, profile: DeviceProfile | None) -> LawFile:
    """The law a plan with `profile` ranks by: its precision priced under the law's precision section (a factor on
    N, or the additive penalty). Unchanged without a profile or a precision section, and for unquantised training."""
    if profile is None or getattr(law_file, "precision", None) is None:
        return law_file
    priced = law_with_training_penalty(law_file, profile.dtype, profile.bits)
    return law_at_precision(priced, profile_penalty(law_file, profile.dtype, profile.bits))
