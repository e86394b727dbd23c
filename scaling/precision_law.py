"""The precision scaling law of Kumar et al. (ICLR 2025, "Scaling Laws for Precision", arXiv 2411.04330): training in
low precision shrinks a model's effective parameter count,

    L(N, D, P_w, P_a, P_kv) = E + A N_eff^-alpha + B D^-beta,
    N_eff = N (1 - exp(-P_w / gamma_w)) (1 - exp(-P_a / gamma_a)) (1 - exp(-P_kv / gamma_kv)),

P_w, P_a and P_kv the bits of the weights, the activations and the attention's keys and values during training.
An unquantised kind (float32 or bfloat16 compute, a missing column) has P = infinity: its factor is 1. The tied
form has one gamma for all three kinds. Post-training quantisation (PTQ) to P_post bits adds (Kumar et al.'s form)

    delta_PTQ(N, D, P_post) = C_T (D^gamma_D / N^gamma_N) exp(-P_post / gamma_post),

growing with the tokens seen: an over-trained model degrades more when quantised after training.

The additive form (`form="additive"`) prices quantised training the same way instead of as fewer effective
parameters: N_eff = N, and training at P_k bits adds

    delta_train(N, D, P) = C D^gamma_D / N^gamma_N  sum_k exp(-P_k / gamma),

Kumar et al.'s post-training form applied during training, with one gamma for every quantised kind. On this
project's CPU precision sweep the cost of 3- and 4-bit training grows with the tokens (results/cpu/precision),
which no factor on N can follow: at a fixed N the N_eff form's penalty is the same at every D.

The law file's main law is the unquantised Chinchilla law (E, A, B, alpha, beta); its `precision` section holds
the gammas (None: that kind has no effect, not fitted), the form and the PTQ penalty. The fit is
scaling/precision_fit.py's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.points import ArrayLike

if TYPE_CHECKING:
    from smallest_loss.scaling.laws import LawFile

KINDS = ("w", "a", "kv")  # weights, activations, keys and values
BITS_COLUMNS = {"w": "bits_w", "a": "bits_a", "kv": "bits_kv"}
UNQUANTISED_BITS = 16.0  # a width of 16 bits or more (bfloat16, float32 compute) is unquantised for this law
PRECISION_FORMS = ("separate", "tied", "additive")


def bits_array(values: Any, where: str = "bits") -> np.ndarray:
    """Training bit widths as float64 with +inf for "unquantised": None, NaN (an empty cell), 0 and anything at or
    above `UNQUANTISED_BITS` are unquantised; other values must lie in [1, 16). Refused in one line otherwise."""
    if values is None:
        return np.array(math.inf)
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{where}={values!r} must be bit widths (numbers)") from None
    out = np.where(np.isnan(arr) | (arr == 0) | (arr >= UNQUANTISED_BITS), math.inf, arr)
    bad = np.flatnonzero(np.ravel(~(out >= 1)))
    if bad.size:
        raise UserError(
            f"{where}={float(np.ravel(arr)[bad[0]]):g}: a bit width must be at least 1 (0, blank or >= 16: unquantised)"
        )
    return out


def kind_factor(bits: ArrayLike, gamma: float | None) -> ArrayLike:
    """1 - exp(-P / gamma): the fraction of the parameters a kind quantised to P bits leaves effective (1 when
    unquantised or when gamma is None, a kind without effect)."""
    P = bits_array(bits)
    if gamma is None:
        return np.ones_like(P)
    return -np.expm1(-P / gamma)


@dataclass(frozen=True)
class PTQPenalty:
    """delta_PTQ(N, D, P_post) = C_T (D^gamma_D / N^gamma_N) exp(-P_post / gamma_post) (Kumar et al. 2025), the
    loss added by quantising a trained model to P_post bits; `fitted` False: constants given, not fitted here."""

    C_T: float
    gamma_D: float
    gamma_N: float
    gamma_post: float
    fitted: bool = True
    intervals: dict[str, tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        for name in ("C_T", "gamma_D", "gamma_N", "gamma_post"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise UserError(f"PTQPenalty.{name}={value!r} must be a finite number")
        if self.C_T < 0 or self.gamma_post <= 0:
            raise UserError(f"PTQPenalty: C_T={self.C_T!r} must be >= 0 and gamma_post={self.gamma_post!r} > 0")

    def delta(self, N: ArrayLike, D: ArrayLike, bits_post: ArrayLike) -> ArrayLike:
        """The loss added by quantising to `bits_post` after training (0 where unquantised)."""
        P = bits_array(bits_post, "bits_post")
        N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
        out = self.C_T * D**self.gamma_D / N**self.gamma_N * np.exp(-P / self.gamma_post)
        return float(out) if np.ndim(out) == 0 else out


def penalty_strength(bits: Sequence[ArrayLike | None], gammas: Sequence[ArrayLike | None]) -> np.ndarray:
    """sum_k exp(-P_k / gamma_k) over the kinds (w, a, kv) that have a gamma: the additive form's dependence on the
    training bits (0 where unquantised). A gamma may be an array (a bootstrap sample's each)."""
    out = np.zeros(())
    for P, gamma in zip(bits, gammas, strict=True):
        if gamma is not None:
            out = out + np.exp(-bits_array(P) / np.asarray(gamma, np.float64))
    return out


@dataclass(frozen=True)
class TrainingPenalty:
    """The additive form's term: C D^gamma_D / N^gamma_N times sum_k exp(-P_k / gamma), the loss that quantised
    training adds (scaling/precision_law.py's docstring)."""

    C: float
    gamma_D: float
    gamma_N: float

    def __post_init__(self) -> None:
        for name in ("C", "gamma_D", "gamma_N"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not math.isfinite(value):
                raise UserError(f"TrainingPenalty.{name}={value!r} must be a finite number")
            object.__setattr__(self, name, float(value))
        if self.C < 0:
            raise UserError(f"TrainingPenalty.C={self.C!r} must be >= 0")

    def delta(self, N: ArrayLike, D: ArrayLike, strength: ArrayLike) -> ArrayLike:
        """The loss added at N parameters and D tokens, `strength` the sum of exp(-P_k / gamma) (0: unquantised)."""
        N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
        return self.C * D**self.gamma_D / N**self.gamma_N * np.asarray(strength, np.float64)


@dataclass(frozen=True)
class PrecisionLaw:
    """L = E + A N_eff^-alpha + B D^-beta with N_eff = N prod_k (1 - exp(-P_k / gamma_k)) (Kumar et al. 2025). A
    gamma of None: that kind was not identified by the data (fixed to no effect). `form`: separate or tied (one
    gamma for every kind the data quantise). `samples` (gamma_w, gamma_a, gamma_kv) pair one to one with the law
    file's bootstrap samples of the other constants."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    gamma_w: float | None = None
    gamma_a: float | None = None
    gamma_kv: float | None = None
    form: str = "separate"
    ptq: PTQPenalty | None = None
    penalty: TrainingPenalty | None = None  # the additive form's term (None in the N_eff forms)
    intervals: dict[str, tuple[float, float]] | None = None
    samples: dict[str, np.ndarray] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("E", "A", "B", "alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not math.isfinite(value):
                raise UserError(f"PrecisionLaw.{name}={value!r} must be a finite number")
            object.__setattr__(self, name, float(value))
        if self.E < 0 or min(self.A, self.B, self.alpha, self.beta) <= 0:
            raise UserError("PrecisionLaw: E must be >= 0 and A, B, alpha, beta positive")
        for kind in KINDS:
            gamma = self.gamma(kind)
            if gamma is not None and not (math.isfinite(gamma) and gamma > 0):
                raise UserError(f"PrecisionLaw.gamma_{kind}={gamma!r} must be a positive number or None")
        if self.form not in PRECISION_FORMS:
            raise UserError(f"PrecisionLaw.form={self.form!r}: use one of {', '.join(PRECISION_FORMS)}")
        if (self.penalty is not None) != (self.form == "additive"):
            raise UserError("PrecisionLaw: the additive form, and only it, has a training penalty")

    def gamma(self, kind: str) -> float | None:
        return getattr(self, f"gamma_{kind}")

    def factor(self, bits_w: ArrayLike | None = None, bits_a: ArrayLike | None = None,
               bits_kv: ArrayLike | None = None) -> ArrayLike:  # fmt: skip
        """N_eff / N: the product of the kinds' factors (1.0 for unquantised training, and in the additive form)."""
        out = np.ones(())
        for kind, bits in zip(KINDS, (bits_w, bits_a, bits_kv), strict=True):
            out = out * kind_factor(bits, None if self.penalty is not None else self.gamma(kind))
        return float(out) if np.ndim(out) == 0 else out

    def strength(self, bits_w: ArrayLike | None = None, bits_a: ArrayLike | None = None,
                 bits_kv: ArrayLike | None = None) -> ArrayLike:  # fmt: skip
        """sum_k exp(-P_k / gamma_k) over the kinds the law prices: the additive penalty's dependence on the bits (0
        for unquantised training)."""
        out = penalty_strength((bits_w, bits_a, bits_kv), tuple(self.gamma(kind) for kind in KINDS))
        return float(out) if np.ndim(out) == 0 else out

    def training_penalty(self, N: ArrayLike, D: ArrayLike, bits_w: ArrayLike | None = None,
                         bits_a: ArrayLike | None = None, bits_kv: ArrayLike | None = None) -> ArrayLike:  # fmt: skip
        """The loss quantised training adds in the additive form (0 in the N_eff forms, which shrink N instead)."""
        if self.penalty is None:
            return 0.0
        out = self.penalty.delta(N, D, self.strength(bits_w, bits_a, bits_kv))
        return float(out) if np.ndim(out) == 0 else out

    def n_eff(self, N: ArrayLike, bits_w: ArrayLike | None = None, bits_a: ArrayLike | None = None,
              bits_kv: ArrayLike | None = None) -> ArrayLike:  # fmt: skip
        """The effective parameter count N (1 - e^(-P_w/g_w)) (1 - e^(-P_a/g_a)) (1 - e^(-P_kv/g_kv))."""
        out = np.asarray(N, np.float64) * self.factor(bits_w, bits_a, bits_kv)
        return float(out) if np.ndim(out) == 0 else out

    def loss(self, N: ArrayLike, D: ArrayLike, bits_w: ArrayLike | None = None, bits_a: ArrayLike | None = None,
             bits_kv: ArrayLike | None = None, bits_post: ArrayLike | None = None) -> ArrayLike:  # fmt: skip
        """E + A N_eff^-alpha + B D^-beta (+ the training penalty in the additive form), plus delta_PTQ when
        `bits_post` is given and the law has a PTQ term."""
        n_eff = np.asarray(self.n_eff(N, bits_w, bits_a, bits_kv), np.float64)
        out = self.E + self.A / n_eff**self.alpha + self.B / np.asarray(D, np.float64) ** self.beta
        out = out + self.training_penalty(N, D, bits_w, bits_a, bits_kv)
        if bits_post is not None:
            if self.ptq is None:
                raise UserError("this precision law has no post-training quantisation term: leave out bits_post")
            out = out + self.ptq.delta(n_eff, D, bits_post)
        return float(out) if np.ndim(out) == 0 else out


def precision_penalty(law_file: LawFile, bits_w: ArrayLike | None = None, bits_a: ArrayLike | None = None,
                      bits_kv: ArrayLike | None = None) -> ArrayLike:  # fmt: skip
    """The effective-parameter factor N_eff / N of training at these bit widths under the law file's precision
    section; 1.0 when the law file has none (a law fitted without precision knows no penalty)."""
    precision = getattr(law_file, "precision", None)
    if precision is None:
        bits_array(bits_w), bits_array(bits_a), bits_array(bits_kv)  # still refuse nonsense
        return 1.0
    return precision.factor(bits_w, bits_a, bits_kv)


# ---------------------------------------------------------------------------------------------------
# The law file's `precision` section.


def precision_to_dict(law: PrecisionLaw) -> dict[str, Any]:
    out: dict[str, Any] = {"form": law.form}
    out.update({f"gamma_{k}": law.gamma(k) for k in KINDS})
    if law.ptq is not None:
        p = law.ptq
        out["ptq"] = dict(C_T=p.C_T, gamma_D=p.gamma_D, gamma_N=p.gamma_N, gamma_post=p.gamma_post, fitted=p.fitted)
        if p.intervals:
            out["ptq"]["intervals"] = {k: [float(lo), float(hi)] for k, (lo, hi) in p.intervals.items()}
    if law.penalty is not None:
        out["penalty"] = dict(C=law.penalty.C, gamma_D=law.penalty.gamma_D, gamma_N=law.penalty.gamma_N)
    if law.intervals:
        out["intervals"] = {k: [float(lo), float(hi)] for k, (lo, hi) in law.intervals.items()}
    if law.samples:
        out["samples"] = {k: [float(x) for x in np.asarray(v).ravel()] for k, v in law.samples.items()}
    return out


def _gamma(raw: dict[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: {key}={value!r} must be a number or null")
    return float(value)


def _pairs(raw: Any, where: str) -> dict[str, tuple[float, float]] | None:
    if raw is None:
        return None
    ok = isinstance(raw, dict) and all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) for x in v) for v in raw.values()
    )
    if not ok:
        raise UserError(f"{where}: intervals must be an object {{name: [lo, hi]}}")
    return {k: (float(v[0]), float(v[1])) for k, v in raw.items()}


def precision_from_dict(raw: Any, main: dict[str, float], source: str) -> PrecisionLaw | None:
    """The optional `precision` section; `main` holds the law file's E, A, B, alpha, beta."""
    if raw is None:
        return None
    where = f"{source}: precision section"
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be an object with form and gamma_w, gamma_a, gamma_kv")
    ptq = raw.get("ptq")
    try:
        penalty = None
        if ptq is not None:
            if not isinstance(ptq, dict) or any(k not in ptq for k in ("C_T", "gamma_D", "gamma_N", "gamma_post")):
                raise UserError("ptq must hold C_T, gamma_D, gamma_N and gamma_post")
            penalty = PTQPenalty(ptq["C_T"], ptq["gamma_D"], ptq["gamma_N"], ptq["gamma_post"],
                                 bool(ptq.get("fitted", True)), _pairs(ptq.get("intervals"), where))  # fmt: skip
        extra = raw.get("penalty")
        if extra is not None and (
            not isinstance(extra, dict) or any(k not in extra for k in ("C", "gamma_D", "gamma_N"))
        ):
            raise UserError("penalty must hold C, gamma_D and gamma_N")
        samples = raw.get("samples")
        if samples is not None and not isinstance(samples, dict):
            raise UserError("samples must be an object {name: [values]}")
        return PrecisionLaw(
            **main, **{f"gamma_{k}": _gamma(raw, f"gamma_{k}", where) for k in KINDS}, form=raw.get("form", "separate"),
            ptq=penalty, penalty=None if extra is None else TrainingPenalty(*(extra[k] for k in ("C", "gamma_D",
                                                                                                "gamma_N"))),
            intervals=_pairs(raw.get("intervals"), where),
            samples={k: np.asarray(v, np.float64) for k, v in samples.items()} if samples else None,
        )  # fmt: skip
    except (UserError, TypeError, ValueError) as err:
        raise UserError(f"{where}: {err}") from None
