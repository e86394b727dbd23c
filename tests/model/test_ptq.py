"""Post-training quantisation of a finished run (`smallest-loss ptq`): the run's loss as trained and after rounding
its weights to P bits, on the common sample, kept in ptq.json and read back by `table` and the precision reader."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.cli import main
from smallest_loss.model.evaluate import COMMON_SAMPLE, PTQ_FILE, evaluate_run, post_training_losses
from smallest_loss.model.train import train

from tests.conftest import tiny_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ptq") / "run"
    train(tiny_run(steps=12, checkpoint_every=6), folder, progress=False)
    return folder


def test_ptq_measures_each_width_on_the_common_sample_and_reuses_it(trained, capsys, tmp_path):
    plot = tmp_path / "ptq.png"
    assert main(["ptq", str(trained), "--bits", "2", "8", "--batches", "4", "--quiet", "--plot", str(plot)]) == 0
    assert "| 2 bits | 8 bits |" in capsys.readouterr().out and plot.read_bytes().startswith(b"\x89PNG")
    first = json.loads((trained / PTQ_FILE).read_text())
    assert first["sample"] == dict(batches=4, batch_size=COMMON_SAMPLE[1], seed=COMMON_SAMPLE[2])
    # As trained: the same loss as evaluating the run on those batches; 2 bits really rounds the weights.
    assert first["loss"] == pytest.approx(evaluate_run(str(trained), 4, *COMMON_SAMPLE[1:])[1], rel=1e-6)
    assert set(first["loss_post"]) == {"2", "8"} and first["loss_post"]["2"] != first["loss"]
    # Another width adds to the file; the widths measured are kept as they were.
    again = post_training_losses(trained, [8, 4], batches=4)
    assert again.loss_post[2] == first["loss_post"]["2"] and again.loss_post[8] == first["loss_post"]["8"]
    assert list(again.to_dict()["loss_post"]) == ["2", "4", "8"] and again.loss == first["loss"]


def test_table_writes_a_column_per_width(trained, tmp_path):
    post_training_losses(trained, [2, 4, 8], batches=4)
    assert main(["table", str(trained), "--out", str(tmp_path / "t.csv")]) == 0
    with open(tmp_path / "t.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert list(row)[-3:] == ["loss_post_2", "loss_post_4", "loss_post_8"]
    # Each column: the run's loss plus the rise measured on the common sample.
    ptq = json.loads((trained / PTQ_FILE).read_text())
    rises = [float(row[f"loss_post_{P}"]) - float(row["loss"]) for P in ("2", "4", "8")]
    assert rises == pytest.approx([ptq["loss_post"][P] - ptq["loss"] for P in ("2", "4", "8")], abs=1e-6)


def test_ptq_refusals(trained, tmp_path):
    with pytest.raises(UserError, match="integer from 2 to 15"):
        post_training_losses(trained, [1])
    with pytest.raises(UserError, match="--batches"):
        post_training_losses(trained, [4], batches=0)
    unfinished = tmp_path / "unfinished"
    config = tiny_run(steps=12, checkpoint_every=6)
    train(dataclasses.replace(config, train=dataclasses.replace(config.train, steps=6)), unfinished, progress=False)
    summary = json.loads((unfinished / "summary.json").read_text())
    (unfinished / "summary.json").write_text(json.dumps(dict(summary, status="interrupted")))
    with pytest.raises(UserError, match="completed run"):
        post_training_losses(unfinished, [4])
