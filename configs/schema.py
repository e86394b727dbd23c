"""Typed, frozen configuration: one dataclass per concern, every setting declared exactly once.

Symbols: d model width, n layers, h attention heads, w MLP hidden width,
v vocabulary, s sequence length, b batch size (sequences per step).

Configs are frozen (hashable: usable as jit static arguments and cache keys) and validate
themselves in `__post_init__`, raising `UserError` with a message that names the bad field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, ClassVar, Literal

from smallest_loss.configs.errors import UserError

SCHEMA_VERSION = 2  # 2: train.eval_batch_size (version-1 run folders evaluate as before it)

Norm = Literal["rmsnorm", "layernorm"]
Activation = Literal["gelu", "relu", "swiglu"]
Attention = Literal["auto", "xla", "cudnn"]
ParamDType = Literal["float32", "bfloat16", "float16"]
# Compute dtypes; "float8": FP8 matmuls in the linear layers, bfloat16 around them (model/quant.py)
DType = Literal["float32", "bfloat16", "float16", "float8"]
Schedule = Literal["cosine", "wsd", "constant"]
Decay = Literal["linear", "1-sqrt"]  # shape of a wsd cool-down (Hagele et al., 2024)
Dispatch = Literal["blocked", "ragged"]  # how a mixture-of-experts layer runs its experts (model/moe.py)


def _where(obj: Any, name: str) -> str:
    """How a field is spelled on the command line: `model.d`, `train.lr`, `data.corpus`."""
    section = type(obj).__name__.removesuffix("Config").lower()
    return f"{section}.{name}"


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not value > 0:
            raise UserError(f"{_where(obj, name)}={value!r} must be positive")


def _in_unit_interval(obj: Any, *names: str, closed: bool = True) -> None:
    for name in names:
        value = getattr(obj, name)
        ok = 0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0
        if not ok:
            raise UserError(f"{_where(obj, name)}={value!r} must lie in [0, 1{']' if closed else ')'}")


def _suggest_heads(d: int, h: int) -> str:
    """What to set instead: the head count nearest h whose head size d/h is a whole, even number."""
    valid = [k for k in range(1, d // 2 + 1) if d % k == 0 and (d // k) % 2 == 0]
    if not valid:
        return "model.d must be even"
    best = min(valid, key=lambda k: (abs(k - h), k))
    return f"set model.h too, e.g. --set model.h={best} (head size {d // best})"


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer: pre-norm blocks, RoPE positions, causal self-attention, MLP.

    The MLP width w follows the model width unless it is given: w = round(mlp_ratio * d). After
    construction `w` always holds the resolved width, so every consumer reads one number.
    """

    v: int = 256  # vocabulary
    d: int = 64  # model width
    n: int = 2  # layers
    h: int = 4  # attention heads
    w: int | None = None  # MLP hidden width; None: round(mlp_ratio * d)
    s: int = 64  # context (sequence) length
    mlp_ratio: float = 4.0  # w / d when w is not given (4 as in GPT-2 and Chinchilla)
    norm: Norm = "rmsnorm"
    activation: Activation = "gelu"
    tied_embeddings: bool = True
    dtype: DType = "float32"  # compute dtype; "float8": FP8 matmuls in the blocks' linear layers (model/quant.py)
    param_dtype: ParamDType = "float32"  # master weights
    attention: Attention = "auto"  # "auto": cuDNN fused attention on GPU in half precision, else XLA
    # Quantisation-aware training (Kumar et al., 2025; model/quant.py): bits of a symmetric integer grid with a
    # straight-through gradient, per kind of tensor; None or 0: not quantised. Weights and inputs of the blocks'
    # linear layers, and attention keys and values.
    bits_weights: int | None = None
    bits_activations: int | None = None
    bits_kv: int | None = None
    # Mixture of experts (model/moe.py): 0 keeps the dense MLP. Otherwise each block's MLP is `experts` *
    # `granularity` routed experts of width w / granularity, `top_k` * `granularity` of them active per token
    # (fine-grained experts: Krajewski et al., 2024), plus `shared_experts` always-on experts of that width.
    experts: int = 0
    top_k: int = 1
    granularity: int = 1
    shared_experts: int = 0
    moe_dispatch: Dispatch = "blocked"  # "blocked": sorted rows in blocks (exact FLOPs); "ragged": lax.ragged_dot

    # Fields computed from others when not given; an override of a source re-derives them
    # (configs/overrides.py) unless the same command sets them too.
    DERIVED: ClassVar[dict[str, tuple[str, ...]]] = {"w": ("d", "mlp_ratio")}

    def __post_init__(self) -> None:
        _positive(self, "v", "d", "n", "h", "s", "mlp_ratio")
        if self.w is None:
            object.__setattr__(self, "w", max(1, round(self.mlp_ratio * self.d)))
        _positive(self, "w")
        if self.d % self.h or (self.d // self.h) % 2:
            problem = (
                f"model.d={self.d} is not divisible by model.h={self.h}"
                if self.d % self.h
                else f"head size d/h = {self.head_dim} must be even (rotary embeddings rotate pairs)"
            )
            raise UserError(f"{problem}; {_suggest_heads(self.d, self.h)}")
        self._check_precision()
        self._check_experts()

    def _check_precision(self) -> None:
        """Bits are None (0 reads as None) or 2..16; FP8 matmuls and integer bits on them are exclusive."""
        for name in ("bits_weights", "bits_activations", "bits_kv"):
            bits = getattr(self, name)
            if bits == 0:
                object.__setattr__(self, name, None)
            elif bits is not None and not (isinstance(bits, int) and 2 <= bits <= 16):
                raise UserError(f"model.{name}={bits!r} must be an integer from 2 to 16, or 0 / None (not quantised)")
        if self.param_dtype not in ("float32", "bfloat16", "float16"):
            raise UserError(f"model.param_dtype={self.param_dtype!r}: master weights are float32, bfloat16 or float16")
        if self.dtype == "float8" and (self.bits_weights or self.bits_activations):
            raise UserError(
                "model.dtype=float8 already quantises the linear layers' weights and inputs (to float8); "
                "unset model.bits_weights and model.bits_activations, or compute in float32 or bfloat16"
            )

    @property
    def quantised(self) -> bool:
        """Whether any tensor is quantised (integer bits or FP8 matmuls)."""
        return bool(self.bits_weights or self.bits_activations or self.bits_kv) or self.dtype == "float8"

    def _check_experts(self) -> None:
        """The mixture-of-experts fields: off (experts=0) or a consistent layer (model/moe.py)."""
        for name in ("experts", "shared_experts"):
            if getattr(self, name) < 0:
                raise UserError(f"model.{name}={getattr(self, name)!r} must not be negative")
        _positive(self, "top_k", "granularity")
        if not self.experts:
            return
        if self.top_k > self.experts:
            raise UserError(f"model.top_k={self.top_k} exceeds model.experts={self.experts}; choose top_k <= experts")
        if self.w % self.granularity:
            raise UserError(
                f"model.granularity={self.granularity} does not divide model.w={self.w}; choose a divisor of w"
            )
        if self.moe_dispatch not in ("blocked", "ragged"):
            raise UserError(f"model.moe_dispatch={self.moe_dispatch!r} must be blocked or ragged")
        if self.quantised:
            raise UserError(
                "quantised or FP8 training of a mixture of experts is not built (its experts' matmuls would train "
                "unquantised): set model.experts=0, or leave model.dtype and model.bits_* at their defaults"
            )

    @property
    def routed_experts(self) -> int:
        """Experts a token is routed among: experts * granularity (0 for a dense MLP)."""
        return self.experts * self.granularity

    @property
    def active_experts(self) -> int:
        """Routed experts each token runs through: top_k * granularity."""
        return self.top_k * self.granularity

    @property
    def expert_width(self) -> int:
        """Hidden width of one expert, routed or shared: w / granularity."""
        return self.w // self.granularity

    @property
    def head_dim(self) -> int:
        return self.d // self.h


@dataclass(frozen=True)
class TrainConfig:
    """AdamW training: batch, length (steps or a token budget), schedule, evaluation, checkpoints."""

    batch_size: int = 16
    micro_batches: int = 1  # gradient accumulation: the batch runs as this many micro-batches, one after another
    steps: int | None = 300  # set exactly one of steps and tokens
    tokens: int | None = None  # token budget; steps = ceil(tokens / (batch_size * s))
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # final learning rate of cosine and wsd, as a fraction of lr
    warmup_steps: int = 30
    schedule: Schedule = "cosine"
    cooldown_fraction: float = 0.2  # wsd: fraction of steps spent decaying at the end
    decay: Decay = "linear"  # wsd: cool-down shape, linear or 1-sqrt
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # global norm; 0 disables
    seed: int = 0
    eval_every: int = 100  # 0: evaluate only at the end
    # Also evaluate at this many evenly spaced steps of the run (every total_steps // eval_points steps), whatever
    # its length: the periodic evaluation losses a curve law can be fitted to (`fit --curves --curve-loss eval`).
    eval_points: int = 0
    eval_batches: int = 8
    # Sequences per evaluation batch. The evaluation sample is `eval_batches` batches of them drawn with one fixed
    # seed (model/train.py EVAL_SEED), the same validation tokens for every run whatever its batch size and seed,
    # so runs compare on equal terms. 0: batches of the training batch size drawn with the run's seed (how runs
    # evaluated before this field; version-1 run folders keep it).
    eval_batch_size: int = 16
    checkpoint_every: int = 100  # 0: checkpoint only at the end
    log_every: int = 10  # steps between host syncs; every step's loss is logged
    # Batches built and placed on the device ahead of the steps by a background thread (model/prefetch.py); 0:
    # each batch is built when its step needs it. The batches and their order are the same either way.
    prefetch: int = 2
    noise_every: int = 0  # steps between windowed gradient noise scale estimates (needs micro_batches >= 2); 0: none
    mesh_data: int = 0  # data-parallel devices; 0: all devices not used by mesh_fsdp
    mesh_fsdp: int = 1  # devices that parameters and optimizer state are sharded over (FSDP)
    # Mixture of experts (model.experts > 0): weights of the router losses added to the differentiated loss; the
    # logged and evaluated loss stays the plain cross-entropy. Load balancing: num_experts * sum_i f_i P_i
    # (Switch Transformer, Fedus et al., 2022); z-loss: mean logsumexp(router logits)^2 (ST-MoE, Zoph et al., 2022).
    router_aux_weight: float = 0.01
    router_z_weight: float = 0.001
    # Seconds of wall-clock the whole run may take (start-up, compile, steps, evaluations, saves); 0: none. The run
    # then ends on the clock: `steps` (or `tokens`) is the plan, and while it trains the run moves the end of its
    # schedule (its horizon) to the steps the time left buys at the pace it measures, so the learning rate still
    # decays to its end at the last step (model/train.py). A resumed run finishes at the horizon it had reached.
    end_within: float = 0.0

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.tokens is None):
            raise UserError(
                f"set exactly one of train.steps and train.tokens (got steps={self.steps}, "
                f"tokens={self.tokens}); to use a token budget add --set train.steps=None"
            )
        _positive(
            self, "batch_size", "micro_batches", "steps", "tokens", "lr", "eval_batches", "log_every", "mesh_fsdp"
        )
        for name in (
            "warmup_steps",
            "eval_every",
            "eval_points",
            "checkpoint_every",
            "weight_decay",
            "grad_clip",
            "mesh_data",
            "noise_every",
            "eval_batch_size",
            "prefetch",
            "router_aux_weight",
            "router_z_weight",
            "end_within",
        ):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name}={getattr(self, name)!r} must not be negative")
        if self.batch_size % self.micro_batches:
            raise UserError(
                f"train.micro_batches={self.micro_batches} does not divide train.batch_size="
                f"{self.batch_size}; choose a divisor of the batch"
            )
        if self.noise_every and self.micro_batches < 2:
            raise UserError(
                f"train.noise_every={self.noise_every} needs micro-batch gradient norms: set "
                "train.micro_batches >= 2 (a divisor of train.batch_size), or train.noise_every=0"
            )
        if not math.isfinite(self.end_within):
            raise UserError(f"train.end_within={self.end_within!r} must be a finite number of seconds (0: none)")
        _in_unit_interval(self, "min_lr_ratio", "cooldown_fraction")
        if self.decay not in ("linear", "1-sqrt"):
            raise UserError(f"train.decay={self.decay!r} must be linear or 1-sqrt")
        _in_unit_interval(self, "beta1", "beta2", closed=False)

    def total_steps(self, seq_len: int) -> int:
        """Steps of the run: given directly, or the steps a token budget buys at this batch shape."""
        if self.steps is not None:
            return self.steps
        return math.ceil(self.tokens / (self.batch_size * seq_len))


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from: the embedded stdlib corpus, a text file or folder, or a token file."""

    corpus: str = "stdlib"  # "stdlib", or a path: .txt file, folder of text files, .npy or .bin tokens
    val_fraction: float = 0.05  # share of files (text) or of tokens (token file) held out
    # Extra validation sets, each evaluated with the training corpus's: "SPEC" or "NAME=SPEC", SPEC as for
    # `corpus`; on the command line comma-separated (--set data.eval_sets=code=corpora/code,stdlib).
    eval_sets: tuple[str, ...] = ()
    # The file extensions a corpus folder reads as text (case-insensitive); files without one, symlinks that leave
    # the folder and binary files (a NUL byte in their first 8 KiB) are never read. On the command line
    # comma-separated: --set data.extensions=.txt,.md
    extensions: tuple[str, ...] = (".txt", ".md", ".py", ".rst", ".json", ".c", ".h", ".html", ".js", ".csv", ".tex")

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 0.5:
            raise UserError(f"data.val_fraction={self.val_fraction!r} must lie in (0, 0.5)")
        object.__setattr__(self, "eval_sets", tuple(self.eval_sets))  # config.json holds a list
        object.__setattr__(self, "extensions", tuple(x.lower() for x in self.extensions))
        bad = [x for x in self.extensions if len(x) < 2 or not x.startswith(".") or "/" in x]
        if bad or not self.extensions:
            raise UserError(f"data.extensions={bad or '()'}: give extensions like .txt,.md (a dot, then a name)")
        self.named_eval_sets  # noqa: B018 - validates the names now, before anything slow

    @property
    def named_eval_sets(self) -> dict[str, str]:
        """{name: spec} of the extra validation sets. A name is given as NAME=SPEC or derived from the spec
        (its file or folder name without suffix: `corpora/code` -> `code`); names must differ."""
        named: dict[str, str] = {}
        for item in self.eval_sets:
            name, sep, spec = item.partition("=")
            if not sep or not name or "/" in name:  # no name given: the spec's file or folder name
                name, spec = PurePath(item).stem, item
            if not spec or not name:
                raise UserError(f"data.eval_sets: {item!r} names no corpus; give a path or NAME=PATH")
            if name in named:
                raise UserError(f"data.eval_sets: two sets are named {name!r}; name them apart with NAME=PATH")
            named[name] = spec
        return named


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; its JSON form in a run folder reproduces the run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    @property
    def total_steps(self) -> int:
        return self.train.total_steps(self.model.s)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Rebuild from `to_dict` output; unknown keys are errors, missing keys take defaults."""
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(raw) - set(sections)
        if unknown:
            raise UserError(f"unknown config sections {sorted(unknown)}; known: {sorted(sections)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            section_cls = f.default_factory
            values = raw.get(f.name, {})
            names = {g.name for g in dataclasses.fields(section_cls)}
            bad = set(values) - names
            if bad:
                raise UserError(f"unknown keys in config section {f.name!r}: {sorted(bad)}")
            kwargs[f.name] = section_cls(**values)
        return cls(**kwargs)
