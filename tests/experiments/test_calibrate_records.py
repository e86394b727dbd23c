"""`smallest-loss calibrate --records`: external step timings fitted, compared and planned on, bad files refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import smallest_loss.experiments.plots_timing as plots_timing
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, save_law
from smallest_loss.timing.models import get_model
from smallest_loss.timing.profile import load_profile

DATA_PARALLEL = "data-parallel"
# (global batch, devices): the per-device batch shrinks from 64 to 8 as the batch grows, so a model that does not
# divide the work among the devices cannot follow the times.
SPLITS = ((64, 1), (128, 8), (512, 64), (256, 8))
SHAPES = ((512, 6), (768, 12), (1024, 16), (1280, 20), (1536, 24), (2048, 24), (2560, 32), (4096, 32))


def step_seconds(d, n, s, v, b, k):
    """An H100-like cluster as a textbook would sketch it, independent of timing/counts.py: training FLOPs
    6 N + 12 n s d per token (Kaplan et al., 2020, N = 12 n d^2 + v d) at 350 TFLOP/s for each device's
    share of the batch, 16 bytes per parameter of optimizer traffic at 2 TB/s, a ring all-reduce of float32
    gradients at 50 GB/s, and 30 microseconds of launches per layer."""
    N = 12 * n * d**2 + v * d
    compute = (6 * N + 12 * n * s * d) * s * b / k / 350e12
    return compute + 16 * N / 2e12 + 2 * (k - 1) / k * 4 * N / 50e9 + 30e-6 * n


@pytest.fixture(scope="module", autouse=True)
def plotted():
    """The models each calibration plotted. Plots are drawn by experiments/plots_timing.py and tested with the
    measured calibration (tests/timing/test_calibrate.py); drawing ten log-log PNGs per calibration would cost
    about 10 s on 2 shared cores, so here each call only records the models it was given."""
    calls = []

    def record(results, measured, out):
        calls.append([r["id"] for r in results if "predicted" in r])
        return [out / plots_timing.plot_name(name) for name in calls[-1]]

    with pytest.MonkeyPatch.context() as m:
        m.setattr(plots_timing, "plot_predictions", record)
        yield calls


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A records file of the cluster above with 3% noise (no device column: --device names it), calibrated."""
    tmp = tmp_path_factory.mktemp("records")
    rng, s, v = np.random.default_rng(0), 2048, 50304
    lines = ["d,n,h,w,s,v,b,devices,seconds,dtype,note"]
    for d, n in SHAPES:
        for b, k in SPLITS:
            seconds = step_seconds(d, n, s, v, b, k) * np.exp(0.03 * rng.standard_normal())
            lines.append(f"{d},{n},{d // 64},{4 * d},{s},{v},{b},{k},{seconds:.6g},bf16,public table")
    path = tmp / "cluster.csv"
    path.write_text("\n".join(lines) + "\n")
    code = main(["calibrate", "--records", str(path), "--device", "h100-sxm", "--out", str(tmp / "cal")])
    return tmp, code


def test_records_are_compared_and_profiled_with_the_communication_term(calibrated, plotted, capsys):
    tmp, code = calibrated
    assert code == 0 and DATA_PARALLEL in plotted[0] and len(plotted[0]) == 9  # every model but the XLA and cache ones
    table = (tmp / "cal" / "comparison.md").read_text()
    assert f"{len(SHAPES) * len(SPLITS)} rows of `{tmp / 'cluster.csv'}`" in table and "1, 8, 64 devices" in table
    assert "device table's h100-sxm" in table and "Models on XLA counts skipped: 32 of 32 records" in table
    assert table.count("skipped: no xla_flops/xla_bytes") == 4  # the four models on XLA counts, never fed zeros
    profile = load_profile(tmp / "cal" / "profile.json")
    assert profile.model == DATA_PARALLEL and profile.held_out["mape"] < 0.06  # 3% noise, about 2.4% absolute
    # The choice among the models, itself held out: each fold's model chosen on the other folds alone.
    assert "The choice itself held out: " in table and "for the chosen model" in table
    assert (profile.device_kind, profile.dtype, profile.peak_flops, profile.memory_bytes) == (
        "NVIDIA H100 80GB HBM3",
        "bfloat16",
        989e12,
        80e9,
    )
    records = [json.loads(line) for line in (tmp / "cal" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 32 and all(r["source"] == "records" and r["status"] == "ok" for r in records)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    mape = {name: float(line.split(" | ")[1].rstrip("%")) / 100 for name, line in rows.items() if "%" in line}
    single = min(m for name, m in mape.items() if name != DATA_PARALLEL)
    assert single > 3 * profile.held_out["mape"]  # blind to the device count, every other model fails


def test_a_time_budget_plans_on_the_records_profile(calibrated, tmp_path, capsys):
    tmp, _ = calibrated
    law = save_law(tmp_path / "law.json", CHINCHILLA_PUBLISHED)
    assert (
        main(
            [
                "plan",
                "--budget",
                "4h",
                "--law",
                str(law),
                "--profile",
                str(tmp / "cal" / "profile.json"),
                "--json",
                "--top",
                "3",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["space"] == "gpu" and "gpu in bfloat16" in report["space_choice"]
    best = report["best"][0]
    assert best["step_seconds"] > 0 and best["tokens"] > 0 and best["loss"] > CHINCHILLA_PUBLISHED.E


def test_a_refitted_folder_keeps_the_records_device(calibrated, capsys):
    """--fit-only on a folder of external records reuses their rates: nothing is measured on this machine."""
    tmp, _ = calibrated
    assert main(["calibrate", "--fit-only", "--out", str(tmp / "cal")]) == 0
    assert load_profile(tmp / "cal" / "profile.json").device_kind == "NVIDIA H100 80GB HBM3"


def test_our_calibration_round_trips_through_the_records_format(tmp_path, capsys):
    """A measured calibration exported as a records file and fitted back gives the same models."""
    from smallest_loss.model.runs import environment

    from tests.timing.test_models import synthetic_records

    measured = tmp_path / "measured"
    measured.mkdir()
    (measured / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in synthetic_records(noise=0.02)))
    (measured / "device.json").write_text(
        json.dumps(dict(device_kind=environment()["device_kind"], peak_flops=1e11, bandwidth=1e10))
    )
    exported = tmp_path / "ours.csv"
    assert main(["calibrate", "--fit-only", "--out", str(measured), "--export-records", str(exported)]) == 0
    assert f"--records {exported} --out NEW --peak-flops 100000000000.0" in capsys.readouterr().out
    assert (
        main(
            [
                "calibrate",
                "--records",
                str(exported),
                "--out",
                str(tmp_path / "back"),
                "--peak-flops",
                "1e11",
                "--bandwidth",
                "1e10",
                "--device",
                environment()["device_kind"],
            ]
        )
        == 0
    )
    before, after = (load_profile(tmp_path / f / "profile.json") for f in ("measured", "back"))
    assert after.model == before.model and after.held_out == pytest.approx(before.held_out, rel=1e-9)
    # Records carry no cache sizes: the models that read them (this machine's, where it says them) are not compared.
    assert set(after.alternatives) == {m for m in before.alternatives if not get_model(m).needs}
    for name, coefficients in after.alternatives.items():
        assert coefficients == pytest.approx(before.alternatives[name], rel=1e-9), name
    table = (tmp_path / "back" / "comparison.md").read_text()
    assert "| xla |" in table and "skipped" not in table  # the export carries XLA's counts


HEADER = "d,n,h,w,s,v,b,devices,seconds,dtype\n"
ROWS = [
    f"{d},2,{d // 64},{4 * d},1024,50304,{b},1,{d * b * 1e-6},bf16"
    for d in (256, 512, 768, 1024, 1280)
    for b in (8, 16)
]  # 10 rows of 5 architectures: enough to compare models


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--grid", "tiny", "--device", "h100-sxm"], "--records fits the step seconds the file gives; drop --grid"),
        (["--statistic", "min", "--device", "h100-sxm"], "drop --statistic"),
        (["--device", "abacus"], "device 'abacus' is not in the device table"),
        (["--device", "h100-sxm", "--peak-flops", "0"], "--peak-flops must be positive"),
        ([], "10 of 10 rows are bad (line 2: device is missing (give it in the file or with --device NAME); line 3:"),
    ],
)
def test_refusals_write_nothing(tmp_path, extra, message, capsys):
    path, out = tmp_path / "r.csv", tmp_path / "out"
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    assert main(["calibrate", "--records", str(path), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


def test_one_bad_row_refuses_the_file(tmp_path, capsys):
    path, out = tmp_path / "r.csv", tmp_path / "out"
    path.write_text(HEADER + "\n".join([*ROWS[:6], "512,2,3,2048,1024,50304,16,1,0.1,bf16", *ROWS[6:]]) + "\n")
    assert main(["calibrate", "--records", str(path), "--out", str(out), "--device", "h100-sxm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 11 rows are bad (line 8: d=512 is not divisible by h=3)" in err[0]
    path.write_text(HEADER + "\n".join(ROWS[::2]) + "\n")
    assert main(["calibrate", "--records", str(path), "--out", str(out), "--device", "h100-sxm"]) == 2
    assert "at least 10 are needed" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "records.jsonl").write_text(json.dumps(dict(status="ok", config={}, batch=1)) + "\n")
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    assert main(["calibrate", "--records", str(path), "--out", str(out), "--device", "h100-sxm"]) == 2
    assert "holds measured timing records" in capsys.readouterr().err and len(list(out.iterdir())) == 1
    for flag in (["--device", "h100-sxm"], ["--bandwidth", "1e12"]):
        assert main(["calibrate", "--fit-only", "--out", str(out), *flag]) == 2
        assert "describe the device of --records FILE" in capsys.readouterr().err
