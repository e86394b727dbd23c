"""Run folders as a table (scaling/run_table.py, `smallest-loss table`): a dense run and a mixture of experts, each
row with the columns the MoE and precision laws read, and the MoE table reader accepting the file."""

from __future__ import annotations

import csv
import dataclasses

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.cli import main
from smallest_loss.model.params import count_params
from smallest_loss.model.train import train
from smallest_loss.scaling.moe_law import read_moe_table

from tests.conftest import tiny_run


@pytest.mark.slow
def test_runs_become_one_table_every_law_reads(tmp_path, capsys):
    dense = tiny_run(steps=3, eval_every=3, checkpoint_every=3)
    moe = dataclasses.replace(dense, model=dataclasses.replace(dense.model, experts=2, top_k=1))
    for name, config in (("dense", dense), ("moe", moe)):
        train(config, tmp_path / "runs" / name, progress=False)
    (tmp_path / "runs" / "unfinished").mkdir()  # no config.json: not a run, so not read
    out = tmp_path / "table.csv"
    assert main(["table", str(tmp_path / "runs" / "dense"), str(tmp_path / "runs" / "moe"), "--out", str(out)]) == 0
    assert "wrote 2 runs" in capsys.readouterr().out
    rows = {r["run"]: r for r in csv.DictReader(out.open())}
    d, m = rows["dense"], rows["moe"]
    assert int(d["N"]) == int(d["N_active"]) == int(d["N_total"]) == count_params(dense.model).total
    assert (d["experts"], d["top_k"], d["bits_w"], d["dtype"]) == ("1", "1", "", "float32")
    counts = count_params(moe.model)
    assert int(m["N_active"]) == counts.active < int(m["N_total"]) == counts.total and m["experts"] == "2"
    assert all(float(r["loss"]) > 0 and int(r["D"]) > 0 and float(r["C"]) > 0 for r in rows.values())
    with pytest.raises(UserError, match="fewer than 8 rows|at least"):  # the MoE reader accepts the columns
        read_moe_table(out)
    assert main(["table", str(tmp_path / "runs" / "dense"), "--out", str(tmp_path)]) == 2
