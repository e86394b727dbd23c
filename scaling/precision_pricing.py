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
from smallest_loss.scaling.precision_law import KINDS, UNQUANTISED_BITS, penalty_strength
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


Term = tuple[float, float, float]  # (k, gamma_D, gamma_N): a penalty k D^gamma_D / N^gamma_N


@dataclass(frozen=True)
class QuantisedLaw(ChinchillaLaw):
    """A Chinchilla law plus penalty terms k D^gamma_D / N^gamma_N: the additive precision form's at one training
    precision (k = C sum_k exp(-P_k / gamma) at its bits) and post-training quantisation's at one serving width
    (Kumar et al.'s delta_PTQ, k = C_T exp(-P_post / gamma_post); scaling/precision_law.py). Its compute-optimal
    allocation is found numerically: in log N at fixed C every term is an exponential, so the loss is convex and its
    slope has one zero."""

    terms: tuple[Term, ...] = ()

    def __post_init__(self) -> None:
        ChinchillaLaw(self.E, self.A, self.B, self.alpha, self.beta)  # the constants' checks
        terms = tuple(tuple(float(v) for v in term) for term in self.terms)
        if any(len(t) != 3 or not all(np.isfinite(t)) or t[0] < 0 for t in terms):
            raise UserError(f"QuantisedLaw.terms={self.terms!r}: each is (k >= 0, gamma_D, gamma_N), finite")
        object.__setattr__(self, "terms", terms)

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
        out = np.asarray(super().loss(N, D)) + sum(k * D**g_D / N**g_N for k, g_D, g_N in self.terms)
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
            slope = -self.alpha * self.A * np.exp(-self.alpha * x) + self.beta * self.B * np.exp(-self.beta * logD)
            for k, g_D, g_N in self.terms:
                slope = slope - (g_D + g_N) * k * np.exp(g_D * logD - g_N * x)
            lo, hi = np.where(slope > 0, lo, x), np.where(slope > 0, x, hi)
        N = np.exp((lo + hi) / 2)
        D = np.exp(logc) / N
        return (float(N), float(D)) if N.ndim == 0 else (N, D)


def with_term(law_file: LawFile, term: Term, draws: dict[str, np.ndarray] | None, prefix: str) -> LawFile:
    """The law file's law plus one penalty term (a `QuantisedLaw`), and the bootstrap samples plus each draw's own
    term (`<prefix>_k`, `<prefix>_gamma_D`, `<prefix>_gamma_N`: intervals.sample_log_loss adds every such term).
    `draws` None: the samples keep no term of it (the intervals then leave it out)."""
    law = law_file.law
    if not isinstance(law, ChinchillaLaw):
        raise UserError("a precision penalty needs a Chinchilla law (fit --form precision)")
    base = dict(E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta)
    priced = QuantisedLaw(**base, terms=(*getattr(law, "terms", ()), term))
    samples = law_file.samples
    if samples is not None and draws is not None:
        samples = {**samples, **{f"{prefix}_{name}": np.asarray(v, float) for name, v in draws.items()}}
    return dataclasses.replace(law_file, law=priced, samples=samples)


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
    pen, draws = precision.penalty, precision.samples or {}
    sampled = None
    if all(f"penalty_{k}" in draws for k in ("C", "gamma_D", "gamma_N")):
        k = np.asarray(draws["penalty_C"], float) * penalty_strength(kinds, [draws.get(f"gamma_{c}") for c in KINDS])
        sampled = dict(k=k, gamma_D=draws["penalty_gamma_D"], gamma_N=draws["penalty_gamma_N"])
    priced = with_term(law_file, (pen.C * strength, pen.gamma_D, pen.gamma_N), sampled, "penalty")
    return dataclasses.replace(priced, precision=None)


def serving_term(law_file: LawFile, bits_post: int, factor: float = 1.0) -> tuple[Term, dict[str, np.ndarray] | None]:
    """Kumar et al.'s post-training quantisation penalty at `bits_post` as a term k D^gamma_D / N^gamma_N of the plan's
    law (N the parameters; `factor` N_eff / N of the training precision, which delta_PTQ reads), with each bootstrap
    draw's (None without PTQ samples). Refused in one line where the law has no fitted PTQ penalty."""
    precision = getattr(law_file, "precision", None)
    ptq = None if precision is None else precision.ptq
    if ptq is None:
        raise UserError(
            "--serve-bits needs a law with a post-training quantisation penalty: quantise finished runs "
            "(smallest-loss ptq RUNS --bits ...), write their table, fit it with --form precision"
        )
    k = ptq.C_T * factor**-ptq.gamma_N * np.exp(-bits_post / ptq.gamma_post)
    draws = precision.samples or {}
    if not all(f"ptq_{c}" in draws for c in ("C_T", "gamma_D", "gamma_N", "gamma_post")):
        return (float(k), ptq.gamma_D, ptq.gamma_N), None
    # A resample whose PTQ rows could not be fitted has NaN constants: it keeps the fitted ones.
    C_T, g_D, g_N, g_post = (np.where(np.isfinite(d := np.asarray(draws[f"ptq_{c}"], float)), d, getattr(ptq, c))
                             for c in ("C_T", "gamma_D", "gamma_N", "gamma_post"))  # fmt: skip
    sampled = dict(k=C_T * factor**-g_N * np.exp(-bits_post / g_post), gamma_D=g_D, gamma_N=g_N)
    return (float(k), ptq.gamma_D, ptq.gamma_N), sampled


def _profile_precision(profile: DeviceProfile | None) -> tuple[str, dict[str, int] | None]:
    return (profile.dtype, profile.bits) if profile is not None else ("float32", None)


def ptq_loss(law_file: LawFile, profile: DeviceProfile | None, serve_bits: int | None, N: float, D: float) -> float:
    """The loss that serving at `serve_bits` adds to a model of N parameters trained on D tokens at the profile's
    precision (Kumar et al.'s delta_PTQ; 0 unquantised)."""
    if serve_bits is None or serve_bits >= UNQUANTISED_BITS:
        return 0.0
    (k, g_D, g_N), _ = serving_term(law_file, serve_bits, profile_penalty(law_file, *_profile_precision(profile)))
    return float(k * D**g_D / N**g_N)


def law_at_profile(law_file: LawFile, profile: DeviceProfile | None, serve_bits: int | None = None) -> LawFile:
    """The law a plan with `profile` ranks by: its precision priced under the law's precision section (a factor on
    N, or the additive penalty), and with `serve_bits` the loss of serving the trained model quantised to that many
    bits (`serving_term`). Unchanged without a profile or a precision section, and for unquantised training."""
    if serve_bits is not None and not (isinstance(serve_bits, int) and 2 <= serve_bits <= 16):
        raise UserError(f"--serve-bits {serve_bits!r}: a serving width is an integer from 2 to 16 (16: unquantised)")
    serving = serve_bits is not None and serve_bits < UNQUANTISED_BITS
    dtype, bits = _profile_precision(profile)
    factor = profile_penalty(law_file, dtype, bits)  # 1.0 without a precision section
    term = serving_term(law_file, serve_bits, factor) if serving else None  # refused here without a PTQ penalty
    if getattr(law_file, "precision", None) is None or (profile is None and not serving):
        return law_file
    priced = law_at_precision(law_with_training_penalty(law_file, dtype, bits), factor)
    return with_term(priced, term[0], term[1], "ptq") if term else priced
