"""Convert published GPU step-time tables into external timing records for `smallest-loss calibrate --records`.

    python experiments/scripts/convert_public_timings.py [--out experiments/data/public_timings]

Reads the rows transcribed from each source (experiments/data/public_timings/source/, cited in the README
there) and writes one records CSV per table, columns `d, n, h, w, s, v, b, devices, seconds` (b the global
batch in sequences, seconds one optimizer step) plus `dtype, device, activation, mlp, norm, tied`, the parallel
layout (`tp, pp, dp, microbatch`), `recompute` and `source`. Tables:

- `narayanan2021_a100`: Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU
  Clusters Using Megatron-LM" (arXiv 2104.04473), Table 1 (weak scaling, 1.7B-1T) and the PTD-P rows of
  Table 2, A100 80GB. The paper gives achieved teraFLOP/s per GPU X, not time; its FLOPs per iteration are
  Eq. (3), F = 96 B s l h^2 (1 + s/(6h) + V/(16 l h)) (activation recomputation included), so one step
  takes F / (X * GPUs), exactly the time the paper measured up to the rounding of X to three figures.
- `dlperf_megatron_v100` and `dlperf_oneflow_v100`: OneFlow's DLPerf GPT benchmark (Megatron-LM and
  OneFlow-GPT on up to 4 nodes of 8 V100-SXM2-16GB), which reports milliseconds per iteration directly.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

DATA = Path(__file__).parents[1] / "data" / "public_timings"
SOURCE = DATA / "source"
COLUMNS = (
    "d",
    "n",
    "h",
    "w",
    "s",
    "v",
    "b",
    "devices",
    "seconds",
    "dtype",
    "device",
    "activation",
    "mlp",
    "norm",
    "tied",
    "tp",
    "pp",
    "dp",
    "microbatch",
    "recompute",
    "source",
)
# Both sources train GPT-2-style models: GELU in a two-matrix MLP of width 4d, LayerNorm, tied embeddings.
GPT = dict(activation="gelu", mlp="dense", norm="layernorm", tied="true")

NARAYANAN_S = 2048  # sequence length of every model in Narayanan et al. 2021, section 5.1
NARAYANAN_V = 51200  # vocabulary of every model there, the V of their Eq. (3)
DLPERF_S = 2048  # seq_length of every DLPerf GPT case
GPT2_VOCAB = 50257  # GPT-2 BPE, the tokenizer of the DLPerf runs (gpt2-vocab.json)
VOCAB_DIVISIBLE_BY = 128  # Megatron's and OneFlow-GPT's make_vocab_size_divisible_by default


def megatron_flops(b: int, s: int, n: int, d: int, v: int) -> float:
    """FLOPs of one training iteration with activation recomputation, Narayanan et al. 2021 Eq. (3):
    96 B s l h^2 (1 + s/(6h) + V/(16 l h)), with B = b, l = n, h = d (their symbols)."""
    return 96 * b * s * n * d**2 * (1 + s / (6 * d) + v / (16 * n * d))


def padded_vocab(vocab: int, tp: int, divisible_by: int = VOCAB_DIVISIBLE_BY) -> int:
    """The vocabulary Megatron-LM (and OneFlow-GPT) actually computes logits over: the tokenizer's, padded to a
    multiple of divisible_by x tensor-parallel size, so each shard of the output layer is the same width."""
    multiple = divisible_by * tp
    return math.ceil(vocab / multiple) * multiple


def read_source(name: str) -> list[dict[str, str]]:
    """Rows of a transcribed source table (experiments/data/public_timings/source/NAME.csv)."""
    with open(SOURCE / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(f))


def narayanan_records(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Records for Narayanan et al. 2021 Tables 1 and 2: seconds = Eq. (3) FLOPs / (TFLOP/s per GPU x GPUs)."""
    records = []
    for row in rows:
        d, n, b, gpus = int(row["hidden"]), int(row["layers"]), int(row["batch"]), int(row["gpus"])
        tp, pp = int(row["tp"]), int(row["pp"])
        flops = megatron_flops(b, NARAYANAN_S, n, d, NARAYANAN_V)
        seconds = flops / (float(row["tflops_per_gpu"]) * 1e12 * gpus)
        records.append(
            dict(
                d=d,
                n=n,
                h=int(row["heads"]),
                w=4 * d,
                s=NARAYANAN_S,
                v=NARAYANAN_V,
                b=b,
                devices=gpus,
                seconds=seconds,
                dtype="float16",
                device="a100-80gb",
                **GPT,
                tp=tp,
                pp=pp,
                dp=gpus // (tp * pp),
                microbatch=row["microbatch"],
                recompute="full",
                source=f"Narayanan et al. 2021 Table {row['table']}, {row['params_billion']}B",
            )
        )
    return records


def dlperf_records(rows: list[dict[str, str]], framework: str) -> list[dict[str, Any]]:
    """Records for the DLPerf GPT cases run by `framework` ("megatron" or "oneflow"): measured ms per iteration."""
    records = []
    for row in rows:
        d, tp = int(row["hidden"]), int(row["tp"])
        records.append(
            dict(
                d=d,
                n=int(row["layers"]),
                h=int(row["heads"]),
                w=4 * d,
                s=DLPERF_S,
                v=padded_vocab(GPT2_VOCAB, tp),
                b=int(row["batch"]),
                devices=int(row["gpus"]),
                seconds=float(row[f"{framework}_ms"]) / 1000,
                dtype="float16",
                device="v100-sxm2-16gb",
                **GPT,
                tp=tp,
                pp=int(row["pp"]),
                dp=int(row["dp"]),
                microbatch=int(row["microbatch"]),
                recompute="full",
                source=f"DLPerf {framework} {row['case']}",
            )
        )
    return records


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """One records CSV; seconds to six significant figures (the sources give three to six)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow({**record, "seconds": f"{record['seconds']:.6g}"})


def convert(out: Path = DATA) -> dict[str, Path]:
    """Write every table's records CSV into `out`; returns the paths by table name."""
    dlperf = read_source("dlperf_v100")
    tables = {
        "narayanan2021_a100": narayanan_records(read_source("narayanan2021")),
        "dlperf_megatron_v100": dlperf_records(dlperf, "megatron"),
        "dlperf_oneflow_v100": dlperf_records(dlperf, "oneflow"),
    }
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, records in tables.items():
        paths[name] = out / f"{name}.csv"
        write_records(paths[name], records)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA, help="folder for the records CSVs")
    args = parser.parse_args(argv)
    for name, path in convert(args.out).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
