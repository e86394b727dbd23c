"""Step-time models: recovery of known coefficients, folds that hold out whole architectures, profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.timing.counts import FLOPS, MEMCPYS
from smallest_loss.timing.models import architecture_folds, compare_models, design_matrix, fit_coefficients, get_model
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
                    records.append(dict(status="ok", config=dict(d=d, n=n, h=h, w=w, s=s, v=v), batch=b,
                                        step_seconds=t, dtype="float32",
                                        xla=dict(flops=b * FLOPS(d, n, s, v, w, h), bytes_accessed=b * d * s)))
    return records


def test_fit_recovers_known_coefficients():
    from smallest_loss.timing.models import shape_columns

    cols = shape_columns(synthetic_records())
    coef = fit_coefficients(design_matrix(get_model("paper: memcpys + flops"), cols, DEVICE), cols["time"])
    np.testing.assert_allclose(coef, [3e-11, 2e-13, 4e-4], rtol=1e-6)


def test_comparison_ranks_the_true_model_first():
    results = compare_models(synthetic_records(noise=0.01), DEVICE)
    assert results[0]["name"] == "paper: memcpys + flops"
    assert results[0]["held_out"]["mape"] < 0.02
    flops_only = next(r for r in results if r["name"] == "paper: flops only")
    assert flops_only["held_out"]["mape"] > results[0]["held_out"]["mape"]


def test_folds_hold_out_whole_architectures():
    from smallest_loss.timing.models import shape_columns

    cols = shape_columns(synthetic_records())
    folds = architecture_folds(cols, k=5)
    keys = list(zip(*(cols[c] for c in ("d", "n", "h", "w", "s")), strict=True))
    for key in set(keys):
        assert len({int(folds[i]) for i, k in enumerate(keys) if k == key}) == 1
    assert len(set(folds.tolist())) == 5


def test_profile_round_trip_and_prediction(tmp_path):
    profile = DeviceProfile(device_kind="cpu", model="paper: memcpys + flops", coefficients=(3e-11, 2e-13, 4e-4),
                            peak_flops=1e11, bandwidth=2e10, held_out=dict(mape=0.01))
    loaded = load_profile(save_profile(tmp_path / "p.json", profile))
    assert loaded == profile
    t = loaded.predict_step_seconds(d=np.array([64, 128]), n=2, h=4, w=np.array([256, 512]), s=64, v=256, b=8)
    expected = 8 * (3e-11 * MEMCPYS(64, 2, 64, 256, 256, 4) + 2e-13 * FLOPS(64, 2, 64, 256, 256, 4)) + 4e-4
    assert t.shape == (2,) and t[0] == pytest.approx(expected)


@pytest.mark.parametrize("content,message", [
    (None, "does not exist"), ("{not json", "not valid JSON"), ("[]", "expected a JSON object"),
    (json.dumps({"version": 1, "model": "paper: flops only"}), "malformed"),
    (json.dumps({"version": 1, "device_kind": "cpu", "model": "xla: flops", "coefficients": [1, 0], "peak_flops": 1,
                 "bandwidth": 1, "held_out": {}}), "needs XLA counts"),
])
def test_bad_profiles_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "profile.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_profile(path)


def test_work_by_kind_model_recovers_known_rates():
    """Synthetic times from known per-kind rates (and a cache penalty) are fitted back exactly."""
    from smallest_loss.timing.models import shape_columns

    records = [dict(status="ok", config=dict(d=d, n=n, h=h, w=r * d, s=s, v=v), batch=b, step_seconds=1.0)
               for d in (32, 128) for n in (1, 3) for h in (1, 4) for r in (2, 4) for s in (32, 128)
               for v in (256, 1024) for b in (2, 16)]
    model = get_model("exact: work by kind, element-wise in or out of cache")
    cols = shape_columns(records)
    X = design_matrix(model, cols, dict(DEVICE, cache_bytes=2**16))
    truth = np.linspace(1, 2, X.shape[1]) * np.array([1e-12] * (X.shape[1] - 1) + [1e-4])
    np.testing.assert_allclose(fit_coefficients(X, X @ truth), truth, rtol=1e-4)


def test_profile_prediction_honours_architecture_variants():
    model = get_model("exact: work by kind (matmuls, element-wise, optimizer)")
    profile = DeviceProfile(device_kind="cpu", model=model.name, coefficients=(1e-12,) * len(model.features) + (1e-4,),
                            peak_flops=1e11, bandwidth=2e10, held_out=dict(mape=0.1))
    shape = dict(d=np.array([64, 128]), n=2, h=4, w=256, s=64, v=256, b=np.array([[1], [8]]))
    gelu = profile.predict_step_seconds(**shape)
    assert gelu.shape == (2, 2) and np.all(np.diff(gelu, axis=0) > 0)  # more sequences, more time
    assert np.all(profile.predict_step_seconds(**shape, activation="swiglu") > gelu)  # a third MLP matrix
    assert np.all(profile.predict_step_seconds(**shape, tied=False) > gelu)  # the optimizer updates v*d more
