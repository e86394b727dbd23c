"""A mixture of experts' exact counts (timing/counts.py) against XLA's compiled training step and the real
parameter tree, with the tolerance of the dense SwiGLU counts (tests/timing/test_counts.py): FLOPs within 1%,
peak memory within 25%."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from smallest_loss.configs.grids import get_grid
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.model.params import count_params
from smallest_loss.model.transformer import count_params_in_tree
from smallest_loss.timing.counts import counts_for, moe_of, train_step_terms
from smallest_loss.timing.measure import base_record, compile_step, xla_analyses
from smallest_loss.timing.models import TERMS, design_matrix, get_model, shape_columns, variant
from smallest_loss.timing.records import BadRow, external_row, row_record

from tests.conftest import device_env

ROOT = Path(__file__).resolve().parents[2]

B = 4
BASE = ModelConfig(v=256, d=64, n=1, h=4, w=256, s=32, experts=4)
MOES = [
    BASE,
    dataclasses.replace(BASE, top_k=2, shared_experts=1),
    dataclasses.replace(BASE, granularity=4, activation="swiglu"),
    ModelConfig(v=256, d=32, n=2, h=2, w=64, s=32, experts=2, granularity=2, tied_embeddings=False),
]


def xla_of_moes() -> list[dict[str, float]]:
    """XLA's analyses of the MOES' training steps, compiled as the product compiles them."""
    return [xla_analyses(compile_step(cfg, B)[0]) for cfg in MOES]


@pytest.fixture(scope="module")
def compiled():
    """In a process of its own with the product's XLA flags (tests/conftest.py: a test-only flag moves XLA's count of
    the blocked dispatch by 1%)."""
    code = "import json; from tests.timing.test_counts_moe import xla_of_moes; print(json.dumps(xla_of_moes()))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=device_env(product_xla=True), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return list(zip(MOES, json.loads(done.stdout.strip().splitlines()[-1]), strict=True))


@pytest.mark.slow  # compiles four training steps
def test_moe_flops_and_memory_match_xla(compiled):
    for cfg, xla in compiled:
        counts = counts_for(cfg, B)
        assert counts["flops"] == pytest.approx(xla["flops"], rel=0.01), cfg
        assert counts["memory"] == pytest.approx(xla["peak_bytes"], rel=0.25), cfg
        # The experts' matmuls are a large share of the step: counting them wrong fails by far.
        terms = train_step_terms(cfg.d, cfg.n, cfg.h, cfg.w, cfg.s, cfg.v, B, cfg.activation, moe=moe_of(cfg))
        assert terms["mlp"] / xla["flops"] > 0.1


def test_moe_params_match_the_tree_and_dense_counts_are_unchanged():
    for cfg in MOES:
        counts = counts_for(cfg, B)
        assert counts["params"] == count_params(cfg).total == count_params_in_tree(cfg).total
        assert counts["active_params"] == count_params_in_tree(cfg).active < counts["params"]
    dense = dataclasses.replace(BASE, experts=0)
    assert "active_params" not in counts_for(dense, B)
    assert set(train_step_terms(64, 1, 4, 256, 32, 256, B)) == {
        "projection",
        "mlp",
        "attention",
        "output",
        "width",
        "hidden",
        "scores",
        "logits",
        "optimizer",
        "quantise",  # 0 unquantised (timing.counts.quantise_flops)
    }


def test_records_of_a_mixture_of_experts_give_the_step_time_models_its_counts():
    """A timing record keeps the MoE fields in its config (a dense one has none, so old records load as dense),
    and the step-time models' features are the MoE counts: FLOPs, weight and activation bytes."""
    dense = dataclasses.replace(BASE, experts=0)
    records = [dict(base_record(cfg, B), status="ok", step_seconds=1.0) for cfg in [dense, *MOES]]
    assert "experts" not in records[0]["config"] and records[1]["config"]["experts"] == 4
    columns = shape_columns(records)
    assert columns["variant"][0] == variant() and columns["variant"][1].endswith("/moe:4,1,1,0,blocked")
    X = design_matrix(get_model("exact-layers"), columns, {})
    for i, record in enumerate(records):
        assert X[i, 0] + X[i, 1] == pytest.approx(record["counts"]["flops"])
        assert X[i, 2] + X[i, 3] == pytest.approx(record["counts"]["bytes"])
    kinds = design_matrix(get_model("exact-kinds"), columns, {})  # each kind of work apart, MoE terms included
    assert kinds[1, : len(TERMS)].sum() == pytest.approx(records[1]["counts"]["flops"])


def test_the_moe_grid_mixes_dense_and_expert_architectures():
    points = get_grid("cpu-moe")
    experts = {p.model.experts for p in points}
    assert 0 in experts and experts - {0} and {p.model.granularity for p in points} == {1, 2}
    assert all(p.model.top_k <= max(p.model.experts, 1) for p in points)
    assert all(p.model.experts == 0 for p in get_grid("cpu-small"))  # other grids stay dense


def test_records_files_read_moe_columns_and_old_rows_stay_dense():
    base = dict(d=64, n=1, h=4, w=256, s=32, v=256, b=4, devices=1, seconds=0.1, dtype="float32", device="cpu")
    dense = row_record(base, None)
    assert "experts" not in dense["config"]
    moe = row_record(dict(base, experts=4, top_k=2, granularity=2), None)
    assert (moe["config"]["experts"], moe["config"]["top_k"], moe["config"]["granularity"]) == (4, 2, 2)
    assert external_row(moe)["experts"] == 4 and external_row(dense)["experts"] is None
    assert "experts" not in row_record(dict(base, experts=0), None)["config"]
    with pytest.raises(BadRow, match="top_k=5"):
        row_record(dict(base, experts=4, top_k=5), None)
