"""Precision in the timing: counts of a quantised step against XLA's, records and profiles keyed by dtype and bits,
calibrations at a precision, and the step-time ratio between two precisions' calibrations."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import smallest_loss.timing.calibration as cal
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.grids import at_precision, get_grid
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.experiments.cli import main
from smallest_loss.model.runs import environment
from smallest_loss.timing.counts import Precision, counts_for, train_step_terms
from smallest_loss.timing.measure import compile_step, record_config, xla_analyses
from smallest_loss.timing.precision import step_ratio
from smallest_loss.timing.profile import load_profile, save_profile

from tests.timing.test_models import synthetic_records

DATA = Path(__file__).parent / "data"
B = 4
QUANTISED = ModelConfig(v=256, d=32, n=1, h=2, w=64, s=16, bits_weights=4, bits_activations=4, bits_kv=4)


def test_precision_labels():
    for label in ("float32", "float8", "bfloat16+w4a8kv4", "float32+kv3"):
        assert Precision.parse(label).label == label
    assert Precision.of(QUANTISED).label == "float32+w4a4kv4"
    with pytest.raises(UserError, match="precision"):
        Precision.parse("bfloat16+x4")


def test_quantised_step_counts_match_xla():
    xla = xla_analyses(compile_step(QUANTISED, B)[0])
    ours = counts_for(QUANTISED, B)
    assert ours["flops"] == pytest.approx(xla["flops"], rel=0.003)
    dense = dataclasses.replace(QUANTISED, bits_weights=None, bits_activations=None, bits_kv=None)
    shape = (32, 1, 2, 64, 16, 256, B)
    terms, dense_terms = train_step_terms(*shape, precision=Precision.of(QUANTISED)), train_step_terms(*shape)
    assert all(terms[k] == dense_terms[k] for k in dense_terms if k != "quantise")  # the matmuls do not change
    assert terms["quantise"] > 0 == dense_terms["quantise"]
    assert ours["bytes"] > counts_for(dense, B)["bytes"]  # the kernels' quantised copies
    assert counts_for(dataclasses.replace(dense, dtype="float8"), B)["flops"] > counts_for(dense, B)["flops"]


def test_records_carry_bits_only_when_quantised():
    dense = dataclasses.replace(QUANTISED, bits_weights=None, bits_activations=None, bits_kv=None)
    assert not any(k.startswith("bits_") for k in record_config(dense))  # keys of earlier records unchanged
    config = record_config(QUANTISED)
    assert (config["bits_weights"], config["bits_kv"]) == (4, 4)
    assert ModelConfig(**config) == dataclasses.replace(QUANTISED, attention="auto")


def test_a_grid_at_a_precision():
    points = at_precision(get_grid("tiny"), ("model.dtype=float8", "model.bits_kv=4"))
    assert {(p.model.dtype, p.model.bits_kv) for p in points} == {("float8", 4)}
    assert [p.model.d for p in points] == [p.model.d for p in get_grid("tiny")]
    with pytest.raises(UserError, match="precision only"):
        at_precision(get_grid("tiny"), ("model.d=64",))


def _folder(tmp_path: Path, name: str, dtype: str, scale: float, bits: dict[str, int] | None = None) -> Path:
    """A calibration folder of synthetic records (times x `scale`) in `dtype` at `bits`, with its device rates."""
    out = tmp_path / name
    out.mkdir()
    records = synthetic_records()
    for r in records:
        r.update(dtype=dtype, step_seconds=r["step_seconds"] * scale)
        r["config"].update({f"bits_{k}": b for k, b in (bits or {}).items()})
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    kind = environment()["device_kind"]
    rates = dict(device_kind=kind, peak_flops=1e11, bandwidth=1e10, cache_bytes=2**20, peak_dtype=dtype)
    (out / "device.json").write_text(json.dumps(rates))
    return out


def _profile(out: Path):
    records = cal.read_records(out / "records.jsonl")
    rates = json.loads((out / "device.json").read_text())
    result = dict(id="paper", analytic=True, coefficients=[3e-11, 2e-13, 4e-4], held_out=dict(mape=0.01))
    return save_profile(out / "profile.json", cal.best_profile(records, rates, [result]))


def test_profiles_are_keyed_by_dtype_and_bits(tmp_path):
    out = _folder(tmp_path, "w4", "bfloat16", 1.0, bits=dict(weights=4))
    profile = load_profile(_profile(out))
    assert (profile.dtype, profile.bits, profile.precision) == ("bfloat16", {"weights": 4}, "bfloat16+w4")
    with pytest.raises(UserError, match="calibrated in bfloat16"):
        profile.predict_step_seconds(64, 2, 4, 256, 64, 256, 8, dtype="float32")
    assert load_profile(DATA / "profile_v4_quickstart.json").precision == "float32"  # older profiles: unquantised
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    dense = _folder(tmp_path, "dense", "bfloat16", 1.0)
    with (mixed / "records.jsonl").open("a") as f:
        f.write((dense / "records.jsonl").read_text())
    with pytest.raises(UserError, match="several dtypes"):
        cal.fit_folder(mixed)


def test_step_ratio_between_precisions(tmp_path):
    slow = _folder(tmp_path, "bf16", "bfloat16", 1.0)
    fast = _folder(tmp_path, "fp8", "float8", 0.6)
    slow_profile, fast_profile = load_profile(_profile(slow)), load_profile(_profile(fast))
    measured = step_ratio(cal.read_records(fast / "records.jsonl"), slow / "profile.json")
    assert measured["source"] == "measured" and measured["configurations"] == 48
    assert measured["ratio"] == pytest.approx(0.6) and (measured["here"], measured["other"]) == ("float8", "bfloat16")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(slow / "profile.json", lone / "profile.json")  # a profile without its records: its predictions
    predicted = step_ratio(cal.read_records(fast / "records.jsonl"), lone / "profile.json")
    assert predicted["source"] == "predicted" and predicted["ratio"] == pytest.approx(0.6, rel=1e-6)
    assert np.isfinite(predicted["low"]) and slow_profile.precision == "bfloat16" and fast_profile.precision == "float8"
    elsewhere = [dict(r, device_kind="another device") for r in cal.read_records(fast / "records.jsonl")]
    with pytest.raises(UserError, match="needs one device"):
        step_ratio(elsewhere, slow / "profile.json")


def test_a_calibration_too_short_to_fit_still_gives_the_ratio(tmp_path, capsys):
    """A grid cut short (here 6 records, fewer than a profile's fit takes): `calibrate --fit-only --compare` refuses
    the fit but prints the ratio first, since it reads the records alone."""
    slow = _folder(tmp_path, "bf16", "bfloat16", 1.0)
    _profile(slow)
    fast = _folder(tmp_path, "fp8", "float8", 0.5)
    lines = (fast / "records.jsonl").read_text().splitlines(keepends=True)
    (fast / "records.jsonl").write_text("".join(lines[:6]))
    assert main(["calibrate", "--fit-only", "--out", str(fast), "--compare", str(slow / "profile.json")]) == 2
    captured = capsys.readouterr()
    assert "Step time float8 / bfloat16" in captured.out and " 0.5 median" in captured.out
    assert "over 6 configurations measured in both" in captured.out
    assert "at least 10" in captured.err and not (fast / "profile.json").exists()


@pytest.mark.slow
def test_calibrate_reports_the_ratio_to_another_precision(tmp_path, capsys):
    slow = _folder(tmp_path, "bf16", "bfloat16", 1.0)
    fast = _folder(tmp_path, "fp8", "float8", 0.5)
    _profile(slow)  # the other precision's calibration: its records and profile
    assert main(["calibrate", "--fit-only", "--out", str(fast), "--compare", str(slow / "profile.json")]) == 0
    printed = capsys.readouterr().out
    assert "Step time float8 / bfloat16" in printed and " 0.5 median" in printed
    assert "Step time float8 / bfloat16" in (fast / "comparison.md").read_text()
    assert load_profile(fast / "profile.json").dtype == "float8"


def test_calibrate_set_is_for_a_grid(tmp_path, capsys):
    code = main(["calibrate", "--fit-only", "--out", str(tmp_path / "c"), "--set", "model.dtype=float8"])
    assert code == 2 and "--set chooses the precision" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
