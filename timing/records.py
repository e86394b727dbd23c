"""External step timings (users' logs, public tables) read as the timing records the step-time models fit.

A records file (README, "File formats") is a CSV with a header line or JSON lines, one row per configuration:
`d, n, h, w, s, v, b, devices, seconds, dtype` (b the global batch in sequences over `devices` devices,
seconds one optimizer step, dtype the compute dtype), and optionally `activation` (gelu, relu, swiglu), `mlp`
(dense or gated: a gated MLP has three matrices, as SwiGLU), `norm` (rmsnorm, layernorm), `tied` (tied
embeddings: true or false), `xla_flops`, `xla_bytes` (XLA's compiled counts of the step), `device` (a name in
configs/devices.py or a JAX device_kind) and the parallel layout: `tp` and `pp` (tensor- and pipeline-parallel
sizes, default 1; the data-parallel size is dp = devices / (tp x pp)), `microbatch` (sequences per micro-batch:
each data-parallel replica's b / dp sequences run as micro-batches of that many, through the pipeline or by
gradient accumulation; default: one micro-batch of b / dp) and `recompute` (activation recomputation: true,
false, or Megatron-LM's `full`, `none`), and a mixture of experts' `experts` (0 or absent: a dense MLP),
`top_k` and `granularity` (default 1; model/moe.py). Other columns are ignored. A file is read whole or refused whole:
every bad row is named by its line, so a fit never rests on a silently dropped row.

The rows become timing records (timing/measure.py) with status `ok` and `source: records`; their devices
were never touched here, so peak FLOP/s and bandwidth come from the device table or from the user
(`records_rates`), not from a measurement.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from smallest_loss.configs.devices import DEVICES, backend_of, find_device
from smallest_loss.configs.errors import UserError

REQUIRED = ("d", "n", "h", "w", "s", "v", "b", "devices", "seconds", "dtype")
WHOLE = ("d", "n", "h", "w", "s", "v", "b", "devices")
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}
ACTIVATIONS = ("gelu", "relu", "swiglu")
NORMS = ("rmsnorm", "layernorm")
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
RECOMPUTE = {**BOOLEANS, "full": True, "none": False}  # Megatron-LM's --recompute-granularity full, or none
LISTED = 10  # bad rows named one by one in the refusal; the rest are counted
COLUMNS = (
    *REQUIRED,
    "activation",
    "mlp",
    "norm",
    "tied",
    "xla_flops",
    "xla_bytes",
    "device",
    "tp",
    "pp",
    "microbatch",
    "recompute",
    "experts",
    "top_k",
    "granularity",
)  # written order


def _moe(row: dict[str, Any], w: int) -> dict[str, int]:
    """A mixture of experts' config fields ({} for a dense row: its config as before these columns)."""
    given = _given(row, "experts")
    if given is None or str(given).strip() in ("0", "0.0"):
        return {}
    experts, top_k, granularity = (_whole_or(row, k, d) for k, d in (("experts", 0), ("top_k", 1), ("granularity", 1)))
    if top_k > experts or w % granularity:
        raise BadRow(
            f"top_k={top_k} must not exceed experts={experts}, and granularity={granularity} must divide w={w}"
        )
    return dict(experts=experts, top_k=top_k, granularity=granularity)


class BadRow(ValueError):
    """What is wrong with one row (the caller adds its line number)."""


def _given(row: dict[str, Any], name: str) -> Any:
    """The row's value of a column, None when absent or blank (a CSV's empty cell, JSON's null)."""
    value = row.get(name)
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _number(row: dict[str, Any], name: str, whole: bool = False) -> float:
    value = _given(row, name)
    if value is None:
        raise BadRow(f"{name} is missing")
    try:
        if isinstance(value, bool):
            raise ValueError
        x = float(value)
    except (TypeError, ValueError):
        raise BadRow(f"{name}={value!r} is not a number") from None
    if not (math.isfinite(x) and x > 0) or (whole and x != int(x)):
        raise BadRow(f"{name}={value!r} must be a positive {'whole number' if whole else 'finite number'}")
    return int(x) if whole else x


def _choice(row: dict[str, Any], name: str, allowed: Any, default: Any = None) -> Any:
    value = _given(row, name)
    if value is None:
        return default
    key = str(value).strip().lower()
    if key not in allowed:
        raise BadRow(f"{name}={value!r} is not one of {', '.join(dict.fromkeys(allowed))}")
    return allowed[key] if isinstance(allowed, dict) else key


def _activation(row: dict[str, Any]) -> str:
    """Our counts see whether the MLP is gated (three matrices: SwiGLU, GeGLU) or not; a gated MLP counts as
    `swiglu` whatever its non-linearity."""
    activation = _choice(row, "activation", ACTIVATIONS)
    mlp = _choice(row, "mlp", ("dense", "gated"))
    if mlp == "dense" and activation == "swiglu":
        raise BadRow("mlp='dense' contradicts activation='swiglu' (a gated MLP)")
    return "swiglu" if mlp == "gated" else activation or "gelu"


def _whole_or(row: dict[str, Any], name: str, default: int | None) -> int | None:
    return default if _given(row, name) is None else _number(row, name, whole=True)


def _layout(row: dict[str, Any], devices: int, b: int) -> dict[str, Any]:
    """The row's parallel layout: each model replica split over tp x pp devices (tensor and pipeline
    parallelism), the global batch over dp = devices / (tp x pp) replicas (Narayanan et al. 2021, section 2),
    and each replica's b / dp sequences over micro-batches of `microbatch` sequences."""
    tp, pp = _whole_or(row, "tp", 1), _whole_or(row, "pp", 1)
    if devices % (tp * pp):
        raise BadRow(f"devices={devices} is not a multiple of tp x pp = {tp} x {pp}")
    dp = devices // (tp * pp)
    if b % dp:
        raise BadRow(
            f"b={b} is not a multiple of the data-parallel size {dp} (devices / (tp x pp); b is the global batch)"
        )
    microbatch = _whole_or(row, "microbatch", None)
    if microbatch is not None and (b // dp) % microbatch:
        raise BadRow(
            f"b / dp = {b // dp} sequences per data-parallel replica is not a multiple of microbatch={microbatch}"
        )
    return dict(tp=tp, pp=pp, dp=dp, microbatch=microbatch, recompute=_choice(row, "recompute", RECOMPUTE, False))


def row_record(row: dict[str, Any], device: str | None) -> dict[str, Any]:
    """One row as a timing record (status ok, `source: records`); BadRow names its first problem.

    `device` is the device kind for a row that names none (from `--device`)."""
    if None in row:
        raise BadRow("more fields than the header has columns")
    x = {name: _number(row, name, whole=True) for name in WHOLE}
    seconds = _number(row, "seconds")
    if x["d"] % x["h"]:
        raise BadRow(f"d={x['d']} is not divisible by h={x['h']}")
    parallel = _layout(row, x["devices"], x["b"])
    dtype = _choice(row, "dtype", DTYPES)
    if dtype is None:
        raise BadRow("dtype is missing")
    kind = device_kind(str(_given(row, "device") or "")) or device
    if kind is None:
        raise BadRow("device is missing (give it in the file or with --device NAME)")
    config = dict(
        v=x["v"],
        d=x["d"],
        n=x["n"],
        h=x["h"],
        w=x["w"],
        s=x["s"],
        norm=_choice(row, "norm", NORMS, "rmsnorm"),
        activation=_activation(row),
        tied_embeddings=_choice(row, "tied", BOOLEANS, True),
        **_moe(row, x["w"]),
    )
    # mesh: our training's (data, fsdp) mesh, which describes a purely data-parallel layout only
    mesh = dict(mesh=[x["devices"], 1]) if parallel["dp"] == x["devices"] else {}
    record = dict(
        source="records",
        config=config,
        device_kind=kind,
        backend=backend_of(kind),
        device_count=x["devices"],
        **mesh,
        parallel=parallel,
        dtype=dtype,
        batch=x["b"],
        status="ok",
        step_seconds=seconds,
    )
    if _given(row, "xla_flops") is not None or _given(row, "xla_bytes") is not None:
        record["xla"] = dict(flops=_number(row, "xla_flops"), bytes_accessed=_number(row, "xla_bytes"))
    return record


def device_kind(name: str) -> str | None:
    """A device as records name it: the device table's JAX device_kind for a known name or kind (so profiles
    from records and from measurements of one device agree), else the name as given; None when blank."""
    name = name.strip()
    if not name:
        return None
    known = find_device(name)
    return known.kinds[0] if known else name


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [c.strip().lower() for c in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UserError(
            f"records file {path}: the header (line 1) lacks column(s) {', '.join(missing)}; "
            f"it needs {', '.join(REQUIRED)}"
        )
    return [(reader.line_num, row) for row in reader]


def _jsonl_rows(text: str) -> list[tuple[int, dict[str, Any] | str]]:
    rows = []
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            row = json.loads(content)
        except json.JSONDecodeError:
            rows.append((line, "not valid JSON"))
            continue
        rows.append(
            (
                line,
                {str(k).strip().lower(): v for k, v in row.items()} if isinstance(row, dict) else "not a JSON object",
            )
        )
    return rows


def read_rows(path: str | Path) -> list[tuple[int, dict[str, Any] | str]]:
    """(line number, row) of every row of a CSV or JSON-lines file (JSON lines when its name ends in .jsonl
    or .json, or its first character is `{`); a JSON line that is not an object is kept as what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"records file {path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"records file {path} is not text (CSV or JSON lines)") from None
    if not text.strip():
        raise UserError(f"records file {path} is empty")
    jsonl = path.suffix.lower() in (".jsonl", ".json") or text.lstrip().startswith("{")
    rows = _jsonl_rows(text) if jsonl else _csv_rows(path, text)
    if not rows:
        raise UserError(f"records file {path} holds no rows")
    return rows


def _refusal(path: Path, bad: list[tuple[int, str]], total: int) -> UserError:
    listed = "; ".join(f"line {line}: {why}" for line, why in bad[:LISTED])
    more = f"; and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
    return UserError(
        f"records file {path} refused: {len(bad)} of {total} rows are bad ({listed}{more}); fix or remove them"
    )


def _one(records: list[dict[str, Any]], key: str, path: Path, what: str) -> None:
    values = sorted({r[key] for r in records})
    unknown = [v for v in values if key == "device_kind" and find_device(v) is None]
    if len(values) > 1 and unknown:
        counts = ", ".join(f"{sum(r[key] == v for r in records)} row(s) name {v!r}" for v in unknown)
        raise UserError(
            f"records file {path}: {counts}, which the device table (configs/devices.py) does not know, beside "
            f"{len(values) - len(unknown)} known device(s): a typo? Fix the name, or split the file by device"
        )
    if len(values) > 1:
        raise UserError(
            f"records file {path} holds rows of several {what}s ({', '.join(values)}); a device profile "
            f"is for one {what}: split the file"
        )


def read_timing_records(path: str | Path, device: str | None = None) -> list[dict[str, Any]]:
    """Every row of a records file as a timing record, or one UserError naming every bad row by line.

    `device` (a table name or device kind) is the device of rows that name none, and must agree with rows
    that do. All rows must share one device and one dtype: a profile describes one device in one dtype."""
    path = Path(path)
    fallback = device_kind(device or "")
    records, bad = [], []
    rows = read_rows(path)
    for line, row in rows:
        try:
            if not isinstance(row, dict):
                raise BadRow(row)
            records.append(dict(row_record(row, fallback), line=line))
        except BadRow as err:
            bad.append((line, str(err)))
    if bad:
        raise _refusal(path, bad, len(rows))
    if fallback is not None and any(r["device_kind"] != fallback for r in records):
        named = sorted({r["device_kind"] for r in records} - {fallback})
        raise UserError(
            f"--device {device} disagrees with the device the records file {path} names "
            f"({', '.join(named)}); drop --device or fix the file"
        )
    _one(records, "dtype", path, "dtype")
    _one(records, "device_kind", path, "device")
    return records


def records_rates(
    kind: str, dtype: str, peak_flops: float | None = None, bandwidth: float | None = None
) -> dict[str, Any]:
    """Peak FLOP/s (in `dtype`) and bandwidth of a device never measured here, for the roofline models and the
    profile: the given ones, else the device table's (vendor dense peaks; float16 at the bfloat16 rate, as
    tensor cores run both). A device the table lacks, or a rate it lacks, is a UserError naming the flags."""
    known = find_device(kind)
    table_peak = known and (known.peak_fp32_flops if dtype == "float32" else known.peak_bf16_flops)
    peak, bw = peak_flops or table_peak, bandwidth or (known and known.bandwidth)
    if not (peak and bw):
        where = (
            f"the device table has no {dtype} peak or bandwidth for {known.name}"
            if known
            else f"device {kind!r} is not in the device table (known: {', '.join(DEVICES)})"
        )
        raise UserError(f"{where}: pass --device NAME of a known device, or --peak-flops and --bandwidth")
    table = f"the device table's {known.name}" if known else ""
    origin = (
        f"peak: {'--peak-flops' if peak_flops else f'{table}, {dtype} dense'}; "
        f"bandwidth: {'--bandwidth' if bandwidth else table}"
    )
    return dict(
        device_kind=kind,
        peak_flops=float(peak),
        peak_dtype=dtype,
        bandwidth=float(bw),
        cache_bytes=None,
        source="records",
        origin=origin,
    )


def external_row(record: dict[str, Any], seconds_key: str = "step_seconds") -> dict[str, Any]:
    """A timing record as a row of a records file (its `seconds_key` statistic as `seconds`), so a measured
    calibration can be refitted through `calibrate --records` and compared with its own fit."""
    c, xla, parallel = record["config"], record.get("xla", {}), record.get("parallel", {})
    return dict(
        d=c["d"],
        n=c["n"],
        h=c["h"],
        w=c["w"],
        s=c["s"],
        v=c["v"],
        b=record["batch"],
        devices=record.get("device_count", 1),
        seconds=record.get(seconds_key, record["step_seconds"]),
        dtype=record.get("dtype", "float32"),
        activation=c.get("activation", "gelu"),
        mlp="gated" if c.get("activation") == "swiglu" else "dense",
        norm=c.get("norm", "rmsnorm"),
        tied=str(c.get("tied_embeddings", True)).lower(),
        xla_flops=xla.get("flops"),
        xla_bytes=xla.get("bytes_accessed"),
        device=record.get("device_kind"),
        tp=parallel.get("tp", 1),
        pp=parallel.get("pp", 1),
        microbatch=parallel.get("microbatch"),
        recompute=str(parallel.get("recompute", False)).lower(),
        experts=c.get("experts"),  # blank for a dense record
        top_k=c.get("top_k"),
        granularity=c.get("granularity"),
    )


def write_rows(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Rows of a records file as JSON lines (a name ending in .jsonl or .json) or CSV (any other name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jsonl", ".json"):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path
