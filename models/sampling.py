"""Sampling settings of generation (eval.* keys, the chat/predict flags, the Python API), as transformers'
GenerationConfig.

Greedy and beam search stay the default: `generation_config()` is None for them, and `EPALM.generate` then
runs exactly as it always has. Sampling draws each token from the LM's distribution reshaped by the
temperature, cut to the top-k tokens and to the smallest set whose probability reaches top-p; the repetition
penalty (CTRL's: a seen token's logit divided by it when positive, multiplied when negative) applies to
greedy, beam and sampled generation alike.
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import GenerationConfig

from epalm.common.errors import ConfigError

SAMPLING_ONLY = ("temperature", "top_p", "top_k")


@dataclass(frozen=True)
class SamplingSettings:
    """do_sample: sample instead of greedy or beam search. temperature (> 0), top_p (in (0, 1]), top_k (>= 0,
    0: no cut) apply to sampling only; repetition_penalty (> 0, 1: none) to every kind of generation."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0

    def check(self, prefix: str = "eval.") -> SamplingSettings:
        """Itself, or a ConfigError naming the key (`prefix` + name) and what it takes."""
        if not isinstance(self.do_sample, bool):
            raise ConfigError(f"{prefix}do_sample must be true or false, got {self.do_sample!r}")
        rules = {"temperature": (lambda v: v > 0, "> 0"), "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
                 "top_k": (lambda v: v >= 0 and float(v).is_integer(), "an integer >= 0"),
                 "repetition_penalty": (lambda v: v > 0, "> 0")}
        for name, (valid, wanted) in rules.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
                raise ConfigError(f"{prefix}{name} must be {wanted}, got {value!r}")
        if not self.do_sample:
            changed = [name for name in SAMPLING_ONLY if getattr(self, name) != getattr(SamplingSettings, name)]
            if changed:
                raise ConfigError(f"{', '.join(prefix + name for name in changed)} only apply to sampling: "
                                  f"set {prefix}do_sample (or drop them)")
        return self

    def generation_config(self) -> GenerationConfig | None:
        """transformers' GenerationConfig for these settings; None for plain greedy or beam search."""
        if not self.do_sample and self.repetition_penalty == 1.0:
            return None
        if not self.do_sample:
            return GenerationConfig(do_sample=False, repetition_penalty=self.repetition_penalty)
        return GenerationConfig(do_sample=True, temperature=self.temperature, top_p=self.top_p,
                                top_k=int(self.top_k), repetition_penalty=self.repetition_penalty)

    def describe(self) -> str:
        if not self.do_sample:
            return "" if self.repetition_penalty == 1.0 else f"repetition_penalty {self.repetition_penalty:g}"
        return (f"sampling: temperature {self.temperature:g}, top_p {self.top_p:g}, top_k {int(self.top_k)}, "
                f"repetition_penalty {self.repetition_penalty:g}")
