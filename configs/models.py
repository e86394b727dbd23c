"""Named run presets: `tiny` for a CPU smoke run, and a size ladder from CPU scale to GPT-2 sizes.

Each preset is a full `RunConfig`; `--set section.field=value` changes any field of it.
"""

from __future__ import annotations

from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import ModelConfig, RunConfig, TrainConfig


def _ladder_model(d: int, n: int, h: int, s: int = 128, v: int = 256) -> ModelConfig:
    return ModelConfig(v=v, d=d, n=n, h=h, s=s)  # w = mlp_ratio * d = 4d


# (d, n, h): width grows with depth about as in GPT-2's ladder; head size 32 at CPU scale.
_LADDER = {
    "nano": (64, 2, 2),
    "micro": (96, 3, 3),
    "mini": (128, 4, 4),
    "small": (192, 6, 6),
    "base": (256, 8, 8),
    "medium": (384, 8, 6),
    "large": (512, 12, 8),
}

# GPT-2 shapes for accelerators (vocabulary padded to a multiple of 128, bf16 compute).
_GPT2 = {
    "gpt2-small": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
}


def _presets() -> dict[str, RunConfig]:
    presets = {
        # Trains on 2 CPU cores in well under 2 minutes and learns far more than byte frequencies.
        "tiny": RunConfig(
            model=ModelConfig(v=256, d=128, n=2, h=4, s=128),
            train=TrainConfig(batch_size=16, steps=300, lr=3e-3, warmup_steps=30, eval_every=100),
        ),
    }
    for name, (d, n, h) in _LADDER.items():
        presets[name] = RunConfig(model=_ladder_model(d, n, h), train=TrainConfig(batch_size=32, steps=1000))
    for name, (d, n, h) in _GPT2.items():
        model = ModelConfig(v=50304, d=d, n=n, h=h, s=1024, dtype="bfloat16")
        presets[name] = RunConfig(model=model, train=TrainConfig(batch_size=16, steps=1000, lr=6e-4))
    return presets


PRESETS: dict[str, RunConfig] = _presets()


def get_preset(name: str) -> RunConfig:
    """The preset called `name`; an unknown name is a `UserError` listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
