"""Step-time models: recovery of known coefficients, folds that hold out whole architectures, profiles."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.timing.counts import FLOPS, MEMCPYS
from smallest_loss.timing.models import (
    architecture_folds,
    compare_models,
    design_matrix,
    fit_coefficients,
    get_model,
    spearman,
)
from smallest_loss.timing.profile import DeviceProfile, load_profile, save_profile

DEVICE = dict(peak_flops=1e11, bandwidth=2e10)


def synthetic_records(c1=3e-11, c2=2e-13, c3=4e-4, noise=0.0, seed=0):
    """Timing records whose times follow the paper's model exactly (plus optional relative noise)."""
    rng = np.random.default_rng(seed)
    records = []
    for d in (32, 64, 128, 256):
        for n in (1, 2, 4):
            for s in (32, 128):
                for b in (2, 8):
                    h, w, v = d // 16, 4 * d, 256
                    t = b * (c1 * MEMCPYS(d, n, s, v, w, h) + c2 * FLOPS(d, n, s, v, w, h)) + c3
                    t *= 1 + noise * rng.standard_normal()
                    records.append(
                        dict(
                            status="ok",
                            config=dict(d=d, n=n, h=h, w=w, s=s, v=v),
                            batch=b,
                            step_seconds=t,
                            dtype="float32",
                            xla=dict(flops=b * FLOPS(d, n, s, v, w, h), bytes_accessed=b * d * s),
                        )
                    )
    return records


def test_fit_recovers_known_coefficients():
    from smallest_loss.timing.models import shape_columns

    cols = shape_columns(synthetic_records())
    coef = fit_coefficients(design_matrix(get_model("paper"), cols, DEVICE), cols["time"])
    np.testing.assert_allclose(coef, [3e-11, 2e-13, 4e-4], rtol=1e-6)


def test_comparison_ranks_the_true_model_first():
    results = compare_models(synthetic_records(noise=0.01), DEVICE)
    assert results[0]["id"] == "paper"
    assert results[0]["held_out"]["mape"] < 0.02
    flops_only = next(r for r in results if r["id"] == "paper-flops")
    assert flops_only["held_out"]["mape"] > results[0]["held_out"]["mape"]


def test_the_choice_of_model_is_itself_held_out():
    from smallest_loss.timing.models import choice_held_out, cross_validate, shape_columns

    cols = shape_columns(synthetic_records(noise=0.01))
    paper, flops_only = get_model("paper"), get_model("paper-flops")
    choice = choice_held_out([flops_only, paper], cols, DEVICE)
    # Every fold's cross-validation within the other folds finds the true model, which then predicts the fold as
    # its own cross-validation does: the same held-out errors.
    assert choice.chosen == ("paper",) * 5
    assert choice.mape == pytest.approx(cross_validate(paper, cols, DEVICE)["held_out"]["mape"], rel=1e-12)
    # Two models that fit noisy times alike: each fold chooses one of them, and every record is predicted.
    noisy = shape_columns(synthetic_records(noise=0.05, seed=3))
    close = choice_held_out([paper, get_model("paper-memcpys")], noisy, DEVICE)
    assert set(close.chosen) <= {"paper", "paper-memcpys"} and len(close.chosen) == 5
    assert 0 < close.mape < 0.2 and np.isfinite(close.held_out["r2"])
    assert choice_held_out([paper], cols, DEVICE) is None  # no choice to make
    few = {k: v[:6] for k, v in cols.items()}  # 6 records of 3 architectures: no folds within folds
    assert choice_held_out([flops_only, paper], few, DEVICE) is None


def test_folds_hold_out_whole_architectures():
    from smallest_loss.timing.models import shape_columns

    cols = shape_columns(synthetic_records())
    folds = architecture_folds(cols, k=5)
    keys = list(zip(*(cols[c] for c in ("d", "n", "h", "w", "s")), strict=True))
    for key in set(keys):
        assert len({int(folds[i]) for i, k in enumerate(keys) if k == key}) == 1
    assert len(set(folds.tolist())) == 5


def test_profile_round_trip_and_prediction(tmp_path):
    profile = DeviceProfile(
        device_kind="cpu",
        model="paper",
        coefficients=(3e-11, 2e-13, 4e-4),
        peak_flops=1e11,
        bandwidth=2e10,
        held_out=dict(mape=0.01),
    )
    loaded = load_profile(save_profile(tmp_path / "p.json", profile))
    assert loaded == profile
    t = loaded.predict_step_seconds(d=np.array([64, 128]), n=2, h=4, w=np.array([256, 512]), s=64, v=256, b=8)
    expected = 8 * (3e-11 * MEMCPYS(64, 2, 64, 256, 256, 4) + 2e-13 * FLOPS(64, 2, 64, 256, 256, 4)) + 4e-4
    assert t.shape == (2,) and t[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        (json.dumps({"version": 1, "model": "paper-flops"}), "malformed"),
        (
            json.dumps(
                {
                    "version": 1,
                    "device_kind": "cpu",
                    "model": "xla-flops",
                    "coefficients": [1, 0],
                    "peak_flops": 1,
                    "bandwidth": 1,
                    "held_out": {},
                }
            ),
            "needs XLA counts",
        ),
    ],
)
def test_bad_profiles_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "profile.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_profile(path)


def test_work_by_kind_model_recovers_known_rates():
    """Synthetic times from known per-kind rates (and a cache penalty) are fitted back exactly."""
    from smallest_loss.timing.models import shape_columns

    records = [
        dict(status="ok", config=dict(d=d, n=n, h=h, w=r * d, s=s, v=v), batch=b, step_seconds=1.0)
        for d in (32, 128)
        for n in (1, 3)
        for h in (1, 4)
        for r in (2, 4)
        for s in (32, 128)
        for v in (256, 1024)
        for b in (2, 16)
    ]
    model = get_model("exact-kinds-cache")
    cols = shape_columns(records)
    X = design_matrix(model, cols, dict(DEVICE, cache_bytes=2**16))
    truth = np.linspace(1, 2, X.shape[1]) * np.array([1e-12] * (X.shape[1] - 1) + [1e-4])
    np.testing.assert_allclose(fit_coefficients(X, X @ truth), truth, rtol=1e-4)


def test_activation_traffic_beyond_the_last_level_cache():
    """`exact-kinds-llc`'s last feature: a step's activation bytes times the share of its working set beyond the
    last-level cache; nothing where the set fits or the cache is unknown (external records, accelerators)."""
    from smallest_loss.timing.counts import train_memory_bytes
    from smallest_loss.timing.models import _activation_bytes, shape_columns

    records = [
        dict(status="ok", config=dict(d=d, n=n, h=2, w=4 * d, s=64, v=256), batch=16, step_seconds=1.0)
        for d, n in ((32, 1), (128, 4), (256, 8))
    ]
    cols, model = shape_columns(records), get_model("exact-kinds-llc")
    memory = np.array([train_memory_bytes(r["config"]["d"], r["config"]["n"], 2, 4 * r["config"]["d"], 64, 256, 16)
                       for r in records])  # fmt: skip
    llc = float(np.median(memory))
    spilled = design_matrix(model, cols, dict(DEVICE, llc_bytes=llc))[:, -2]
    expected = _activation_bytes(cols, DEVICE) * np.clip(1 - llc / memory, 0, 1)
    np.testing.assert_allclose(spilled, expected, rtol=1e-12)
    assert spilled[0] == 0 and spilled[2] > 0  # the smallest step fits, the largest does not
    assert not design_matrix(model, cols, DEVICE)[:, -2].any()  # no cache known: the feature is 0


def test_all_traffic_from_memory_beyond_the_last_level_cache():
    """`exact-grouped-thrash`'s last feature: every byte of a step whose working set exceeds the last-level cache (a
    cyclic sweep larger than an LRU cache keeps none of it), nothing below it or where the cache is unknown."""
    from smallest_loss.timing.counts import train_memory_bytes
    from smallest_loss.timing.models import _exact_bytes, shape_columns

    records = [
        dict(status="ok", config=dict(d=d, n=n, h=2, w=4 * d, s=64, v=256), batch=16, step_seconds=1.0)
        for d, n in ((32, 1), (128, 4), (256, 8))
    ]
    cols, model = shape_columns(records), get_model("exact-grouped-thrash")
    memory = [train_memory_bytes(r["config"]["d"], r["config"]["n"], 2, 4 * r["config"]["d"], 64, 256, 16)
              for r in records]  # fmt: skip
    thrashed = design_matrix(model, cols, dict(DEVICE, llc_bytes=float(np.median(memory))))[:, -2]
    np.testing.assert_allclose(thrashed, [0.0, 0.0, _exact_bytes(cols, DEVICE)[2]], rtol=1e-12)
    assert not design_matrix(model, cols, DEVICE)[:, -2].any()  # no cache known: the feature is 0
    # the rest: exact-kinds' work grouped (dense matmuls, attention's, element-wise, optimizer) and the layers
    kinds, grouped = design_matrix(get_model("exact-kinds"), cols, DEVICE), design_matrix(model, cols, DEVICE)
    want = [kinds[:, [0, 1, 3]].sum(1), kinds[:, 2], kinds[:, 4:8].sum(1), kinds[:, 8], cols["n"]]
    np.testing.assert_allclose(grouped[:, :5], np.stack(want, axis=1), rtol=1e-12)


def test_profile_prediction_honours_architecture_variants():
    model = get_model("exact-kinds")
    profile = DeviceProfile(
        device_kind="cpu",
        model=model.id,
        coefficients=(1e-12,) * len(model.features) + (1e-4,),
        peak_flops=1e11,
        bandwidth=2e10,
        held_out=dict(mape=0.1),
    )
    shape = dict(d=np.array([64, 128]), n=2, h=4, w=256, s=64, v=256, b=np.array([[1], [8]]))
    gelu = profile.predict_step_seconds(**shape)
    assert gelu.shape == (2, 2) and np.all(np.diff(gelu, axis=0) > 0)  # more sequences, more time
    assert np.all(profile.predict_step_seconds(**shape, activation="swiglu") > gelu)  # a third MLP matrix
    assert np.all(profile.predict_step_seconds(**shape, tied=False) > gelu)  # the optimizer updates v*d more


def test_profile_predicts_what_the_model_predicts_from_the_equivalent_record():
    """For every analytic model: a profile's prediction for a configuration (activation, norm, tying and
    dtype included) equals the model applied to the timing record of that configuration."""
    from smallest_loss.configs.schema import ModelConfig
    from smallest_loss.timing.measure import base_record
    from smallest_loss.timing.models import MODELS, shape_columns

    cfg = ModelConfig(
        v=512,
        d=64,
        n=2,
        h=4,
        w=192,
        s=32,
        activation="swiglu",
        norm="layernorm",
        tied_embeddings=False,
        dtype="bfloat16",
    )
    # Small enough that some element-wise tensors spill (L2), and that the step's working set leaves the last level.
    device = dict(DEVICE, cache_bytes=2**14, llc_bytes=2**20)
    for model in (m for m in MODELS if m.analytic):
        coefficients = tuple(np.linspace(1e-12, 3e-12, len(model.features))) + (1e-4,)
        profile = DeviceProfile(
            device_kind="cpu",
            model=model.id,
            coefficients=coefficients,
            dtype="bfloat16",
            held_out=dict(mape=0.1),
            **device,
        )
        records = [dict(base_record(cfg, 8), device_count=k, status="ok", step_seconds=1.0) for k in (1, 2)]
        from_records = design_matrix(model, shape_columns(records), device) @ np.asarray(coefficients)
        over_two = profile.predict_step_seconds(
            cfg.d,
            cfg.n,
            cfg.h,
            cfg.w,
            cfg.s,
            cfg.v,
            8,
            k=2,
            activation="swiglu",
            norm="layernorm",
            tied=False,
            dtype="bfloat16",
        )
        assert [profile.step_seconds_for(cfg, 8), over_two[0]] == pytest.approx(from_records, rel=1e-12), model.id
        with pytest.raises(UserError, match="calibrated in bfloat16 and cannot predict float32"):
            profile.predict_step_seconds(64, 2, 4, 192, 32, 512, 8, dtype="float32")


def test_old_profiles_load_unless_their_bytes_were_counted_in_the_wrong_dtype(tmp_path):
    profile = DeviceProfile(
        device_kind="cpu",
        model="exact",
        coefficients=(1e-12, 1e-11, 1e-4),
        peak_flops=1e11,
        bandwidth=2e10,
        held_out=dict(mape=0.1),
        alternatives={"exact": [1e-12, 1e-11, 1e-4], "paper-flops": [1e-12, 1e-4]},
    )
    data = json.loads(save_profile(tmp_path / "p.json", profile).read_text())
    assert data["version"] == 6 and data["dtype"] == "float32" and data["model"] == "exact"
    # Versions 1 to 3 named models by their titles then (timing.models.LEGACY_NAMES): they load as ids.
    titles = dict(model="exact: flops + bytes", alternatives={"exact: flops + bytes": [1], "paper: flops only": [2]})
    for version, dtype, loads in ((2, "float32", True), (2, "bfloat16", False), (3, "bfloat16", True)):
        (tmp_path / "old.json").write_text(json.dumps(dict(data, **titles, version=version, dtype=dtype)))
        if loads:
            old = load_profile(tmp_path / "old.json")
            assert old.dtype == dtype and old.model == "exact"
            assert old.alternatives == {"exact": [1], "paper-flops": [2]}
        else:
            with pytest.raises(UserError, match="counted bfloat16 activations at 4 bytes"):
                load_profile(tmp_path / "old.json")


def test_roofline_features_are_the_slower_of_compute_and_memory():
    """The roofline features are max(FLOPs / peak, bytes / bandwidth), on our counts as the record holds them
    (dtype included) or on XLA's; which side binds moves with the device's rates."""
    from smallest_loss.configs.schema import ModelConfig
    from smallest_loss.timing.measure import base_record
    from smallest_loss.timing.models import shape_columns

    records = [
        dict(
            base_record(ModelConfig(v=256, d=64, n=2, h=4, w=256, s=s, dtype=dtype), b),
            status="ok",
            step_seconds=1.0,
            xla=dict(flops=3e9, bytes_accessed=2e8),
        )
        for s, b, dtype in ((32, 2, "float32"), (128, 8, "bfloat16"))
    ]
    flops = np.array([r["counts"]["flops"] for r in records])
    nbytes = np.array([r["counts"]["bytes"] for r in records])
    cols = shape_columns(records)
    for peak, bandwidth in ((1e9, 1e12), (1e15, 1e6), (1e11, 2e10)):
        device = dict(peak_flops=peak, bandwidth=bandwidth)
        exact = design_matrix(get_model("roofline"), cols, device)[:, 0]
        np.testing.assert_allclose(exact, np.maximum(flops / peak, nbytes / bandwidth), rtol=1e-12)
        xla = design_matrix(get_model("xla-roofline"), cols, device)[:, 0]
        np.testing.assert_allclose(xla, np.maximum(3e9 / peak, 2e8 / bandwidth), rtol=1e-12)
    assert np.all(
        design_matrix(get_model("roofline"), cols, dict(peak_flops=1e9, bandwidth=1e12))[:, 0] == flops / 1e9
    )  # compute-bound on a slow-compute device


def test_spilled_work_sees_the_dtype():
    """An element-wise tensor of b*s*d values spills out of a cache of 3*b*s*d bytes in float32 (4 bytes
    each), not in bf16 (2 bytes)."""
    from smallest_loss.configs.schema import ModelConfig
    from smallest_loss.timing.measure import base_record
    from smallest_loss.timing.models import shape_columns

    b, cfg = 4, ModelConfig(v=256, d=64, n=1, h=4, w=256, s=32)
    records = [
        dict(base_record(c, b), status="ok", step_seconds=1.0)
        for c in (cfg, dataclasses.replace(cfg, dtype="bfloat16"))
    ]
    model = get_model("exact-kinds-cache")
    X = design_matrix(model, shape_columns(records), dict(DEVICE, cache_bytes=3 * b * cfg.s * cfg.d))
    names = [f.__name__ for f in model.features]
    width, spilled = names.index("width"), names.index("width_spilled")
    assert X[0, spilled] == X[0, width] > 0 and X[1, spilled] == 0 and X[1, width] == X[0, width]


def test_spearman_matches_scipy_with_ties_and_constant_inputs():
    """The rank correlation the comparison table reports is numpy's own; scipy's is the reference."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    for i in range(60):
        n = int(rng.integers(3, 30))
        x = rng.integers(0, 6, n).astype(float) if i % 2 else rng.normal(size=n)  # ties in every other case
        y = np.round(x + rng.normal(size=n) * rng.uniform(0.1, 3), 1 if i % 3 else 0)
        assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert spearman(np.arange(5.0), -(np.arange(5.0) ** 3)) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(4), np.arange(4.0)))


def test_the_working_set_is_scaled_by_the_measured_ratio():
    """`working_set_ratio`: the median of XLA's compiled peak memory over `train_memory_bytes`; a step whose counted
    working set fits the last-level cache but whose measured one does not is priced as beyond it."""
    from smallest_loss.timing.counts import train_memory_bytes
    from smallest_loss.timing.models import shape_columns, working_set_ratio

    shapes = ((32, 1), (128, 4), (256, 8))
    memory = [train_memory_bytes(d, n, 2, 4 * d, 64, 256, 16) for d, n in shapes]
    records = [
        dict(status="ok", config=dict(d=d, n=n, h=2, w=4 * d, s=64, v=256), batch=16, step_seconds=1.0,
             xla=dict(peak_bytes=ratio * m))
        for (d, n), m, ratio in zip(shapes, memory, (1.1, 1.2, 1.3), strict=True)
    ]  # fmt: skip
    cols = shape_columns(records)
    assert working_set_ratio(cols) == pytest.approx(1.2)
    assert working_set_ratio(shape_columns([dict(r, xla={}) for r in records])) is None  # external tables
    model, llc = get_model("exact-grouped-thrash"), 1.1 * memory[1]  # the middle step: 1.0x fits, 1.2x does not
    plain = design_matrix(model, cols, dict(DEVICE, llc_bytes=llc))[:, -2]
    scaled = design_matrix(model, cols, dict(DEVICE, llc_bytes=llc, working_set_ratio=1.2))[:, -2]
    assert plain[1] == 0 and scaled[1] > 0 and plain[2] == scaled[2] > 0 and scaled[0] == 0


def cliff_records(cliff: float, noise: float = 0.01) -> tuple[list[dict], dict]:
    """Records of 40 architectures whose step times follow `exact-grouped-cliff`'s features with the jump at `cliff`
    times the last-level cache (each term about a share of the time, no constant; plus relative noise), and their
    device."""
    from smallest_loss.timing.models import shape_columns

    shapes = [(d, n, d // 16, m * d) for d in (32, 64, 96, 128, 192) for n in (1, 2, 4, 6) for m in (2, 4)]
    records = [
        dict(status="ok", config=dict(d=d, n=n, h=h, w=w, s=64, v=256), batch=16, step_seconds=1.0)
        for d, n, h, w in shapes
    ]
    cols, model = shape_columns(records), get_model("exact-grouped-cliff")
    llc = float(np.median(model_memory(cols))) / 1.2  # the cliff at 2 falls inside the grid's working sets
    device = dict(DEVICE, llc_bytes=llc, llc_cliff=cliff)
    X = design_matrix(model, cols, device)
    coef = 1 / np.maximum(X.mean(axis=0), 1e-30)  # every term its share, but for the constant (the model has none)
    coef[-1] = 0.0
    times = X @ coef * (1 + noise * np.random.default_rng(0).standard_normal(len(records)))
    return [dict(r, step_seconds=float(t)) for r, t in zip(records, times, strict=True)], dict(DEVICE, llc_bytes=llc)


def model_memory(cols: dict) -> np.ndarray:
    from smallest_loss.timing.counts import train_memory_bytes
    from smallest_loss.timing.models import _per_variant

    return _per_variant(cols, train_memory_bytes)


def test_the_fit_finds_the_cache_cliff_where_the_steps_fall_out_of_cache():
    """`exact-grouped-cliff` chooses the working set of its jump from its grid as it fits: on steps that jump at twice
    the cache it finds a cliff that sorts every step to the side it is on, and predicts held-out architectures far
    better than the jump at the cache's size (`exact-grouped-thrash`); the profile keeps the cliff and predicts with
    it."""
    from smallest_loss.timing.calibration import fit_records
    from smallest_loss.timing.models import CLIFF_GRID, shape_columns

    records, device = cliff_records(2.0)
    results = {r["id"]: r for r in compare_models(records, device)}
    cliff = results["exact-grouped-cliff"]["tuned"]["llc_cliff"]
    ratio = model_memory(shape_columns(records)) / device["llc_bytes"]
    assert cliff in CLIFF_GRID and np.array_equal(ratio > cliff, ratio > 2.0)
    # with no step between 1.75 and 2.3 times the cache, the cliffs from the last step within it to the first beyond
    # fit alike: the fit takes the middle one
    kept = [r for r, x in zip(records, ratio, strict=True) if not 1.75 < x < 2.3]
    wide = {r["id"]: r for r in compare_models(kept, device)}["exact-grouped-cliff"]["tuned"]["llc_cliff"]
    alike = [g for g in CLIFF_GRID if ratio[ratio <= 1.75].max() <= g < ratio[ratio >= 2.3].min()]
    assert len(alike) >= 3 and wide == alike[len(alike) // 2]
    assert results["exact-grouped-cliff"]["held_out"]["mape"] < 0.03
    assert results["exact-grouped-thrash"]["held_out"]["mape"] > 2 * results["exact-grouped-cliff"]["held_out"]["mape"]
    profile = fit_records(records, dict(device, device_kind="cpu")).profile
    assert profile.model == "exact-grouped-cliff" and profile.llc_cliff == cliff
    config = records[7]["config"]
    shape = {k: config[k] for k in ("d", "n", "h", "w", "s", "v")}
    predicted = profile.predict_step_seconds(**shape, b=16)
    cols = shape_columns(records[7:8])
    want = design_matrix(get_model(profile.model), cols, dict(device, llc_cliff=cliff)) @ profile.coefficients
    assert predicted == pytest.approx(want)
    # without a fitted cliff (a profile of the thrash model, or an older one) the cliff model jumps at the cache
    plain = design_matrix(get_model("exact-grouped-cliff"), cols, device)
    np.testing.assert_array_equal(plain, design_matrix(get_model("exact-grouped-thrash"), cols, device))


def test_a_held_out_step_never_chooses_its_own_cliff():
    """The cliff is chosen inside each fold's fit, from the records it fits: a held-out record's prediction does not
    move when its own time does (it would, were the cliff chosen on all records)."""
    from smallest_loss.timing.models import cross_validate, shape_columns, with_working_set_ratio

    records, device = cliff_records(1.26, noise=0.0)
    model, cols = get_model("exact-grouped-cliff"), shape_columns(records)
    first = cross_validate(model, cols, with_working_set_ratio(device, cols))
    for i in range(0, len(records), 4):  # every fourth record: a quarter of the refits
        changed = dict(cols, time=cols["time"] * np.where(np.arange(len(records)) == i, 3.0, 1.0))
        again = cross_validate(model, changed, with_working_set_ratio(device, changed))
        assert again["predicted"][i] == pytest.approx(first["predicted"][i], rel=1e-9)


def test_the_cliff_model_has_no_constant():
    """`exact-grouped-cliff` holds its constant at 0 (a CPU step's fixed cost is microseconds; a free one, pinned by
    the smallest configuration alone, priced it 30% slow held out), keeping the column so that profiles keep their
    shape; the other models fit theirs."""
    from smallest_loss.timing.models import fit_model, shape_columns, with_working_set_ratio

    records, device = cliff_records(2.0, noise=0.0)
    fixed = 0.5 * np.mean([r["step_seconds"] for r in records])  # a fixed cost per step to take
    records = [dict(r, step_seconds=r["step_seconds"] + fixed) for r in records]
    cols = shape_columns(records)
    device = with_working_set_ratio(device, cols)
    cliff, _ = fit_model(get_model("exact-grouped-cliff"), cols, device)
    thrash, _ = fit_model(get_model("exact-grouped-thrash"), cols, device)
    assert len(cliff) == len(get_model("exact-grouped-cliff").features) + 1 and cliff[-1] == 0.0 and thrash[-1] > 0


def test_the_transposed_hidden_gradient_is_priced_again_where_the_l2_s_sets_cannot_hold_its_rows():
    """`_aliased_hidden_transpose`: 1024 tokens a step read w elements apart (float32) through a 1 MiB L2 of 64-byte
    lines: a stride of 2^k lines leaves 16384 / 2^k of them, so w = 512 (32 lines, 512 rows) and 1024 (256 rows) are
    priced again, 64-384 and 768 (a stride of 48 lines: 1024 rows held) are not; fewer tokens fit again, and an
    unknown cache prices nothing."""
    from smallest_loss.timing.models import _aliased_hidden_transpose, shape_columns

    widths = (64, 128, 256, 384, 512, 768, 1024)
    records = [dict(config=dict(d=64, n=2, h=4, w=w, s=64, v=256), batch=16, step_seconds=1.0) for w in widths]
    cols = shape_columns(records)
    priced = _aliased_hidden_transpose(cols, dict(DEVICE, cache_bytes=2**20))
    assert [int(x) for x in priced] == [0, 0, 0, 0, 2 * 1024 * 512, 0, 2 * 1024 * 1024]
    small = shape_columns([dict(r, batch=4) for r in records])  # 256 tokens: the 256 rows w = 1024 leaves suffice
    assert not _aliased_hidden_transpose(small, dict(DEVICE, cache_bytes=2**20)).any()
    assert _aliased_hidden_transpose(small, dict(DEVICE, cache_bytes=2**19))[-1] > 0  # half the cache: they do not
    assert not _aliased_hidden_transpose(cols, dict(DEVICE, cache_bytes=None)).any()
    assert get_model("exact-grouped-alias").features[-1] is _aliased_hidden_transpose
