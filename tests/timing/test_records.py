"""External timing records (timing/records.py): CSV and JSON lines read, every refusal named by its line."""

from __future__ import annotations

import json

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.timing.records import (
    LISTED,
    external_row,
    read_timing_records,
    records_rates,
    write_rows,
)

HEADER = "d,n,h,w,s,v,b,devices,seconds,dtype"
GOOD = "512,8,8,2048,1024,50304,64,8,0.25,bf16"


def write(tmp_path, text, name="records.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_rows_become_timing_records(tmp_path):
    path = write(
        tmp_path,
        "D, n,h,w,s,v,b,devices,seconds,dtype,activation,mlp,norm,tied,xla_flops,xla_bytes,device,"
        "note\n"
        f"{GOOD},gelu,,layernorm,false,,,h100-sxm,first\n"
        "\n"  # a blank line is no row
        "256,4,4,768.0,512,32000,32,1,0.03,bfloat16,,gated,,,1.5e12,2e10,,second\n",
    )
    first, second = read_timing_records(path, device="NVIDIA H100 80GB HBM3")
    assert first == dict(
        source="records",
        line=2,
        config=dict(
            v=50304, d=512, n=8, h=8, w=2048, s=1024, norm="layernorm", activation="gelu", tied_embeddings=False
        ),
        device_kind="NVIDIA H100 80GB HBM3",
        backend="gpu",
        device_count=8,
        mesh=[8, 1],
        parallel=dict(tp=1, pp=1, dp=8, microbatch=None, recompute=False),
        dtype="bfloat16",
        batch=64,
        status="ok",
        step_seconds=0.25,
    )
    assert second["line"] == 4 and second["config"]["w"] == 768 and second["config"]["activation"] == "swiglu"
    assert second["config"]["norm"] == "rmsnorm" and second["config"]["tied_embeddings"] is True  # defaults
    assert second["xla"] == dict(flops=1.5e12, bytes_accessed=2e10) and second["device_kind"] == first["device_kind"]


def test_jsonl_rows_and_their_lines(tmp_path):
    rows = [
        dict(
            d=128,
            n=2,
            h=2,
            w=512,
            s=256,
            v=256,
            b=8,
            devices=1,
            seconds=0.01,
            dtype="float32",
            device="tpu v4",
            activation="swiglu",
            extra=[1, 2],
        )
    ]
    path = write(tmp_path, "\n" + json.dumps(rows[0]) + "\n\n" + json.dumps(dict(rows[0], b=16)) + "\n", "t.jsonl")
    records = read_timing_records(path)
    assert [r["line"] for r in records] == [2, 4] and [r["batch"] for r in records] == [8, 16]
    assert records[0]["device_kind"] == "TPU v4" and records[0]["backend"] == "tpu"  # the table's device kind
    assert records[0]["config"]["activation"] == "swiglu" and "xla" not in records[0]


@pytest.mark.parametrize(
    "row, problem",
    [
        ("512,8,8,2048,1024,50304,64,8,abc,bf16", "seconds='abc' is not a number"),
        ("512,8,8,2048,1024,50304,64,8,-0.5,bf16", "seconds='-0.5' must be a positive finite number"),
        ("512,8,8,2048,1024,50304,64,8,0,bf16", "seconds='0' must be a positive"),
        ("512,8,8,2048,1024,50304,64,8,nan,bf16", "seconds='nan' must be a positive"),
        ("512,8,7,2048,1024,50304,64,8,0.25,bf16", "d=512 is not divisible by h=7"),
        ("512,8,8,2048,1024,50304,64,0,0.25,bf16", "devices='0' must be a positive whole number"),
        (
            "512,8,8,2048,1024,50304,60,8,0.25,bf16",
            "b=60 is not a multiple of the data-parallel size 8 (devices / (tp x pp); b is the global batch)",
        ),
        ("512,8.5,8,2048,1024,50304,64,8,0.25,bf16", "n='8.5' must be a positive whole number"),
        ("512,8,8,,1024,50304,64,8,0.25,bf16", "w is missing"),
        ("512,8,8,2048,1024,50304,64,8", "seconds is missing"),
        ("512,8,8,2048,1024,50304,64,8,0.25,", "dtype is missing"),
        ("512,8,8,2048,1024,50304,64,8,0.25,int8", "dtype='int8' is not one of float32, fp32, bfloat16"),
        ("512,8,8,2048,1024,50304,64,8,0.25,bf16,swiglu,dense", "mlp='dense' contradicts activation='swiglu'"),
        ("512,8,8,2048,1024,50304,64,8,0.25,bf16,tanh,", "activation='tanh' is not one of gelu, relu, swiglu"),
        ("512,8,8,2048,1024,50304,64,8,0.25,bf16,gelu,dense,1,1,,,extra", "more fields than the header has columns"),
        (f"{GOOD},,,3,1,,", "devices=8 is not a multiple of tp x pp = 3 x 1"),
        (f"{GOOD},,,2,8,,", "devices=8 is not a multiple of tp x pp = 2 x 8"),
        (f"{GOOD},,,1,1,3,", "b / dp = 8 sequences per data-parallel replica is not a multiple of microbatch=3"),
        (f"{GOOD},,,0,1,,", "tp='0' must be a positive whole number"),
        (f"{GOOD},,,1,1.5,,", "pp='1.5' must be a positive whole number"),
        (f"{GOOD},,,1,1,-2,", "microbatch='-2' must be a positive whole number"),
        (f"{GOOD},,,1,1,,selective", "recompute='selective' is not one of true, 1, yes, false, 0, no, full, none"),
    ],
)
def test_a_bad_row_refuses_the_file_naming_its_line(tmp_path, row, problem):
    good = f"{GOOD},,,2,2,4,true"  # tp 2 x pp 2 on 8 devices: dp 2, 32 sequences each in micro-batches of 4
    path = write(tmp_path, f"{HEADER},activation,mlp,tp,pp,microbatch,recompute\n{good}\n{GOOD}\n{row}\n{good}\n")
    with pytest.raises(UserError, match="refused") as err:
        read_timing_records(path, device="h100-sxm")
    assert f"1 of 4 rows are bad (line 4: {problem}" in str(err.value) and "\n" not in str(err.value)


def test_model_parallel_rows(tmp_path):
    """Tensor and pipeline parallelism: b need only be a multiple of the data-parallel size devices / (tp x pp)
    (Narayanan et al. 2021 Table 1, 76.1B: b = 1792 on 1024 GPUs, tp 8, pp 4, so dp 32 and 56 sequences each,
    micro-batches of 2); recompute takes Megatron-LM's `full` and `none` as well as booleans."""
    path = write(
        tmp_path,
        f"{HEADER},tp,pp,microbatch,recompute\n"
        "10240,60,80,40960,2048,51200,1792,1024,16.06,fp16,8,4,2,full\n"
        "10240,60,80,40960,2048,51200,1792,1024,16.06,fp16,8,,,none\n"
        "1536,16,16,6144,2048,50304,16,8,0.48,fp16,1,1,2,TRUE\n",
        name="mp.csv",
    )
    first, second, third = read_timing_records(path, device="a100-80gb")
    assert first["parallel"] == dict(tp=8, pp=4, dp=32, microbatch=2, recompute=True) and "mesh" not in first
    assert second["parallel"] == dict(tp=8, pp=1, dp=128, microbatch=None, recompute=False)
    assert third["parallel"] == dict(tp=1, pp=1, dp=8, microbatch=2, recompute=True) and third["mesh"] == [8, 1]


def test_every_bad_row_is_counted_and_the_first_ones_listed(tmp_path):
    bad = [f"512,8,8,2048,1024,50304,64,8,-{i},bf16" for i in range(LISTED + 5)]
    path = write(tmp_path, "\n".join([HEADER, GOOD, *bad]) + "\n")
    with pytest.raises(UserError) as err:
        read_timing_records(path, device="h100-sxm")
    message = str(err.value)
    assert f"{LISTED + 5} of {LISTED + 6} rows are bad" in message and "and 5 more" in message
    assert [f"line {i}:" in message for i in (3, LISTED + 2, LISTED + 3)] == [True, True, False]


@pytest.mark.parametrize(
    "name, text, device, message",
    [
        ("r.csv", "d,n,h,w,s,v,seconds\n1,1,1,1,1,1,1\n", "cpu", "lacks column(s) b, devices, dtype; it needs d, n"),
        ("r.csv", "  \n", "cpu", "is empty"),
        ("r.csv", HEADER + "\n", "cpu", "holds no rows"),
        (
            "r.jsonl",
            '{"d": 1}\n[1, 2]\nnot json\n',
            "cpu",
            "line 1: n is missing; line 2: not a JSON object; line 3: not valid JSON)",
        ),
        ("r.jsonl", "[1, 2]\n", "cpu", "line 1: not a JSON object"),
        ("r.csv", f"{HEADER}\n{GOOD}\n", None, "line 2: device is missing (give it in the file or with --device NAME)"),
        ("r.csv", f"{HEADER}\n{GOOD}\n{GOOD[:-4]}float32\n", "cpu", "several dtypes (bfloat16, float32)"),
        (
            "r.csv",
            f"{HEADER},device\n{GOOD},h100-sxm\n{GOOD},h200\n",
            None,
            "several devices (NVIDIA H100 80GB HBM3, NVIDIA H200)",
        ),
        (
            "r.csv",
            f"{HEADER},device\n{GOOD},h100-sxm\n{GOOD},h100-sxm\n{GOOD},h100-sxn\n",
            None,
            "1 row(s) name 'h100-sxn', which the device table (configs/devices.py) does not know, beside 1 known",
        ),
        (
            "r.csv",
            f"{HEADER},device\n{GOOD},h100-sxm\n{GOOD},\n",
            "h200",
            "--device h200 disagrees with the device the records file",
        ),
    ],
)
def test_file_refusals(tmp_path, name, text, device, message):
    with pytest.raises(UserError, match="records file") as err:
        read_timing_records(write(tmp_path, text, name), device=device)
    assert message in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        read_timing_records(tmp_path / "nope.csv")


def test_rates_come_from_the_device_table_or_the_user():
    h100 = records_rates("NVIDIA H100 80GB HBM3", "bfloat16")
    assert (h100["peak_flops"], h100["bandwidth"], h100["source"]) == (989e12, 3.35e12, "records")
    assert records_rates("NVIDIA H100 80GB HBM3", "float32")["peak_flops"] == 67e12
    assert records_rates("NVIDIA H100 80GB HBM3", "float16")["peak_flops"] == 989e12
    assert "device table's h100-sxm" in h100["origin"]
    mine = records_rates("AMD MI300X", "bfloat16", peak_flops=1.3e15, bandwidth=5.3e12)
    assert (mine["peak_flops"], mine["bandwidth"], mine["origin"]) == (
        1.3e15,
        5.3e12,
        "peak: --peak-flops; bandwidth: --bandwidth",
    )
    with pytest.raises(UserError, match="'AMD MI300X' is not in the device table .*--peak-flops and --bandwidth"):
        records_rates("AMD MI300X", "bfloat16", peak_flops=1.3e15)
    with pytest.raises(UserError, match="no float32 peak or bandwidth for tpu-v4"):
        records_rates("TPU v4", "float32")


@pytest.mark.parametrize("name", ["back.csv", "back.jsonl"])
def test_our_records_written_in_the_external_format_read_back_the_same(tmp_path, name):
    config = dict(
        v=256,
        d=64,
        n=2,
        h=4,
        w=256,
        s=64,
        norm="layernorm",
        activation="swiglu",
        tied_embeddings=False,
        attention="auto",
    )
    ours = [
        dict(
            config=config,
            batch=16,
            device_count=2,
            dtype="bfloat16",
            device_kind="NVIDIA H200",
            step_seconds=0.0123456789,
            best_round_seconds=0.011,
            status="ok",
            xla=dict(flops=1.25e9, bytes_accessed=3.5e8),
        ),
        dict(
            config=dict(config, activation="gelu"),
            batch=8,
            dtype="bfloat16",
            device_kind="NVIDIA H200",
            step_seconds=0.5,
            status="ok",
        ),
        dict(
            config=config,
            batch=64,
            device_count=16,
            dtype="bfloat16",
            device_kind="NVIDIA H200",
            step_seconds=2.0,
            status="ok",
            parallel=dict(tp=4, pp=2, dp=2, microbatch=4, recompute=True),
        ),
    ]
    back = read_timing_records(write_rows(tmp_path / name, [external_row(r, "best_round_seconds") for r in ours]))
    assert [r["step_seconds"] for r in back] == [0.011, 0.5, 2.0]  # the statistic asked for, else the median
    assert [r["parallel"] for r in back] == [
        dict(tp=1, pp=1, dp=2, microbatch=None, recompute=False),
        dict(tp=1, pp=1, dp=1, microbatch=None, recompute=False),
        ours[2]["parallel"],
    ]
    for mine, theirs in zip(ours, back, strict=True):
        assert theirs["config"] == {k: v for k, v in mine["config"].items() if k != "attention"}
        assert (theirs["batch"], theirs["device_count"], theirs["dtype"], theirs["device_kind"]) == (
            mine["batch"],
            mine.get("device_count", 1),
            mine["dtype"],
            mine["device_kind"],
        )
        assert theirs.get("xla") == mine.get("xla")
