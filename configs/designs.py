"""Training-sweep designs: IsoFLOP (Hoffmann et al., 2022, Approach 2) and IsoTime ("Time Matters"),
optionally crossed with batch sizes and learning rates (recipe sweeps), built in or read from a user's file.

An IsoFLOP design trains, for each FLOP budget C, several model shapes, each for the tokens that C buys:
D = C / (6N) by the convention of published laws, or by our exact training-step FLOP count. An IsoTime
design trains several shapes for the same wall-clock budget T: each for the steps that T buys on a
device profile's predicted step time. A design with `batch_sizes` or `lrs` trains every (budget, shape) at
every batch size and learning rate: the runs the recipe laws (scaling/recipe.py) are fitted to. Under an
IsoFLOP budget the tokens D = C / (6N) do not depend on the batch, so each (budget, shape) group holds the
same data at several batch sizes, the comparison McCandlish et al. (2018) make.

A cooldown design (Hagele et al., 2024, arXiv 2405.18392) trains, for each budget and shape, one run at a
constant learning rate after warmup, and branches from its checkpoints cool-downs that end at
`branch_fractions` of the steps the budget buys: each branch is a point (N, D, loss) as a cosine run of its
length would be, and the branches share the constant run's steps.

A design file (TOML or JSON; `load_design_file`) declares the same fields, so users write their own sweeps
without editing the package; see the README's "Sweep design files".
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from smallest_loss.configs.errors import UserError
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import ModelConfig, RunConfig, TrainConfig

Shape = tuple[int, int, int]  # (d, n, h); w = mlp_ratio * d


@dataclass(frozen=True)
class SweepDesign:
    """A named set of training runs. `shapes[i]` are the shapes trained at `budgets[i]`."""

    name: str
    kind: Literal["isoflop", "isotime", "cooldown"]
    budgets: tuple[float, ...]  # FLOPs (isoflop) or seconds (isotime)
    shapes: tuple[tuple[Shape, ...], ...]
    base: RunConfig = field(default_factory=RunConfig)
    flops: Literal["6N", "exact"] = "6N"  # how an isoflop budget converts to tokens
    warmup_fraction: float = 0.05
    min_steps: int = 20
    batch_sizes: tuple[int, ...] = ()  # recipe axes: empty means the base run's batch size ...
    lrs: tuple[float, ...] = ()  # ... and learning rate
    branch_fractions: tuple[float, ...] = ()  # cooldown: where branches end, as fractions of the budget's steps
    cooldown_fraction: float = 0.2  # cooldown: each branch's cool-down, as a fraction of its steps
    decay: Literal["linear", "1-sqrt"] = "1-sqrt"  # cooldown: the cool-down's shape
    # Named sets of `--set` overrides: every (budget, shape, recipe) is trained once per variant, its run named
    # with the label (a precision sweep's bit widths). Empty: one run each, the base configuration.
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Per budget, how many times each of its runs is trained, with seeds base.seed, base.seed + 1, ... (a fit of run
    # folders takes replicates' mean loss as one point: scaling/collect.py): cheap, noisy runs made steadier. Empty:
    # every run once.
    replicates: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.budgets) != len(self.shapes):
            raise UserError(f"design {self.name}: {len(self.budgets)} budgets but {len(self.shapes)} shape lists")
        if any(not b > 0 for b in self.budgets):
            raise UserError(f"design {self.name}: budgets must be positive")
        if self.kind not in ("isoflop", "isotime", "cooldown"):
            raise UserError(f"design {self.name}: kind {self.kind!r} must be isoflop, isotime or cooldown")
        self._check_branches()
        self._check_variants()
        self._check_replicates()
        if self.flops not in ("6N", "exact"):
            raise UserError(f"design {self.name}: flops {self.flops!r} must be 6N or exact")
        for b in self.batch_sizes:
            if isinstance(b, bool) or not isinstance(b, int) or b <= 0:
                raise UserError(f"design {self.name}: batch size {b!r} must be a positive integer")
        for lr in self.lrs:
            if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < float("inf"):
                raise UserError(f"design {self.name}: learning rate {lr!r} must be a positive number")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"design {self.name}: warmup_fraction {self.warmup_fraction!r} must lie in [0, 1)")
        if self.min_steps < 1:
            raise UserError(f"design {self.name}: min_steps {self.min_steps!r} must be at least 1")
        for shapes in self.shapes:
            for shape in shapes:
                if len(shape) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in shape):
                    raise UserError(
                        f"design {self.name}: shape {list(shape)!r} must be three positive integers [d, n, h]"
                    )
                self.model(shape)  # d divisible by h, even head size: checked now, not mid-sweep

    def _check_branches(self) -> None:
        """A cooldown design needs branch points in (0, 1] and a cool-down fraction in (0, 1); others none."""
        if (self.kind == "cooldown") != bool(self.branch_fractions):
            raise UserError(f"design {self.name}: branch_fractions go with kind cooldown, and it needs them")
        for f in self.branch_fractions:
            if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1:
                raise UserError(f"design {self.name}: branch fraction {f!r} must lie in (0, 1]")
        if not 0 < self.cooldown_fraction < 1:
            raise UserError(f"design {self.name}: cooldown_fraction {self.cooldown_fraction!r} must lie in (0, 1)")
        if self.decay not in ("linear", "1-sqrt"):
            raise UserError(f"design {self.name}: decay {self.decay!r} must be linear or 1-sqrt")

    def _check_variants(self) -> None:
        labels = [label for label, _ in self.variants]
        if labels and self.kind == "cooldown":
            raise UserError(f"design {self.name}: variants do not go with kind cooldown")
        if len(set(labels)) != len(labels):
            raise UserError(f"design {self.name}: variant labels must differ; got {labels}")
        for label, overrides in self.variants:
            if not label or not label.replace("-", "").isalnum():
                raise UserError(f"design {self.name}: variant label {label!r} must be letters, digits and '-'")
            if isinstance(overrides, str) or any("=" not in o for o in overrides):
                raise UserError(f"design {self.name}: variant {label} overrides must be section.field=value items")

    def _check_replicates(self) -> None:
        if self.replicates and len(self.replicates) != len(self.budgets):
            raise UserError(
                f"design {self.name}: {len(self.replicates)} replicate counts but {len(self.budgets)} budgets"
            )
        if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in self.replicates):
            raise UserError(f"design {self.name}: replicates {list(self.replicates)!r} must be positive integers")
        if self.kind == "cooldown" and any(r > 1 for r in self.replicates):
            raise UserError(f"design {self.name}: replicates do not go with kind cooldown")

    def seeds(self, i: int) -> tuple[int, ...]:
        """The seeds budget i's runs are trained with: the base run's, then one more for each replicate."""
        seed = self.base.train.seed
        return tuple(range(seed, seed + (self.replicates[i] if self.replicates else 1)))

    def grid(self) -> list[tuple[float, Shape, int, float, str]]:
        """Every (budget, shape, batch size, learning rate, variant label) the design lists, before a budget too
        small for a shape drops a run (`experiments/sweep.py`'s plan_runs)."""
        labels = [label for label, _ in self.variants] or [""]
        return [(budget, shape, batch, lr, label) for budget, shapes in zip(self.budgets, self.shapes, strict=True)
                for shape in shapes for batch, lr in self.recipes for label in labels]  # fmt: skip

    @property
    def recipes(self) -> tuple[tuple[int, float], ...]:
        """Every (batch size, learning rate) each (budget, shape) is trained at."""
        batches = self.batch_sizes or (self.base.train.batch_size,)
        lrs = self.lrs or (self.base.train.lr,)
        return tuple((b, lr) for b in batches for lr in lrs)

    @property
    def varies_recipe(self) -> bool:
        return len(self.recipes) > 1

    def model(self, shape: Shape) -> ModelConfig:
        d, n, h = shape
        return dataclasses.replace(self.base.model, d=d, n=n, h=h, w=None)  # w derived from d


def _shapes(*idx: int) -> tuple[Shape, ...]:
    return tuple(_CPU_SHAPES[i] for i in idx)


# Small byte-level models, ~7k to ~0.8M parameters; each budget takes five shapes around its expected
# optimum. A first sweep at these budgets with 33k-2.7M-parameter models found every budget's best loss
# at its smallest model (about 30 tokens per parameter or more), so the shapes reach down to 7k.
_CPU_SHAPES: tuple[Shape, ...] = (
    (16, 1, 2),
    (24, 1, 2),
    (32, 1, 2),
    (32, 2, 2),
    (48, 2, 2),
    (64, 3, 2),
    (96, 3, 3),
    (128, 4, 4),
)
_CPU_BASE = RunConfig(
    model=ModelConfig(v=256, s=64),
    train=TrainConfig(
        batch_size=16, steps=1, lr=3e-3, eval_every=0, eval_batches=16, checkpoint_every=250, log_every=25
    ),
)

_GPU_SHAPES: tuple[Shape, ...] = (
    (256, 4, 4),
    (384, 6, 6),
    (512, 8, 8),
    (640, 10, 10),
    (768, 12, 12),
    (1024, 16, 16),
    (1280, 20, 20),
)
_GPU_BASE = RunConfig(
    model=ModelConfig(v=256, s=512, dtype="bfloat16"),
    train=TrainConfig(
        batch_size=64, steps=1, lr=1e-3, eval_every=0, eval_batches=16, checkpoint_every=500, log_every=50
    ),
)

DESIGNS: dict[str, SweepDesign] = {
    "cpu-isoflop": SweepDesign(
        name="cpu-isoflop",
        kind="isoflop",
        budgets=(1e11, 3e11, 9e11, 2.7e12),
        shapes=(_shapes(0, 1, 2, 3, 4), _shapes(1, 2, 3, 4, 5), _shapes(2, 3, 4, 5, 6), _shapes(3, 4, 5, 6, 7)),
        base=_CPU_BASE,
    ),
    # The quickstart's sweep, designed by `suggest` (scaling/design.py; experiments/scripts/quick_design.py): six runs
    # of the old design's two smaller budgets as the seed, then the eight runs that most shrink the interval of the
    # loss and N_opt at 2.4e11 FLOPs (20 s of this CPU) and pin down E, alpha and beta, on the law of this CPU's
    # cpu-isoflop sweep with its 1.1% scatter (simulated, the full law identified in 80% of 60 noise draws, against
    # 45% for the old 15-run design). Trained at ten seeds (experiments/scripts/seed_laws.py), those 14 runs
    # identified the full law in 4 of 10. One of the eight, the smallest model (d16-n1, 7.2k parameters) on 2.4M
    # tokens at 1.02e11 FLOPs (326 tokens a parameter), carried the largest residual at seed 0 (+5.8%); of the 14
    # designs with one run left out, judged on seeds 0-5, only the one without it identified the law in more seeds
    # (5 of 6, against 4), and on seeds 6-9, trained after that choice, it held in 3 of 4 where the 14 runs held in
    # none (seeds 10-14, trained after it: 3 of 5 against 1 of 5). So the design is those 13 runs (10 of 15 seeds
    # against 5 of 15; results/cpu/quickstart/README.md, stop 56), 5.4e12 FLOPs.
    "quick-isoflop": SweepDesign(
        name="quick-isoflop",
        kind="isoflop",
        budgets=(9.97e9, 1.06e10, 1.21e10, 3.45e10, 1e11, 2e11, 3.3e11, 3.36e11, 3.76e12),
        shapes=(
            ((16, 1, 2),),
            ((40, 1, 5),),
            ((16, 1, 2),),
            ((32, 1, 1),),
            _shapes(1, 2, 3),
            _shapes(2, 3, 4),
            ((24, 1, 3),),
            ((56, 4, 7),),
            ((96, 5, 3),),
        ),
        base=_CPU_BASE,
    ),
    # A few seconds of CPU per run, six runs (the fewest a fit takes): for tests and a first look.
    "tiny-isoflop": SweepDesign(
        name="tiny-isoflop",
        kind="isoflop",
        budgets=(2e9, 6e9),
        shapes=(((16, 1, 2), (32, 1, 2), (32, 2, 2)),) * 2,
        base=_CPU_BASE,
        min_steps=8,
    ),
    # The data lever's sweep (experiments/scripts/data_lever.py), once per training corpus: three budgets of the
    # same three small shapes (7k to 68k parameters), nine runs of 23 to 2255 steps (minutes on 2 CPU cores).
    "data-isoflop": SweepDesign(
        name="data-isoflop",
        kind="isoflop",
        budgets=(1e10, 3e10, 1e11),
        shapes=(((16, 1, 2), (32, 1, 2), (48, 2, 2)),) * 3,
        base=_CPU_BASE,
        min_steps=8,
    ),
    # The recipe sweep: three model sizes (7k, 21k and 68k parameters) at one IsoFLOP budget (so 693k, 243k and
    # 74k tokens), each trained at five batch sizes (256 to 4096 tokens a step) and five learning rates a factor
    # 2.2 apart: 75 runs, 1M tokens per (batch, lr). Earlier tries with rates up to 1.6e-2 and then 5e-2 found a
    # 13k-parameter model still improving at the top rate, so the rates reach 9.4e-2. Two micro-batches a step
    # give every run its gradient noise scale.
    "cpu-recipe": SweepDesign(
        name="cpu-recipe",
        kind="isoflop",
        budgets=(3e10,),
        shapes=(((16, 1, 2), (32, 1, 2), (48, 2, 2)),),
        base=dataclasses.replace(_CPU_BASE, train=dataclasses.replace(_CPU_BASE.train, micro_batches=2)),
        min_steps=10,
        batch_sizes=(4, 8, 16, 32, 64),
        lrs=(4e-3, 8.8e-3, 1.94e-2, 4.26e-2, 9.37e-2),
    ),
    # A recipe sweep for tests: one tiny shape, one budget, 2 batch sizes x 2 learning rates.
    "tiny-recipe": SweepDesign(
        name="tiny-recipe",
        kind="isoflop",
        budgets=(2e9,),
        shapes=(((16, 1, 2),),),
        base=_CPU_BASE,
        min_steps=8,
        batch_sizes=(4, 16),
        lrs=(2e-3, 8e-3),
    ),
    # The shape sweep (scaling/aspect.py): at three IsoFLOP budgets, four shapes of nearly one N each (within 3%,
    # 17% and 18%) whose aspect ratios d/n span 2 to 64 (Kaplan et al. 2020, figure 5, vary d/n at fixed N):
    # 12 runs, 6e12 FLOPs, the recipe of cpu-isoflop, so its runs and these fit one law.
    "cpu-shape": SweepDesign(
        name="cpu-shape",
        kind="isoflop",
        budgets=(1e11, 3e11, 9e11),
        shapes=(
            ((16, 5, 2), (20, 3, 2), (24, 2, 2), (32, 1, 2)),
            ((16, 8, 2), (24, 4, 2), (32, 2, 2), (40, 1, 2)),
            ((24, 8, 2), (32, 4, 2), (48, 2, 2), (64, 1, 2)),
        ),
        base=_CPU_BASE,
    ),
    # Cool-down branches (Hagele et al., 2024): per shape one constant-rate run, and 1-sqrt cool-downs of 20% of
    # each branch's steps branched from it, ending at 10%, 30% and 100% of the budget's steps: the token counts of
    # data-isoflop's three budgets, for 0.8 + 0.2 * 1.4 = 1.08 of the largest budget's training per shape.
    "cpu-cooldown": SweepDesign(
        name="cpu-cooldown",
        kind="cooldown",
        budgets=(1e11,),
        shapes=(((16, 1, 2), (32, 1, 2), (48, 2, 2)),),
        base=_CPU_BASE,
        min_steps=8,
        branch_fractions=(0.1, 0.3, 1.0),
    ),
    # The same for tests: one tiny shape, branches ending at half and all of 2e9 FLOPs.
    "tiny-cooldown": SweepDesign(
        name="tiny-cooldown",
        kind="cooldown",
        budgets=(2e9,),
        shapes=(((16, 1, 2),),),
        base=_CPU_BASE,
        min_steps=8,
        branch_fractions=(0.5, 1.0),
    ),
    # The precision sweep (scaling/precision_fit.py; Kumar et al. 2025): three shapes (13k, 33k and 68k parameters)
    # at three IsoFLOP budgets, each trained with weights and activations fake-quantised to 3, 4 and 6 bits and in
    # float32 (unquantised): 36 runs, 7.8e12 FLOPs, 51k steps in all. At the 20-25 ms a step that cpu-isoflop's and
    # data-isoflop's runs of these sizes took on 2 CPU cores, plus a guessed 30% for fake quantisation, about 20-25
    # minutes (not yet run). Simulated with the cpu-isoflop law, gamma = 2.5 bits and 1% scatter, the tied fit is
    # identified and predicts each held-out width within 1% mean error. `fit --csv T --form precision` fits it.
    "cpu-precision": SweepDesign(
        name="cpu-precision",
        kind="isoflop",
        budgets=(5e10, 1.5e11, 4.5e11),
        shapes=(((24, 1, 2), (32, 2, 2), (48, 2, 2)),) * 3,
        base=_CPU_BASE,
        min_steps=8,
        variants=(
            ("fp32", ()),
            ("w6a6", ("model.bits_weights=6", "model.bits_activations=6")),
            ("w4a4", ("model.bits_weights=4", "model.bits_activations=4")),
            ("w3a3", ("model.bits_weights=3", "model.bits_activations=3")),
        ),
    ),
    # The mixture-of-experts lever on CPU (issue 26): three shapes (d=24, n=1; d=32, n=2; d=48, n=2) at three
    # budgets, each dense and as top-1 mixtures of 4 and 8 experts of the dense MLP's width. Top-1 routing keeps the
    # FLOPs per token of the dense shape (plus the router), so the budget's steps are the dense model's; the law reads
    # the active parameters (`smallest-loss table` writes them; `fit --csv --form moe`). 27 runs (three active sizes:
    # two cannot fix alpha).
    "cpu-moe": SweepDesign(
        name="cpu-moe",
        kind="isoflop",
        budgets=(5e10, 1.5e11, 4.5e11),
        shapes=(((24, 1, 2), (32, 2, 2), (48, 2, 2)),) * 3,
        base=_CPU_BASE,
        min_steps=8,
        variants=(
            ("dense", ()),
            ("e4", ("model.experts=4", "model.top_k=1")),
            ("e8", ("model.experts=8", "model.top_k=1")),
        ),
    ),
    "cpu-isotime": SweepDesign(
        name="cpu-isotime",
        kind="isotime",
        budgets=(60.0,),
        shapes=(((64, 8, 2), (96, 4, 3), (128, 2, 4), (192, 1, 6), (256, 1, 8)),),
        base=_CPU_BASE,
    ),
    "gpu-isoflop": SweepDesign(
        name="gpu-isoflop",
        kind="isoflop",
        budgets=(3e15, 1e16, 3e16),
        shapes=(tuple(_GPU_SHAPES[0:5]), tuple(_GPU_SHAPES[1:6]), tuple(_GPU_SHAPES[2:7])),
        base=_GPU_BASE,
        min_steps=200,
    ),
}


def get_design(name: str) -> SweepDesign:
    """A built-in design by name, or a user's design file (a path ending in .toml or .json)."""
    if name.endswith((".toml", ".json")):
        return load_design_file(name)
    try:
        return DESIGNS[name]
    except KeyError:
        raise UserError(
            f"unknown sweep design {name!r}; choose one of: {', '.join(DESIGNS)}, "
            "or pass a design file (.toml or .json)"
        ) from None


_FILE_FIELDS = (
    "name",
    "kind",
    "budgets",
    "shapes",
    "base",
    "set",
    "flops",
    "warmup_fraction",
    "min_steps",
    "batch_sizes",
    "lrs",
    "branch_fractions",
    "cooldown_fraction",
    "decay",
    "variants",
    "replicates",
)


def _read_design_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"design file {path} does not exist")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text())
        raw = json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"design file {path} does not parse: {err}") from None
    if not isinstance(raw, dict):
        raise UserError(f"design file {path}: expected an object of design fields")
    return raw


def _file_shapes(raw: Any, budgets: int, where: str) -> tuple[tuple[Shape, ...], ...]:
    """`shapes`: one list of [d, n, h] for every budget, or one such list per budget."""
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{where}: shapes must be a list of [d, n, h] (or one such list per budget)")
    per_budget = all(isinstance(s, list) and s and all(isinstance(x, list) for x in s) for s in raw)
    lists = raw if per_budget else [raw] * budgets
    try:
        return tuple(tuple(tuple(shape) for shape in shapes) for shapes in lists)
    except TypeError:
        raise UserError(f"{where}: shapes must be a list of [d, n, h] (or one such list per budget)") from None


def load_design_file(path: str | Path) -> SweepDesign:
    """A sweep design from a TOML or JSON file. Fields: `budgets` and `shapes` (required), `name` (default: the
    file's stem), `kind`, `flops`, `warmup_fraction`, `min_steps`, `batch_sizes`, `lrs`, `branch_fractions`,
    `cooldown_fraction`, `decay` (kind cooldown), `replicates` (one count per budget: the seeds each of its runs
    is trained with), `base` (a built-in design whose run configuration the runs start from; default cpu-isoflop)
    and `set` (a table of `"section.field" = value` overrides of that configuration, as `--set` takes them).
    Unknown fields and bad values are one-line UserErrors naming the file."""
    path = Path(path)
    raw = _read_design_file(path)
    where = f"design file {path}"
    unknown = sorted(set(raw) - set(_FILE_FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r}; known fields: {', '.join(_FILE_FIELDS)}")
    for key in ("budgets", "shapes"):
        if key not in raw:
            raise UserError(f"{where}: missing field {key!r}")
    budgets = raw["budgets"] if isinstance(raw["budgets"], list) else [raw["budgets"]]
    if any(isinstance(b, bool) or not isinstance(b, int | float) for b in budgets):
        raise UserError(f"{where}: budgets must be numbers (FLOPs, or seconds for kind isotime)")
    base_name = raw.get("base", "cpu-isoflop")
    if base_name not in DESIGNS:
        raise UserError(f"{where}: base {base_name!r} is not a built-in design; choose one of: {', '.join(DESIGNS)}")
    overrides = raw.get("set", {})
    if not isinstance(overrides, dict):
        raise UserError(f"{where}: 'set' must be a table of \"section.field\" = value")
    try:
        base = apply_overrides(DESIGNS[base_name].base, [f"{k}={_override_text(v)}" for k, v in overrides.items()])
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    fields = {
        k: raw[k] for k in ("kind", "flops", "warmup_fraction", "min_steps", "cooldown_fraction", "decay") if k in raw
    }
    for key in ("batch_sizes", "lrs", "branch_fractions", "replicates"):
        value = raw.get(key, [])
        if not isinstance(value, list):
            raise UserError(f"{where}: {key} must be a list")
        fields[key] = tuple(value)
    fields["variants"] = _file_variants(raw.get("variants", {}), where)
    fields.setdefault("kind", "isoflop")
    try:
        return SweepDesign(
            name=str(raw.get("name", path.stem)),
            budgets=tuple(float(b) for b in budgets),
            shapes=_file_shapes(raw["shapes"], len(budgets), where),
            base=base,
            **fields,
        )
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def _file_variants(raw: Any, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`[variants]`: a table of label = ["section.field=value", ...] (every run trained once per label)."""
    if not isinstance(raw, dict) or any(
        not isinstance(v, list) or not all(isinstance(o, str) for o in v) for v in raw.values()
    ):
        raise UserError(f'{where}: variants must be a table of label = ["section.field=value", ...]')
    return tuple((str(label), tuple(overrides)) for label, overrides in raw.items())


def _override_text(value: Any) -> str:
    """A design file's override value as `--set` text (TOML and JSON give typed values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)
