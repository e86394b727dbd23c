"""Model-parallel step-time models: their features reduce to the data-parallel model's without a layout, they
win on step times that carry tensor-parallel all-reduces and a pipeline bubble, and their profiles still
predict the planner's data-parallel steps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from smallest_loss.timing.models import MODELS, compare_models, design_matrix, get_model, shape_columns
from smallest_loss.timing.profile import DeviceProfile

DATA_PARALLEL = "data-parallel"
MODEL_PARALLEL = [m for m in MODELS if m.model_parallel]
DEVICE = dict(peak_flops=1e14, bandwidth=1e12)


def plain_records() -> list[dict]:
    """Records of our own kind (no layout): several shapes, dtypes and device counts."""
    return [
        dict(
            status="ok",
            config=dict(d=d, n=n, h=d // 32, w=4 * d, s=s, v=512, activation=act),
            batch=8 * k,
            device_count=k,
            dtype=dtype,
            step_seconds=1e-9 * d * d * n * s,
        )
        for d, n, s, k, (act, dtype) in itertools.product(
            (64, 256), (2, 6), (64, 256), (1, 2, 8), (("gelu", "float32"), ("swiglu", "bfloat16"))
        )
    ]


def test_without_a_layout_the_features_are_the_data_parallel_models():
    cols = shape_columns(plain_records())
    old = design_matrix(get_model(DATA_PARALLEL), cols, DEVICE)
    for model in MODEL_PARALLEL:
        X = design_matrix(model, cols, DEVICE)
        names = [f.__name__ for f in model.features]
        if len(names) > 7:  # the full models: the data-parallel six, then communication and bubble
            np.testing.assert_array_equal(X[:, :6], old[:, :6])
            assert not X[:, 6:-1].any(), model.id  # no tensor-parallel bytes, bubble, or pipeline sends
        else:  # the compact one: FLOPs in one column, weights, activations, gradient sync, then zeros
            np.testing.assert_allclose(X[:, 0], old[:, 0] + old[:, 1], rtol=1e-15)
            np.testing.assert_array_equal(X[:, 1:4], old[:, [2, 3, 5]])
            assert not X[:, 4:-1].any(), model.id


def test_model_parallel_models_are_compared_only_on_a_model_parallel_layout():
    names = {r["id"] for r in compare_models(plain_records(), DEVICE)}
    assert DATA_PARALLEL in names and not names & {m.id for m in MODEL_PARALLEL}


# Synthetic step times, priced by hand from the sources' formulas (not from timing/models.py): Megatron-LM's
# FLOPs per iteration with recomputation (Narayanan et al. 2021, Eq. 3) at a fixed rate per device, the pipeline
# bubble (pp-1)/m of that compute (their Eq. 1), 6 ring all-reduces of the fp16 (b/dp) x s x d activations per
# layer over tp (Shoeybi et al. 2019: 2 forward, 2 backward, 2 in the recomputed forward), the float32 gradient
# ring all-reduce over dp, and a fixed overhead.
RATE, TP_SECONDS_PER_BYTE, DP_SECONDS_PER_BYTE, OVERHEAD = 1.5e14, 1 / 1.5e11, 1 / 2.5e10, 0.05


def megatron_seconds(d: int, n: int, s: int, v: int, b: int, tp: int, pp: int, dp: int, micro: int) -> float:
    flops = 96 * b * s * n * d**2 * (1 + s / (6 * d) + v / (16 * n * d))
    compute = flops / (tp * pp * dp) / RATE
    bubble = (pp - 1) / (b / dp / micro) * compute
    tensor = 6 * n / pp * 2 * (tp - 1) / tp * 2 * (b / dp) * s * d * TP_SECONDS_PER_BYTE
    params = 12 * n * d**2 + v * d
    data = 2 * (dp - 1) / dp * 4 * params / (tp * pp) * DP_SECONDS_PER_BYTE
    return compute + bubble + tensor + data + OVERHEAD


def megatron_records(noise: float = 0.01, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for (d, n), (tp, pp, dp), micro in itertools.product(
        ((1024, 16), (1536, 24), (2048, 24), (3072, 32), (4096, 32), (6144, 40)),
        ((1, 1, 8), (2, 1, 4), (8, 1, 2), (1, 4, 4), (4, 2, 2), (8, 4, 1), (8, 8, 2)),
        (1, 4),
    ):
        b = 64 * dp
        t = megatron_seconds(d, n, 2048, 51200, b, tp, pp, dp, micro) * (1 + noise * rng.standard_normal())
        records.append(
            dict(
                status="ok",
                config=dict(d=d, n=n, h=d // 64, w=4 * d, s=2048, v=51200, activation="gelu", norm="layernorm"),
                batch=b,
                device_count=tp * pp * dp,
                dtype="float16",
                step_seconds=t,
                parallel=dict(tp=tp, pp=pp, dp=dp, microbatch=micro, recompute=True),
            )
        )
    return records


def test_model_parallel_models_win_on_megatron_like_step_times():
    results = {r["id"]: r["held_out"]["mape"] for r in compare_models(megatron_records(), DEVICE) if "held_out" in r}
    full = results["model-parallel"]
    assert full < 0.02  # 1% noise; element-wise work and the optimizer are ours, not in Eq. 3
    old = {name: mape for name, mape in results.items() if not get_model(name).model_parallel}
    assert min(old.values()) > 3 * full, old
    assert max(results[m.id] for m in MODEL_PARALLEL) < min(old.values())


def test_a_model_parallel_profile_predicts_the_planners_data_parallel_step():
    """The planner gives shapes, b and k only: a model-parallel profile then predicts with tp = pp = 1, one
    micro-batch and no recomputation, exactly what the data-parallel model with its first six rates predicts."""
    model = MODEL_PARALLEL[0]
    coefficients = tuple(np.linspace(1e-13, 4e-13, len(model.features))) + (2e-3,)
    parallel = DeviceProfile(
        device_kind="gpu",
        model=model.id,
        coefficients=coefficients,
        held_out=dict(mape=0.01),
        dtype="float16",
        **DEVICE,
    )
    plain = DeviceProfile(
        device_kind="gpu",
        model=DATA_PARALLEL,
        coefficients=coefficients[:6] + coefficients[-1:],
        held_out=dict(mape=0.01),
        dtype="float16",
        **DEVICE,
    )
    shape = dict(
        d=np.array([512, 1024]), n=8, h=8, w=2048, s=1024, v=32000, b=np.array([[16], [64]]), k=np.array([[1], [4]])
    )
    predicted = parallel.predict_step_seconds(**shape)
    assert predicted.shape == (2, 2) and np.all(predicted > 0)
    np.testing.assert_allclose(predicted, plain.predict_step_seconds(**shape), rtol=1e-12)


@pytest.mark.parametrize("tp, pp, micro, more", [(2, 1, 1, "tensor"), (1, 4, 1, "bubble"), (1, 4, 8, "less bubble")])
def test_the_layout_moves_the_features_the_way_it_should(tp, pp, micro, more):
    """On 8 devices, against pure data parallelism: tensor parallelism adds all-reduce bytes and shrinks the
    gradient all-reduce per device; a pipeline adds a bubble, smaller with more micro-batches."""
    base = dict(
        status="ok",
        config=dict(d=1024, n=8, h=16, w=4096, s=1024, v=32000),
        batch=256,
        device_count=8,
        dtype="bfloat16",
        step_seconds=1.0,
    )
    layouts = [
        dict(tp=1, pp=1, microbatch=None, recompute=False),
        dict(tp=tp, pp=pp, microbatch=micro, recompute=False),
    ]
    cols = shape_columns([dict(base, parallel=layout) for layout in layouts])
    model = get_model("model-parallel")
    X = design_matrix(model, cols, DEVICE)
    names = [f.__name__ for f in model.features]
    dp_sync, tensor, bubble = (
        names.index(k) for k in ("_data_parallel_sync_bytes", "_tensor_parallel_bytes", "_pipeline_bubble_flops")
    )
    assert X[1, 0] == pytest.approx(X[0, 0], rel=0.01)  # the same dense work per device (optimizer apart)
    assert X[1, dp_sync] < X[0, dp_sync]  # fewer replicas, smaller shards
    assert (X[1, tensor] > 0) == (tp > 1) and X[0, tensor] == 0 == X[0, bubble]
    m = 256 / (8 // (tp * pp)) / micro
    assert X[1, bubble] == pytest.approx((pp - 1) / m * (X[1, 0] + X[1, 1]))
