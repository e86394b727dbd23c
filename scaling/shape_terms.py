"""The shape terms of the shape-aware law (scaling/aspect.py): the log of the factor in the aspect ratio d/n that
multiplies the Chinchilla form's loss.

Every term is a function of x = ln(d/n / r_opt), the log distance from a centre r_opt, and (for `drift`) of
ln(N / n_ref); its constants are fitted with the law's five (all jointly, by the same objective and bounds):

- `symmetric` (gamma, r_opt): gamma x^2. Kaplan et al. (2020, figure 5): the loss a shallow bowl in ln(d/n).
- `flat` (gamma, r_opt, half_width): gamma max(|x| - half_width, 0)^2: no penalty within a factor
  exp(half_width) of r_opt, quadratic outside (Kaplan's "wide middle range" taken literally).
- `asymmetric` (gamma, r_opt, gamma_high): gamma x^2 below r_opt (too deep), gamma_high x^2 above (too wide).
- `drift` (gamma, r_opt, kappa): gamma (x - kappa ln(N / n_ref))^2: the optimal d/n moves as N^kappa, as larger
  models favour wider shapes (Levine et al. 2020, depth-width interplay; the width and depth power terms that
  Gemstones fit, McLeish et al. 2025, arXiv 2502.06857, make the optimal shape depend on N in this way).
  n_ref is the geometric mean N of the fitted points (recorded with the law).

Each term gives the fit its extra coordinates after (gamma, x_opt) with bounds, start values and a bootstrap
perturbation scale; `log_factor` is written once for NumPy and for JAX (the `xp` module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smallest_loss.configs.errors import UserError

DEFAULT_TERM = "symmetric"  # see docs/methods.md: the leave-one-shape-out comparison on both tables
# `fit --form shape` chooses among these by leave-one-shape-out error (scaling/holdout.py, choose_shape_term): flat
# closed to symmetric on both tables tried and asymmetric never did better, so the choice is the bowl or its drift.
AUTO = "auto"
AUTO_TERMS = ("symmetric", "drift")


@dataclass(frozen=True)
class ShapeTerm:
    """One shape term: its extra constants (after gamma and r_opt), their bounds, start values and bootstrap
    perturbation scales, and the log factor as a function of x = ln(r / r_opt), z = ln(N / n_ref) and the
    constants (gamma, *extras)."""

    name: str
    extras: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]
    starts: tuple[tuple[float, ...], ...]
    scales: tuple[float, ...]
    formula: str
    fn: Callable[..., Any]

    def log_factor(self, x: Any, z: Any, gamma: Any, extras: tuple[Any, ...], xp: Any) -> Any:
        """ln of the factor at log distance x from r_opt and log size ratio z, with NumPy or jax.numpy `xp`."""
        return self.fn(x, z, gamma, extras, xp)


def _symmetric(x, z, gamma, extras, xp):
    return gamma * x**2


def _flat(x, z, gamma, extras, xp):
    (half,) = extras
    return gamma * (xp.maximum(x - half, 0.0) ** 2 + xp.maximum(-x - half, 0.0) ** 2)


def _asymmetric(x, z, gamma, extras, xp):
    (gamma_high,) = extras
    return gamma * xp.minimum(x, 0.0) ** 2 + gamma_high * xp.maximum(x, 0.0) ** 2


def _drift(x, z, gamma, extras, xp):
    (kappa,) = extras
    return gamma * (x - kappa * z) ** 2


TERMS = {
    "symmetric": ShapeTerm("symmetric", (), (), ((),), (), "exp(gamma ln(d/n / r_opt)^2)", _symmetric),
    "flat": ShapeTerm(
        "flat",
        ("half_width",),
        ((0.0, 3.0),),
        ((0.0,), (0.5,), (1.0,)),
        (0.2,),
        "exp(gamma max(|ln(d/n / r_opt)| - half_width, 0)^2)",
        _flat,
    ),  # fmt: skip
    "asymmetric": ShapeTerm(
        "asymmetric",
        ("gamma_high",),
        ((0.0, 2.0),),
        ((0.0,), (0.003,), (0.03,)),
        (0.02,),
        "exp(gamma ln(d/n / r_opt)^2) below r_opt, exp(gamma_high ln(d/n / r_opt)^2) above",
        _asymmetric,
    ),  # fmt: skip
    "drift": ShapeTerm(
        "drift",
        ("kappa",),
        ((-1.0, 1.0),),
        ((-0.2,), (0.0,), (0.2,)),
        (0.1,),
        "exp(gamma (ln(d/n / r_opt) - kappa ln(N / n_ref))^2)",
        _drift,
    ),  # fmt: skip
}


def get_term(name: str | None) -> ShapeTerm:
    """The shape term called `name` (None: the symmetric term, which law files without a `term` field hold)."""
    if name is None:
        return TERMS["symmetric"]
    if name not in TERMS:
        raise UserError(f"shape term {name!r}: use one of {', '.join(TERMS)}")
    return TERMS[name]
