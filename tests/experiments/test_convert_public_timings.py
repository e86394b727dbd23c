"""The public step-time tables convert into valid timing records, and the transcriptions agree with the
sources' own redundant columns (aggregate petaFLOP/s, parameter counts, training days, sequences per second)."""

from __future__ import annotations

import csv

import pytest
from smallest_loss.experiments.scripts import convert_public_timings as conv

REQUIRED = ("d", "n", "h", "w", "s", "v", "b", "devices", "seconds")


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, list[dict[str, str]]]:
    paths = conv.convert(tmp_path_factory.mktemp("public"))
    out = {}
    for name, path in paths.items():
        with open(path, newline="") as f:
            out[name] = list(csv.DictReader(f))
    return out


def test_records_are_valid(tables):
    assert set(tables) == {"narayanan2021_a100", "dlperf_megatron_v100", "dlperf_oneflow_v100"}
    for rows in tables.values():
        assert len(rows) >= 10
        for row in rows:
            assert all(row[c] != "" for c in REQUIRED)
            assert int(row["d"]) % int(row["h"]) == 0
            assert float(row["seconds"]) > 0
            assert int(row["tp"]) * int(row["pp"]) * int(row["dp"]) == int(row["devices"])


def test_committed_tables_match_the_converter(tables):
    for name, rows in tables.items():
        with open(conv.DATA / f"{name}.csv", newline="") as f:
            assert list(csv.DictReader(f)) == rows


def test_hand_checked_row(tables):
    # Narayanan et al. 2021 Table 1, first row (1.7B): B=512, s=2048, l=24, h=2304, V=51200, 32 GPUs at 137 TFLOP/s.
    # 96*512*2048*24*2304^2 = 1.28249e16; 1 + 2048/13824 + 51200/884736 = 1 + 0.148148 + 0.057870 = 1.206019;
    # F = 1.54668e16 FLOPs; seconds = 1.54668e16 / (137e12 * 32 = 4.384e15) = 3.5280 s.
    row = tables["narayanan2021_a100"][0]
    assert (row["d"], row["n"], row["h"], row["b"], row["devices"]) == ("2304", "24", "24", "512", "32")
    assert float(row["seconds"]) == pytest.approx(3.5280, abs=5e-4)
    # DLPerf, Megatron-LM DP_1x1x1_2_1536x16: 464.12 ms per iteration; vocabulary 50257 padded to 128 -> 50304.
    first = tables["dlperf_megatron_v100"][0]
    assert (float(first["seconds"]), first["v"]) == (0.46412, "50304")


def test_narayanan_transcription_matches_the_papers_other_columns():
    for row in conv.read_source("narayanan2021"):
        d, n, gpus, x = int(row["hidden"]), int(row["layers"]), int(row["gpus"]), float(row["tflops_per_gpu"])
        # Eq. (2): P = 12 l h^2 (1 + 13/(12h) + (V + s)/(12 l h)), printed to 0.1B.
        params = 12 * n * d**2 * (1 + 13 / (12 * d) + (conv.NARAYANAN_V + conv.NARAYANAN_S) / (12 * n * d))
        assert params / 1e9 == pytest.approx(float(row["params_billion"]), abs=0.051)
        if row["aggregate_pflops"]:  # Table 1: X x GPUs, printed to 0.1 PFLOP/s from unrounded X
            assert x * gpus / 1000 == pytest.approx(float(row["aggregate_pflops"]), rel=0.01, abs=0.051)
        if row["days_300b_tokens"]:  # Table 2: days for 300B tokens, printed to a day
            flops = conv.megatron_flops(int(row["batch"]), conv.NARAYANAN_S, n, d, conv.NARAYANAN_V)
            steps = 300e9 / (int(row["batch"]) * conv.NARAYANAN_S)
            days = steps * flops / (x * 1e12 * gpus) / 86400
            assert days == pytest.approx(float(row["days_300b_tokens"]), abs=1.0)


def test_dlperf_latencies_match_the_reported_throughputs():
    for row in conv.read_source("dlperf_v100"):
        for framework in ("megatron", "oneflow"):
            per_second = int(row["batch"]) / (float(row[f"{framework}_ms"]) / 1000)
            assert per_second == pytest.approx(float(row[f"{framework}_seq_per_s"]), rel=0.005)


def test_padded_vocab():
    # OneFlow-GPT's log for tensor-parallel 4: "padded vocab (size: 50257) with 431 dummy tokens (new size: 50688)".
    assert conv.padded_vocab(50257, 4) == 50688
    assert conv.padded_vocab(50257, 8) == 51200
