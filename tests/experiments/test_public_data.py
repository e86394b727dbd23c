"""The committed public tables (results/public/{steplaw,multipower,perstep_100m}) read with the one run-table
reader and hold the rows their READMEs state; the converters' rules on small made-up upstream rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.scripts import convert_multipower, convert_steplaw
from smallest_loss.experiments.scripts.public_source import read_upstream
from smallest_loss.scaling.tables import read_run_table

PUBLIC = Path(__file__).resolve().parents[2] / "results" / "public"
RECIPE = dict(numbers=["N", "D", "batch", "lr", "loss"], optional_numbers=["seq_len", "C"], texts=["status", "run"])
CURVES = dict(numbers=["step", "lr", "loss"], optional_numbers=["tokens", "N"], texts=["run"])


@pytest.mark.parametrize(("name", "rows", "cells", "diverged"), [("dense", 1911, 17, 181), ("moe", 708, 16, 0)])
def test_steplaw_tables_read_with_their_stated_counts(name, rows, cells, diverged):
    table = read_run_table(PUBLIC / "steplaw" / f"{name}.csv", **RECIPE)
    assert len(table) == rows
    assert len({(n, d) for n, d in zip(table.numbers["N"], table.numbers["D"], strict=True)}) == cells
    assert int(np.sum(table.texts["status"] == "diverged")) == diverged
    assert set(table.texts["status"]) <= {"ok", "diverged"}
    table.positive("N", "D", "batch", "lr", "loss")
    assert np.all(table.numbers["seq_len"] == 2048)


@pytest.mark.parametrize(("folder", "rows", "runs"), [("multipower", 6265, 27), ("perstep_100m", 101722, 3)])
def test_curve_tables_read_with_their_stated_counts(folder, rows, runs):
    table = read_run_table(PUBLIC / folder / "curves.csv", **CURVES)
    assert len(table) == rows
    names = table.texts["run"]
    assert len(set(names)) == runs
    for run in set(names):
        assert np.all(np.diff(table.numbers["step"][names == run]) > 0), run
    table.positive("lr", "loss")
    assert np.all(np.isnan(table.numbers["tokens"]))  # no release states its batch size


def test_multipower_keeps_upstreams_split():
    table = read_run_table(PUBLIC / "multipower" / "curves.csv", ["step"], texts=["run", "split"])
    split = {run: s for run, s in zip(table.texts["run"], table.texts["split"], strict=True)}
    assert sorted(r for r, s in split.items() if s == "fit") == sorted(
        f"{size}M_{name}" for size in (25, 100, 400) for name in convert_multipower.FIT
    )


def test_steplaw_rules_on_made_up_rows():
    header = "h,ffnh,numh,numl,lr,bs,ti,loss,smooth loss,exp_name,D,N,D/N\n"
    rows = [(0.003906, 128, 2.50), (0.00391, 256, 2.55), (0.0111, 64, 7.1)]  # one rate written two ways; a blow-up
    text = header + "".join(f"1,1,1,1,{lr},{bs},10,{loss},{loss},r{i},1e9,1e8,10\n" for i, (lr, bs, loss) in
                            enumerate(rows))  # fmt: skip
    out = convert_steplaw.recipe_rows(text)
    assert [r["lr"] for r in out] == [2.0**-6.5, 2.0**-8, 2.0**-8]
    assert [r["status"] for r in out] == ["diverged", "ok", "ok"]
    assert all(r["seq_len"] == 2048 and r["C"] == 6e17 for r in out)
    with pytest.raises(ValueError, match="grid"):
        convert_steplaw.grid_rate(0.003)


def test_multipower_schedules_from_upstream_names():
    assert convert_multipower.schedule_of("wsd_20000_24000")["schedule"] == "wsd_exp"
    two = convert_multipower.schedule_of("wsdcon_18")
    assert (two["schedule"], two["decay_step"], two["total_steps"]) == ("two_stage", 8000, 16000)
    assert two["final_lr"] == pytest.approx(1.8e-4)
    with pytest.raises(ValueError):
        convert_multipower.schedule_of("linear_1000")


def test_read_upstream_refuses_a_wrong_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("a\n1\n")
    assert read_upstream(tmp_path, "data/x.csv") == "a\n1\n"
    with pytest.raises(UserError, match="has no data/y.csv"):
        read_upstream(tmp_path, "data/y.csv")
