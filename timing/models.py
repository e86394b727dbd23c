"""Step-time models fitted to timing records, compared by cross-validation on unseen architectures.

Each model is linear in non-negative coefficients over features of a configuration, fitted by
relative-error least squares (rows divided by the measured time, so a 1 ms step weighs as much as a 1 s
one) with `scipy.optimize.nnls`. "Time Matters" (Inbar and Sernau, 2024) proposes
TIME = c1*MEMCPYS + c2*FLOPS + c3; the others are its rivals: FLOPs only, copies only, XLA's compiled
counts, our exact counts, and a roofline max(flops/peak, bytes/bandwidth) with the device's measured
peak and bandwidth. Models whose features are analytic can predict any candidate from its
hyperparameters (the planner's need); models on XLA counts need a compiled step and cannot.

Our exact features see each record's activation (SwiGLU's third matrix), norm, tying and compute dtype
(activation bytes at `timing.counts.bytes_per_element`; weights, gradients and moments stay float32); the
paper's features are its formulas as written, which see none of them.

Records over several devices bring the data-parallel model (each device's share of the batch, the gradient
all-reduce); records with a tensor- or pipeline-parallel layout (`tp`, `pp`, `microbatch`, `recompute`:
timing/records.py) bring the model-parallel ones, which price each device's shard of the work, the
tensor-parallel all-reduces and the pipeline bubble apart. Without a layout their features are the
data-parallel model's, so a profile of theirs predicts what the planner asks: a step of global batch b on k
data-parallel devices, each holding the whole model, without recomputation.

Every model has a short, stable id (`paper`, `exact-layers`, `data-parallel`, `xla`, ...) that profiles store
and reports, plots and tests name it by, a title (`label`) and a description for reports. Profiles written
before ids stored the titles of then: `LEGACY_NAMES` maps each to its id, so they still load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import optimize
from smallest_loss.timing.counts import (
    FLOPS,
    MEMCPYS,
    WEIGHT_PASSES,
    MoeSpec,
    Precision,
    bytes_per_element,
    moe_of,
    spilled_terms,
    train_attention_flops,
    train_memory_bytes,
    train_step_bytes,
    train_step_flops,
    train_step_terms,
    weight_bytes,
)

STATISTICS = {"best_round": "best_round_seconds", "median": "step_seconds", "min": "min_seconds"}
# What a profile predicts: the median of all repeats. On the 2-core machine of results/cpu/quickstart it
# held out better than the fastest round's median (11.4% against 13.6% mean error) and predicted the
# verified run's step time within 1% where the fastest round's median was 25% low: a training run meets
# the machine's slow spells as the median does.
DEFAULT_STATISTIC = "median"


# The parallel layout a record may give (timing/records.py), and its value where it does not: the whole model on
# every device, one micro-batch per step (microbatch NaN), no activation recomputation.
LAYOUT = {"tp": 1, "pp": 1, "microbatch": np.nan, "recompute": False}


def shape_columns(records: list[dict[str, Any]], statistic: str = DEFAULT_STATISTIC) -> dict[str, np.ndarray]:
    """Columns of hyperparameters and measured/compiled numbers from `ok` timing records.

    `time` is the record's `statistic` (see timing/measure.py): the median of all repeats by default; a
    record written before rounds existed falls back to it for the round statistics. `tp`, `pp`, `microbatch`
    and `recompute` are the record's parallel layout (`LAYOUT` where it gives none).
    """
    key = STATISTICS[statistic]
    names = ("d", "n", "h", "w", "s", "v", "b", "k", "time", "xla_flops", "xla_bytes", "xla_peak", *LAYOUT)
    cols: dict[str, list[Any]] = {k: [] for k in (*names, "variant")}
    for r in records:
        for k in ("d", "n", "h", "w", "s", "v"):
            cols[k].append(r["config"][k])
        cols["b"].append(r["batch"])
        cols["k"].append(r.get("device_count", 1))
        parallel = r.get("parallel", {})
        for k, default in LAYOUT.items():
            value = parallel.get(k)
            cols[k].append(default if value is None else value)
        cols["time"].append(r.get(key, r["step_seconds"]))
        cols["xla_flops"].append(r.get("xla", {}).get("flops", np.nan))
        cols["xla_bytes"].append(r.get("xla", {}).get("bytes_accessed", np.nan))
        cols["xla_peak"].append(r.get("xla", {}).get("peak_bytes") or np.nan)
        c = r["config"]
        cols["variant"].append(
            variant(
                c.get("activation", "gelu"),
                c.get("norm", "rmsnorm"),
                c.get("tied_embeddings", True),
                record_precision(r),
                moe_of(c),
            )
        )
    out = {k: np.asarray(cols[k], dtype=np.float64) for k in names}
    out["variant"] = np.asarray(cols["variant"], dtype=object)
    return out


def record_precision(record: dict[str, Any]) -> str:
    """A timing record's precision label: its dtype, with the bits its config quantises at (none: the dtype)."""
    c = record["config"]
    bits = (c.get("bits_weights"), c.get("bits_activations"), c.get("bits_kv"))
    return Precision(record.get("dtype", "float32"), *bits).label


def variant(
    activation: str = "gelu", norm: str = "rmsnorm", tied: bool = True, dtype: str = "float32", moe: Any = None
) -> str:
    """The choices that change counts but are not numbers (architecture and precision), as one label; `dtype` is
    the compute dtype or a precision label with bits (`timing.counts.Precision.label`). A mixture of experts
    (`timing.counts.MoeSpec`) adds its fields, `/moe:experts,top_k,granularity,shared,dispatch` (a record without
    them, dense, keeps the label it had)."""
    label = f"{activation}/{norm}/{'tied' if tied else 'untied'}/{dtype}"
    if moe is None:
        return label
    return f"{label}/moe:{moe.experts},{moe.top_k},{moe.granularity},{moe.shared_experts},{moe.moe_dispatch}"


def _moe_of_label(label: str) -> dict[str, Any]:
    """`moe=MoeSpec` for a mixture of experts' variant label ({} for a dense one: its counts' calls unchanged)."""
    parts = label.split("/")
    if len(parts) < 5:
        return {}
    experts, top_k, granularity, shared, dispatch = parts[4].removeprefix("moe:").split(",")
    return dict(moe=MoeSpec(int(experts), int(top_k), int(granularity), int(shared), dispatch))


def _per_variant(c: dict[str, np.ndarray], fn: Callable[..., Any]) -> np.ndarray:
    """`fn(d, n, h, w, s, v, b, activation=, norm=, tied=, bytes_per=)` evaluated per variant (`bytes_per`:
    bytes per element of the compute dtype, for activation traffic)."""
    labels = c.get("variant")
    if labels is None:
        labels = np.full(c["d"].shape, variant(), dtype=object)
    out = np.empty(c["d"].shape, dtype=np.float64)
    for label in set(labels.ravel().tolist()):
        act, norm, tied, dtype = label.split("/")[:4]  # dtype: a precision label (timing.counts.Precision)
        mask = labels == label
        shape = (c[k][mask] for k in ("d", "n", "h", "w", "s", "v", "b"))
        arch = dict(activation=act, norm=norm, tied=tied == "tied", precision=Precision.parse(dtype))
        out[mask] = fn(*shape, **arch, bytes_per=bytes_per_element(dtype), **_moe_of_label(label))
    return out


def _without_bytes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A count that does not depend on the compute dtype (FLOPs), in `_per_variant`'s calling convention."""
    return lambda *shape, bytes_per, **arch: fn(*shape, **arch)


def _term(name: str) -> Callable[..., np.ndarray]:
    """Feature: one kind of work of `timing.counts.train_step_terms`."""

    def term(*shape: Any, **arch: Any) -> Any:
        terms = train_step_terms(*shape, **arch)
        # A mixture of experts' router matmuls count as MLP work, its routing as the MLP's element-wise work.
        return terms[name] + terms.get(MOE_TERMS.get(name, ""), 0)

    def feature(c: dict[str, np.ndarray], _: Any) -> np.ndarray:
        return _per_variant(c, _without_bytes(term))

    feature.__name__ = name
    return feature


def _terms(*names: str) -> Callable[..., np.ndarray]:
    """Feature: several kinds of work of `timing.counts.train_step_terms` at one rate (`_term` of each, summed)."""
    parts = [_term(name) for name in names]

    def feature(c: dict[str, np.ndarray], device: Any) -> np.ndarray:
        return sum(part(c, device) for part in parts)

    feature.__name__ = "+".join(names)
    return feature


def _spilled(name: str) -> Callable[..., np.ndarray]:
    """Feature: one element-wise kind of work, where its per-layer tensor exceeds the device's cache."""

    def feature(c: dict[str, np.ndarray], device: dict[str, Any]) -> np.ndarray:
        cache = device.get("cache_bytes")
        return _per_variant(c, lambda *shape, **opts: spilled_terms(*shape, cache, **opts)[name])

    feature.__name__ = f"{name}_spilled"
    return feature


def _llc_spilled_activations(c: dict[str, np.ndarray], device: dict[str, Any]) -> np.ndarray:
    """Feature: the step's activation traffic times the share of its working set (`train_memory_bytes`) beyond the
    last-level cache (`llc_bytes`; 0 where it fits or the cache is not known). On the 2-core EPYC (32 MiB L3) most
    steps under 35 MB of XLA's peak memory ran faster than `exact-layers` priced them and most over 40 MB slower."""
    llc = device.get("llc_bytes")
    if not llc:
        return np.zeros(c["d"].shape)
    memory = _per_variant(c, train_memory_bytes)
    return _activation_bytes(c, device) * np.clip(1.0 - llc / memory, 0.0, 1.0)


def _llc_thrashed_bytes(c: dict[str, np.ndarray], device: dict[str, Any]) -> np.ndarray:
    """Feature: all of a step's memory traffic where its working set (`train_memory_bytes`) exceeds the last-level
    cache (`llc_bytes`), else 0 (and 0 where the cache is not known). A step sweeps its working set in the same
    order every time, and least-recently-used replacement keeps none of a cyclic sweep larger than the cache, so past
    that size every byte comes from memory: a step, not a share. The working set is `train_memory_bytes` times the
    device's `working_set_ratio` where the calibration measured one (`working_set_ratio`: XLA's compiled peak memory
    over our count, whose temporaries it leaves out)."""
    return _bytes_beyond(c, device, 1.0)


def _bytes_beyond(c: dict[str, np.ndarray], device: dict[str, Any], multiple: float) -> np.ndarray:
    """All of a step's memory traffic where its working set exceeds `multiple` times the last-level cache, else 0."""
    llc = device.get("llc_bytes")
    if not llc:
        return np.zeros(c["d"].shape)
    memory = _per_variant(c, train_memory_bytes) * (device.get("working_set_ratio") or 1.0)
    return _exact_bytes(c, device) * (memory > llc * multiple)


# The working sets, as multiples of the last-level cache, where `exact-grouped-cliff` tries its cliff (2^(1/6) apart).
CLIFF_GRID = tuple(float(x) for x in np.geomspace(0.5, 4.0, 19))


def _llc_cliff_bytes(c: dict[str, np.ndarray], device: dict[str, Any]) -> np.ndarray:
    """Feature: all of a step's memory traffic where its working set exceeds `llc_cliff` times the last-level cache
    (`_llc_thrashed_bytes` with the cliff where the calibration finds it, not at the cache's size; `llc_cliff` absent:
    at 1). A cache's size as the machine reports it need not be the working set at which a step falls out of it: on
    the 2-core EPYC VM (32 MiB of L3 reported) the quickstart grid's steps were priced up to 20% too slow from 1 to
    2.2 times that size and up to 21% too fast beyond it (31 calibrations, results/cpu/calibrations/README.md)."""
    return _bytes_beyond(c, device, device.get("llc_cliff") or 1.0)


LINE_BYTES = 64  # a CPU cache line


def _aliased_hidden_transpose(c: dict[str, np.ndarray], device: dict[str, Any]) -> np.ndarray:
    """Feature: the hidden activation's gradient elements (n b s w) where XLA's CPU backend copies them transposed
    and the cache (`cache_bytes`, the L2) cannot hold the b s rows that copy reads w elements apart, else 0 (and 0
    where the cache is not known). XLA fuses the MLP's activation gradient with a transpose to (w, b s) for
    the weight gradient's matmul; reading b s rows w elements apart, a row stride of 2^k lines maps every row to one
    set in 2^k, so the L2 holds only its lines / 2^k of them (1 MiB, 64-byte lines: 512 rows of w = 512, 256 of
    w = 1024), and beyond b s rows every read misses. On the 2-core EPYC (b s = 1024, `experiments/scripts/
    step_profile.py`) that fusion took 7-11 ns an element at w = 512 and 1024, against 1-4 ns at w = 64-384 and 768."""
    cache = device.get("cache_bytes")
    if not cache:
        return np.zeros(c["d"].shape)

    def elements(d, n, h, w, s, v, b, bytes_per, **arch):
        stride = np.rint(w * bytes_per).astype(np.int64)
        lines = stride // LINE_BYTES
        power = np.where(stride % LINE_BYTES == 0, lines & -lines, 1)  # the largest power of 2 dividing the stride
        return n * b * s * w * ((cache / LINE_BYTES) / power < b * s)

    return _per_variant(c, elements)


def working_set_ratio(cols: dict[str, np.ndarray]) -> float | None:
    """The median ratio of XLA's compiled peak memory to `train_memory_bytes` over the records that have it (None
    where none does: external tables): the share of a step's working set our count leaves out, measured on the
    device (on the 2-core EPYC 1.13-1.25, by grid)."""
    peak = cols.get("xla_peak")
    if peak is None or not np.any(np.isfinite(peak)):
        return None
    known = np.isfinite(peak)
    counted = _per_variant({k: v[known] for k, v in cols.items()}, train_memory_bytes)
    return float(np.median(peak[known] / counted))


def with_working_set_ratio(device: dict[str, Any], cols: dict[str, np.ndarray]) -> dict[str, Any]:
    """`device` with the `working_set_ratio` of the records' columns, where it gives a last-level cache to read it
    against and no ratio yet."""
    if not device.get("llc_bytes") or "working_set_ratio" in device:
        return device
    return {**device, "working_set_ratio": working_set_ratio(cols)}


TERMS = ("projection", "mlp", "attention", "output", "width", "hidden", "scores", "logits", "optimizer")
MOE_TERMS = {"mlp": "router", "hidden": "routing"}  # a mixture of experts' terms, priced with these


def _shape(c: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return c["d"], c["n"], c["h"], c["w"], c["s"], c["v"], c["b"]


def _paper_flops(c, _):
    d, n, h, w, s, v, b = _shape(c)
    return b * FLOPS(d, n, s, v, w, h)


def _paper_memcpys(c, _):
    d, n, h, w, s, v, b = _shape(c)
    return b * MEMCPYS(d, n, s, v, w, h)


def _exact_flops(c, _):
    return _per_variant(c, _without_bytes(train_step_flops))


def _exact_bytes(c, _):
    return _per_variant(c, train_step_bytes)


def _attention_flops(c, _):
    return train_attention_flops(c["d"], c["n"], c["s"], c["b"])


def _dense_flops(c, device):
    return _exact_flops(c, device) - _attention_flops(c, device)


def _weight_bytes(c, _):
    """Float32 parameters, gradients and Adam moments: the same whatever the compute dtype."""
    return _per_variant(c, _without_bytes(lambda d, n, h, w, s, v, b, **arch: weight_bytes(d, n, w, v, **arch) + 0 * b))


def _activation_bytes(c, device):
    return _exact_bytes(c, device) - _weight_bytes(c, device)


def _layers(c, _):
    return c["n"]


def _gradient_sync_bytes(c, _):
    """Bytes each device sends in a ring all-reduce of the gradients: 2 (k-1)/k x 4 bytes x params (gradients
    of the float32 master weights are float32 whatever the compute dtype)."""
    master = lambda d, n, h, w, s, v, b, precision, **arch: weight_bytes(d, n, w, v, **arch) + 0 * b  # noqa: E731
    params = _per_variant(c, _without_bytes(master)) / WEIGHT_PASSES  # no quantised copy: it is not synced
    return 2.0 * (c["k"] - 1) / c["k"] * params


def _per_device(feature):
    """Data parallelism splits the batch: per-device work is the global step's work / k, except weights."""
    return lambda c, device: feature(dict(c, b=c["b"] / c["k"]), device)


RECOMPUTED = 4 / 3  # activation recomputation: 4 forward-sized passes of each layer's matmuls instead of 3


def _layout(c: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Per record: tensor- and pipeline-parallel sizes, data-parallel size dp = k / (tp pp), micro-batches per
    replica m = (b / dp) / microbatch, and the factor recomputation puts on the layers' matmuls. Columns a record
    lacks take `LAYOUT`'s values (a profile's predictions give the shapes and k only: pure data parallelism)."""
    ones = np.ones_like(c["k"])
    tp, pp = c.get("tp", ones), c.get("pp", ones)
    dp = c["k"] / (tp * pp)
    micro = c.get("microbatch", np.full_like(ones, np.nan))
    m = np.where(np.isfinite(micro), c["b"] / dp / micro, 1.0)
    recompute = np.where(c.get("recompute", 0 * ones) > 0, RECOMPUTED, 1.0)
    return tp, pp, dp, m, recompute


def _per_shard(feature):
    """Model parallelism: tensor (tp) and pipeline (pp) parallelism split one replica's work and weights over
    tp x pp devices, data parallelism the batch over dp replicas, so per-device work is the replica's on b / dp
    sequences, / (tp pp) (Narayanan et al. 2021, section 2). With tp = pp = 1 this is `_per_device`."""

    def per_device(c: dict[str, np.ndarray], device: dict[str, Any]) -> np.ndarray:
        tp, pp, dp, _, _ = _layout(c)
        return feature(dict(c, b=c["b"] / dp), device) / (tp * pp)

    return per_device


def _recomputed_dense_flops(c, device):
    """Dense FLOPs with activation recomputation: each layer's projections and MLP run their forward pass again
    before the backward one, 4 matmul passes instead of 3 (Narayanan et al. 2021, Eq. 3: 96 B s l h^2, not 72);
    the output layer, element-wise work and optimizer as without."""
    layers = _term("projection")(c, device) + _term("mlp")(c, device)
    return _dense_flops(c, device) + (_layout(c)[4] - 1) * layers


def _recomputed_attention_flops(c, device):
    """Attention's s x s matmuls, also run again with activation recomputation."""
    return _layout(c)[4] * _attention_flops(c, device)


def _recomputed_flops(c, device):
    return _recomputed_dense_flops(c, device) + _recomputed_attention_flops(c, device)


def _stage_layers(c, _):
    """Layer passes of one device: n / pp layers of its pipeline stage, once per micro-batch (a fixed cost per
    layer and micro-batch: kernel launches). `_layers` without pipeline or micro-batches."""
    _, pp, _, m, _ = _layout(c)
    return c["n"] / pp * m


def _data_parallel_sync_bytes(c, _):
    """The gradient ring all-reduce over the dp replicas of each device's tp x pp shard of the parameters
    (`_gradient_sync_bytes` with dp for k, / (tp pp))."""
    tp, pp, dp, _, _ = _layout(c)
    return _gradient_sync_bytes(dict(c, k=dp), None) / (tp * pp)


def _activation_bytes_per_layer(c):
    """Bytes of one layer's b x s x d activations at the compute dtype's size, b the global batch."""
    return _per_variant(c, lambda d, n, h, w, s, v, b, bytes_per, **arch: bytes_per * b * s * d + 0 * n)


def _tensor_parallel_bytes(c, _):
    """Bytes each device sends in tensor-parallel all-reduces. Megatron-LM's layer all-reduces its (b/dp) x s x d
    activations twice in the forward pass (after attention, after the MLP) and twice in the backward pass
    (Shoeybi et al. 2019, section 3), twice more with recomputation (the forward runs again); a ring all-reduce
    sends 2 (tp-1)/tp of the bytes (Patarasuk and Yuan 2009); a device runs n / pp layers."""
    tp, pp, dp, _, recompute = _layout(c)
    all_reduces = np.where(recompute > 1, 6, 4) * c["n"] / pp
    return all_reduces * 2 * (tp - 1) / tp * _activation_bytes_per_layer(c) / dp


def _pipeline_bytes(c, _):
    """Bytes each device sends between pipeline stages: every micro-batch's activations forward and their
    gradients backward, (b/dp) x s x d each way, split over the tp devices of a stage by Megatron-LM's scatter and
    gather (Narayanan et al. 2021, section 4.1); none without pipeline parallelism."""
    tp, pp, dp, _, _ = _layout(c)
    return (pp > 1) * 2 * _activation_bytes_per_layer(c) / (dp * tp)


def _pipeline_bubble_flops(c, device):
    """The pipeline bubble as work: with pp stages and m micro-batches per replica, a device idles (pp-1)/m of its
    compute time per step (Narayanan et al. 2021, Eq. 1, GPipe and 1F1B schedules), priced as that share of its
    FLOPs again."""
    _, pp, _, m, _ = _layout(c)
    return (pp - 1) / m * _per_shard(_recomputed_flops)(c, device)


def _roofline(c, device):
    return np.maximum(_exact_flops(c, device) / device["peak_flops"], _exact_bytes(c, device) / device["bandwidth"])


def _xla_roofline(c, device):
    return np.maximum(c["xla_flops"] / device["peak_flops"], c["xla_bytes"] / device["bandwidth"])


# The model-parallel features that reduce to the data-parallel model's six (dense FLOPs, attention FLOPs, weight
# bytes, activation bytes, layers, gradient sync) without tp, pp, micro-batches or recomputation, then the
# tensor-parallel all-reduces (zero without tp).
_SHARDED = (
    _per_shard(_recomputed_dense_flops),
    _per_shard(_recomputed_attention_flops),
    _per_shard(_weight_bytes),
    _per_shard(_activation_bytes),
    _stage_layers,
    _data_parallel_sync_bytes,
    _tensor_parallel_bytes,
)


@dataclass(frozen=True)
class TimeModel:
    """A step-time model: non-negative coefficients over its features, plus a constant."""

    id: str  # short and stable: profiles store it, reports and plot files name the model by it
    label: str  # a readable title for reports
    features: tuple[Callable[..., np.ndarray], ...]  # each (columns, device) -> array; a constant is added
    analytic: bool  # computable from hyperparameters alone (usable by the planner)
    description: str
    multi_device: bool = False  # compared only when the records hold several device counts
    model_parallel: bool = False  # compared only when some record gives a tensor- or pipeline-parallel layout
    needs: str = ""  # a device rate its features read (`cache_bytes`, `llc_bytes`): compared only where it is known
    # A device setting its features read that the fit chooses from `grid` (the value whose fit errs least on the
    # records it fits), as it chooses the coefficients: "" where none.
    tuned: str = ""
    grid: tuple[float, ...] = ()
    constant: bool = True  # False: the constant's coefficient is held at 0 (the column stays, so profiles keep a shape)


def _xla_flops(c: dict[str, np.ndarray], _: Any) -> np.ndarray:
    return c["xla_flops"]


def _xla_bytes(c: dict[str, np.ndarray], _: Any) -> np.ndarray:
    return c["xla_bytes"]


_DATA_PARALLEL = (
    _per_device(_dense_flops),
    _per_device(_attention_flops),
    _weight_bytes,
    _per_device(_activation_bytes),
    _layers,
    _gradient_sync_bytes,
)
_COMPACT = (
    _per_shard(_recomputed_flops),
    _per_shard(_weight_bytes),
    _per_shard(_activation_bytes),
    _data_parallel_sync_bytes,
    _tensor_parallel_bytes,
    _pipeline_bubble_flops,
)

# `exact-kinds`' work in four rates (dense matmuls, attention's, element-wise, optimizer) and a cost per layer.
_GROUPED = (
    _terms("projection", "mlp", "output"),
    _term("attention"),
    _terms("width", "hidden", "scores", "logits"),
    _term("optimizer"),
    _layers,
)

MODELS: tuple[TimeModel, ...] = (
    TimeModel(
        "paper",
        "paper: memcpys + flops",
        (_paper_memcpys, _paper_flops),
        True,
        "c1*b*MEMCPYS + c2*b*FLOPS + c3 (Inbar and Sernau, 2024)",
    ),
    TimeModel("paper-flops", "paper: flops only", (_paper_flops,), True, "c2*b*FLOPS + c3"),
    TimeModel("paper-memcpys", "paper: memcpys only", (_paper_memcpys,), True, "c1*b*MEMCPYS + c3"),
    TimeModel(
        "exact",
        "exact: flops + bytes",
        (_exact_flops, _exact_bytes),
        True,
        "our training-step FLOPs and bytes (timing/counts.py)",
    ),
    TimeModel(
        "exact-attention",
        "exact: dense flops + attention flops + bytes",
        (_dense_flops, _attention_flops, _exact_bytes),
        True,
        "our counts, with attention's s x s matmuls priced apart from the dense layers",
    ),
    TimeModel(
        "exact-layers",
        "exact: flops (dense, attention) + bytes (weights, activations) + layers",
        (_dense_flops, _attention_flops, _weight_bytes, _activation_bytes, _layers),
        True,
        "exact-attention with weight and activation traffic apart and a fixed cost per layer (op dispatch)",
    ),
    TimeModel(
        "exact-kinds",
        "exact: work by kind (matmuls, element-wise, optimizer)",
        tuple(_term(k) for k in TERMS),
        True,
        "each kind of work of timing.counts.train_step_terms at its own rate",
    ),
    TimeModel(
        "exact-kinds-cache",
        "exact: work by kind, element-wise in or out of cache",
        (*(_term(k) for k in TERMS), *(_spilled(k) for k in ("width", "hidden", "scores"))),
        True,
        "exact-kinds, with element-wise work whose per-layer tensor exceeds the cache priced again (spilled_terms)",
        needs="cache_bytes",
    ),
    TimeModel(
        "exact-kinds-llc",
        "exact: work by kind, activation traffic beyond the last-level cache",
        (*(_term(k) for k in TERMS), _llc_spilled_activations),
        True,
        "exact-kinds, with the activation bytes of a step whose working set exceeds the last-level cache priced again",
        needs="llc_bytes",
    ),
    TimeModel(
        "exact-kinds-thrash",
        "exact: work by kind, all traffic from memory once the working set exceeds the last-level cache",
        (*(_term(k) for k in TERMS), _llc_thrashed_bytes),
        True,
        "exact-kinds, with every byte of a step whose working set exceeds the last-level cache priced again",
        needs="llc_bytes",
    ),
    TimeModel(
        "exact-grouped-thrash",
        "exact: matmuls, attention, element-wise, optimizer, layers, all traffic beyond the last-level cache",
        (*_GROUPED, _llc_thrashed_bytes),
        True,
        "the dense matmuls at one rate, attention's at another, all element-wise work at a third, the optimizer, a "
        "cost per layer, and every byte of a step whose working set exceeds the last-level cache priced again",
        needs="llc_bytes",
    ),
    TimeModel(
        "exact-grouped-cliff",
        "exact: matmuls, attention, element-wise, optimizer, layers, all traffic beyond a fitted cache cliff",
        (*_GROUPED, _llc_cliff_bytes),
        True,
        "exact-grouped-thrash with the jump at the working set where this machine's steps fall out of cache, chosen "
        "by the fit from 0.5 to 4 times the last-level cache (`llc_cliff`), not at the cache's reported size, and no "
        "constant (a CPU step's fixed cost is microseconds: the cost per layer holds it)",
        needs="llc_bytes",
        tuned="llc_cliff",
        grid=CLIFF_GRID,
        # A free constant, pinned by the smallest configuration alone, priced it 30% slow held out on average over
        # the 31 calibrations of results/cpu/calibrations/ (4.6% without; the calibrations' median 6.6% -> 5.4%).
        constant=False,
    ),
    TimeModel(
        "exact-grouped-alias",
        "exact: matmuls, attention, element-wise, optimizer, layers, cache cliff, transposes the L2's sets cannot hold",
        (*_GROUPED, _llc_cliff_bytes, _aliased_hidden_transpose),
        True,
        "exact-grouped-cliff, with the MLP activation gradient's transposed copy priced again where its row stride is "
        "a power of 2 of cache lines large enough that the L2's sets cannot hold a row of every token "
        "(`_aliased_hidden_transpose`: on 2 EPYC cores, w = 512 and 1024 at 1024 tokens a step)",
        needs="llc_bytes",
        tuned="llc_cliff",
        grid=CLIFF_GRID,
        constant=False,
    ),
    TimeModel(
        "data-parallel",
        "exact: ... + layers + gradient sync (data parallel)",
        _DATA_PARALLEL,
        True,
        "exact-layers on each device's share of the batch, plus the gradient all-reduce bytes",
        multi_device=True,
    ),
    TimeModel(
        "model-parallel",
        "exact: model parallel (... + tensor all-reduces, pipeline bubble)",
        (*_SHARDED, _pipeline_bubble_flops),
        True,
        "data-parallel on each device's tp x pp shard of a replica (recomputation included), "
        "plus the tensor-parallel all-reduce bytes and the pipeline bubble's FLOPs",
        model_parallel=True,
    ),
    TimeModel(
        "model-parallel-sends",
        "exact: model parallel (... + pipeline sends)",
        (*_SHARDED, _pipeline_bubble_flops, _pipeline_bytes),
        True,
        "model-parallel, plus the bytes sent between pipeline stages",
        model_parallel=True,
    ),
    TimeModel(
        "model-parallel-compact",
        "exact: model parallel, compact (flops, weights, activations, all-reduces, bubble)",
        _COMPACT,
        True,
        "each device's FLOPs in one rate, its weight and activation traffic, both all-reduces and the bubble",
        model_parallel=True,
    ),
    TimeModel(
        "roofline",
        "roofline (exact counts)",
        (_roofline,),
        True,
        "c*max(F/peak, M/bandwidth) + c3, measured peak",
    ),
    TimeModel("xla-flops", "xla: flops", (_xla_flops,), False, "XLA compiled flops"),
    TimeModel("xla-bytes", "xla: bytes", (_xla_bytes,), False, "XLA compiled bytes accessed"),
    TimeModel("xla", "xla: flops + bytes", (_xla_flops, _xla_bytes), False, "XLA compiled flops and bytes accessed"),
    TimeModel(
        "xla-roofline",
        "roofline (xla counts)",
        (_xla_roofline,),
        False,
        "c*max(xla F/peak, xla M/bandwidth) + c3",
    ),
)

# The names profiles of versions 1 to 3 stored (the models' titles then), by id: every such profile still loads (and the
# title of each model added since, so that every model is found by its title too).
LEGACY_NAMES: dict[str, str] = {
    "paper: memcpys + flops": "paper",
    "paper: flops only": "paper-flops",
    "paper: memcpys only": "paper-memcpys",
    "exact: flops + bytes": "exact",
    "exact: dense flops + attention flops + bytes": "exact-attention",
    "exact: flops (dense, attention) + bytes (weights, activations) + layers": "exact-layers",
    "exact: work by kind (matmuls, element-wise, optimizer)": "exact-kinds",
    "exact: work by kind, element-wise in or out of cache": "exact-kinds-cache",
    "exact: work by kind, activation traffic beyond the last-level cache": "exact-kinds-llc",
    "exact: work by kind, all traffic from memory once the working set exceeds the last-level cache": (
        "exact-kinds-thrash"
    ),
    "exact: matmuls, attention, element-wise, optimizer, layers, all traffic beyond the last-level cache": (
        "exact-grouped-thrash"
    ),
    "exact: matmuls, attention, element-wise, optimizer, layers, all traffic beyond a fitted cache cliff": (
        "exact-grouped-cliff"
    ),
    "exact: matmuls, attention, element-wise, optimizer, layers, cache cliff, transposes the L2's sets cannot hold": (
        "exact-grouped-alias"
    ),
    "exact: ... + layers + gradient sync (data parallel)": "data-parallel",
    "exact: model parallel (... + tensor all-reduces, pipeline bubble)": "model-parallel",
    "exact: model parallel (... + pipeline sends)": "model-parallel-sends",
    "exact: model parallel, compact (flops, weights, activations, all-reduces, bubble)": "model-parallel-compact",
    "roofline (exact counts)": "roofline",
    "xla: flops": "xla-flops",
    "xla: bytes": "xla-bytes",
    "xla: flops + bytes": "xla",
    "roofline (xla counts)": "xla-roofline",
}


def get_model(name: str) -> TimeModel:
    """The model of an id in `MODELS`, or of the name a profile of versions 1 to 3 stored (`LEGACY_NAMES`)."""
    model_id = LEGACY_NAMES.get(name, name)
    for model in MODELS:
        if model.id == model_id:
            return model
    raise UserError(f"unknown time model {name!r}; known: {', '.join(m.id for m in MODELS)}")


def design_matrix(model: TimeModel, cols: dict[str, np.ndarray], device: dict[str, float]) -> np.ndarray:
    """The model's features of every record (one row each), and a last column of ones (the constant)."""
    return np.column_stack([f(cols, device) for f in model.features] + [np.ones_like(cols["d"])])


def fit_coefficients(X: np.ndarray, t: np.ndarray, relative_to: np.ndarray | None = None) -> np.ndarray:
    """Non-negative least squares on relative errors: minimise sum(((X c - t) / t)^2), c >= 0 (errors relative to
    `relative_to` instead of t where given: a part of a step fitted by how much it moves the step).

    Columns are scaled to unit norm first so that features of 1e12 and a constant of 1 are equally
    well conditioned; the coefficients are scaled back.
    """
    denominator = t if relative_to is None else relative_to
    A = X / denominator[:, None]
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    coef, _ = optimize.nnls(A / scale, t / denominator, maxiter=50 * X.shape[1])
    return coef / scale


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Mean and max absolute percentage error, R^2 and Spearman's rank correlation of predicted step times."""
    ape = np.abs(predicted / measured - 1)
    ss_res = np.sum((measured - predicted) ** 2)
    ss_tot = np.sum((measured - measured.mean()) ** 2)
    return dict(
        mape=float(ape.mean()),
        max_ape=float(ape.max()),
        r2=float(1 - ss_res / ss_tot),
        spearman=spearman(predicted, measured),
    )


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (as Spearman's correlation takes them)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return ((upper - (counts - 1) / 2.0)[inverse.ravel()]).astype(float)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's of the ranks (numpy's, where scipy.stats costs a second to import);
    nan where either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
    return float(np.sum(rx * ry) / denominator) if denominator > 0 else float("nan")


def architecture_folds(cols: dict[str, np.ndarray], k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold label per record: whole architectures (d, n, h, w, s; any b) go to one fold, shuffled."""
    keys = np.column_stack([cols[c] for c in ("d", "n", "h", "w", "s")])
    _, group = np.unique(keys, axis=0, return_inverse=True)
    n_groups = group.max() + 1
    if n_groups < k:
        raise UserError(f"cross-validation needs at least {k} architectures, the records hold {n_groups}")
    fold_of_group = np.random.default_rng(seed).permutation(n_groups) % k
    return fold_of_group[group.ravel()]


def _design_matrices(
    model: TimeModel, cols: dict[str, np.ndarray], device: dict[str, Any]
) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(device, design matrix) for each value of the model's `tuned` setting (its grid), or the device's own alone."""
    if not model.tuned:
        return [(device, design_matrix(model, cols, device))]
    return [(d, design_matrix(model, cols, d)) for d in ({**device, model.tuned: v} for v in model.grid)]


def _fit_on(
    model: TimeModel, matrices: list[tuple[dict[str, Any], np.ndarray]], t: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """`fit_model` on design matrices already made: the coefficients, the device and its design matrix (all rows)."""

    t_rows = t[rows]

    def fit(X: np.ndarray) -> np.ndarray:
        return fit_coefficients(X, t_rows) if model.constant else np.append(fit_coefficients(X[:, :-1], t_rows), 0.0)

    fits = []
    for device, X in matrices:
        X_rows = X[rows]
        coef = fit(X_rows)
        fits.append((float(np.sum((X_rows @ coef / t_rows - 1) ** 2)), coef, device, X))
    least = min(fit[0] for fit in fits)
    alike = [candidate for candidate in fits if candidate[0] <= least * (1 + 1e-9) + 1e-300]
    _, coef, device, X = alike[len(alike) // 2]
    return coef, device, X


def fit_model(
    model: TimeModel, cols: dict[str, np.ndarray], device: dict[str, Any], rows: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The model's coefficients fitted to `rows` of the records (a boolean mask; all where None) and the device it
    predicts with: for a model with a `tuned` setting, the value of its grid whose fit errs least on those rows (the
    relative squared error `fit_coefficients` minimises), set in the device returned. Where several values fit
    alike (a cliff anywhere in the gap between two records' working sets sorts the records the same way), the middle
    one: the farthest from the records either side. On the 31 calibrations of results/cpu/calibrations/ (the cliff
    model with a free constant) the middle held out at 6.6% median against 7.5% for the lowest (the largest error per
    calibration 31% against 45%)."""
    rows = np.ones(cols["time"].shape, dtype=bool) if rows is None else rows
    coef, tuned, _ = _fit_on(model, _design_matrices(model, cols, device), cols["time"], rows)
    return coef, tuned


def _held_out_predictions(
    model: TimeModel,
    matrices: list[tuple[dict[str, Any], np.ndarray]],
    t: np.ndarray,
    folds: np.ndarray,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Each of `rows`' records (all where None) predicted by the model fitted to the others of `rows` outside its
    fold (`folds`: a label per record); nan outside `rows`."""
    rows = np.ones(t.shape, dtype=bool) if rows is None else rows
    predicted = np.full(t.shape, np.nan)
    for f in np.unique(folds[rows]):
        test = rows & (folds == f)
        coef, _, X = _fit_on(model, matrices, t, rows & ~test)
        predicted[test] = X[test] @ coef
    return predicted


def cross_validate(
    model: TimeModel, cols: dict[str, np.ndarray], device: dict[str, float], k: int = 5
) -> dict[str, Any]:
    """Held-out predictions for every record (each predicted by a fit that never saw its architecture; a tuned
    setting is chosen inside each fit, from the records it fits)."""
    t = cols["time"]
    matrices = _design_matrices(model, cols, device)  # made once: the folds' fits choose among them
    if not all(np.all(np.isfinite(X)) for _, X in matrices):
        return dict(id=model.id, label=model.label, error="features missing in some records")
    predicted = _held_out_predictions(model, matrices, t, architecture_folds(cols, k))
    coef, tuned, X = _fit_on(model, matrices, t, np.ones(t.shape, dtype=bool))
    result = dict(
        id=model.id,
        label=model.label,
        analytic=model.analytic,
        description=model.description,
        coefficients=[float(c) for c in coef],
        held_out=scores(predicted, t),
        in_sample=scores(X @ coef, t),
        predicted=predicted,
    )
    if model.tuned:
        result["tuned"] = {model.tuned: tuned[model.tuned]}
    return result


@dataclass(frozen=True)
class ModelChoice:
    """The choice of a profile's model among several, itself held out (`choice_held_out`)."""

    held_out: dict[str, float]  # `scores` of the nested predictions: mape, max_ape, r2, spearman
    chosen: tuple[str, ...]  # the model each fold's inner cross-validation chose, by fold

    @property
    def mape(self) -> float:
        """The held-out mean absolute relative error of the choice."""
        return self.held_out["mape"]


def choice_held_out(
    models: list[TimeModel], cols: dict[str, np.ndarray], device: dict[str, float], k: int = 5
) -> ModelChoice | None:
    """The held-out scores of choosing among `models` as `calibrate` chooses a profile's (the least held-out mean
    error), the choice itself cross-validated: in each of `k` folds by architecture the models are compared by a
    cross-validation on the other folds alone (`k` - 1 folds within them), and the best there, fitted to them, predicts
    the fold. The chosen model's own held-out error is lower than this by the choice, the least of several noisy
    errors: on 74 calibrations of the quickstart's grid on 2 CPU cores (results/cpu/calibrations/README.md, stops 53
    and 54) the best model held out at 4.7% median, the choice itself at 5.0%. None with fewer than 2 models, or
    records too few or lacking a model's features for folds within folds."""
    if len(models) < 2:
        return None
    t = cols["time"]
    matrices = [_design_matrices(m, cols, device) for m in models]
    if not all(np.all(np.isfinite(X)) for mats in matrices for _, X in mats):
        return None
    try:
        folds = architecture_folds(cols, k)
        inner = [
            architecture_folds({key: v[folds != f] for key, v in cols.items() if np.shape(v) == t.shape}, k - 1)
            for f in range(k)
        ]
    except UserError:
        return None
    predicted, chosen = np.empty_like(t), []
    for f in range(k):
        train = folds != f
        labels = np.full(t.shape, -1)
        labels[train] = inner[f]
        errors = [
            float(np.mean(np.abs(_held_out_predictions(m, mats, t, labels, train)[train] / t[train] - 1)))
            for m, mats in zip(models, matrices, strict=True)
        ]
        best = int(np.argmin(errors))
        coef, _, X = _fit_on(models[best], matrices[best], t, train)
        predicted[~train] = X[~train] @ coef
        chosen.append(models[best].id)
    return ModelChoice(scores(predicted, t), tuple(chosen))


def compare_models(
    records: list[dict[str, Any]], device: dict[str, float], k: int = 5, statistic: str = DEFAULT_STATISTIC
) -> list[dict[str, Any]]:
    """Cross-validate every model on the `ok` records (fitted to `statistic`); best held-out mean error first. A model
    whose features read a cache size the device does not give (accelerators, external records) is left out: it
    would repeat `exact-kinds`."""
    ok = [r for r in records if r.get("status") == "ok"]
    if len(ok) < 2 * k:
        raise UserError(f"only {len(ok)} successful timing records; at least {2 * k} are needed to compare models")
    cols = shape_columns(ok, statistic)
    device = with_working_set_ratio(device, cols)
    several = len(np.unique(cols["k"])) > 1
    parallel = bool(np.any(cols["tp"] * cols["pp"] > 1))
    applies = [m for m in MODELS if (several or not m.multi_device) and (parallel or not m.model_parallel)]
    results = [cross_validate(m, cols, device, k) for m in applies if not m.needs or device.get(m.needs)]
    return sorted(results, key=lambda r: r.get("held_out", {}).get("mape", np.inf))
