"""How an answer is generated and read back, the same for `chat`, `predict`, `serve` and the Python API.

Settings: the run's `eval.*` section (beam width, `max_length`, `beam_score_length`, the sampling keys of
models/sampling.py), each overridable by a flag or an API argument. An answer is decoded as evaluation
decodes its predictions (training/evaluator.py `decode_continuations`: up to the first eos, for QA and chat
also up to a second `</a>`, special tokens dropped, whitespace tidied), so a prompt that evaluation also
asked gets evaluation's answer, token for token.

The answer's length bound, unless given (`max_new_tokens`): in the one-instance layout, evaluation's
(`eval.max_length` minus the padded prompt's width); in the chat layout `eval.max_length` tokens, since a
conversation's prompt grows with every turn.
"""
from __future__ import annotations

import argparse
import contextlib
import threading
import weakref
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from epalm.common.errors import ConfigError, DataFormatError
from epalm.inference.checkpoint_source import LoadedModel
from epalm.models.sampling import SAMPLING_ONLY, SamplingSettings
from epalm.training.evaluator import clean_prediction, decode_continuations, deliberate_right_padding
from epalm.training.run_config import BEAM_SCORE_LENGTHS, RunConfig

ONE_INSTANCE, CHAT = "one-instance", "chat"
SAMPLING_KEYS = tuple(f.name for f in fields(SamplingSettings))
OVERRIDES = ("num_beams", "max_new_tokens", "seed", *SAMPLING_KEYS)


@dataclass
class GenerationSettings:
    """num_beams: beam width (1: greedy, or sampling). max_new_tokens: the answer's length bound (None: see the
    module's docstring). sampling: models/sampling.py. seed: seeds the draws of one answer (None: unseeded).
    beam_score_length, max_length: the run's eval keys."""

    num_beams: int = 1
    max_new_tokens: int | None = None
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    seed: int | None = None
    beam_score_length: str = "generated"
    max_length: int = 30

    def __post_init__(self) -> None:
        for name in ("num_beams", "max_new_tokens", "max_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{name} must be an integer >= 1, got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ConfigError(f"--seed must be an integer, got {self.seed!r}")
        if self.beam_score_length not in BEAM_SCORE_LENGTHS:
            raise ConfigError(f"beam_score_length {self.beam_score_length!r} is not one of {BEAM_SCORE_LENGTHS}")
        self.sampling.check("--")
        if self.num_beams > 1 and self.beam_score_length == "sequence" and self.sampling.generation_config():
            raise ConfigError("transformers 4.20's beam scores (eval.beam_score_length: sequence, a reference "
                              "checkpoint's) neither sample nor penalise repetition: use --num_beams 1, or "
                              "--set eval.beam_score_length=generated")

    @classmethod
    def from_run(cls, cfg: RunConfig, num_beams: int | None = None, max_new_tokens: int | None = None,
                 **overrides: Any) -> GenerationSettings:
        """The run's eval section, then every override that is not None (OVERRIDES names them)."""
        ev = cfg.eval
        base = cls(ev.num_beams, None, ev.sampling, None, ev.beam_score_length, ev.max_length)
        return base.with_overrides(num_beams=num_beams, max_new_tokens=max_new_tokens, **overrides)

    def with_overrides(self, **overrides: Any) -> GenerationSettings:
        unknown = sorted(set(overrides) - set(OVERRIDES))
        if unknown:
            raise ConfigError(f"unknown generation setting(s) {unknown}; known: {', '.join(OVERRIDES)}")
        given = {name: value for name, value in overrides.items() if value is not None}
        sampling = {name: given.pop(name) for name in SAMPLING_KEYS if name in given}
        if sampling.get("do_sample") is False:  # greedy asked of a sampling run: its temperature ... go too
            sampling = {**{name: getattr(SamplingSettings, name) for name in SAMPLING_ONLY}, **sampling}
        return replace(self, sampling=replace(self.sampling, **sampling), **given)

    def new_token_bound(self, prompt_width: int, layout: str) -> int:
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return max(1, self.max_length - prompt_width) if layout == ONE_INSTANCE else self.max_length

    def generate_kwargs(self, bound: int) -> dict[str, Any]:
        """EPALM.generate's arguments for an answer of at most `bound` tokens."""
        kwargs: dict[str, Any] = {"max_new_tokens": bound, "num_beams": self.num_beams,
                                  "beam_score_length": self.beam_score_length}
        config = self.sampling.generation_config()
        if config is not None:
            kwargs["generation_config"] = config
        return kwargs

    def as_dict(self) -> dict[str, Any]:
        """What --json and the exported card report."""
        values: dict[str, Any] = {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens}
        if self.beam_score_length != "generated":
            values["beam_score_length"] = self.beam_score_length
        if self.sampling.generation_config() is not None:
            values.update({name: getattr(self.sampling, name) for name in SAMPLING_KEYS}, seed=self.seed)
        return values

    def describe(self) -> str:
        bound = self.max_new_tokens or f"as evaluation's (eval.max_length {self.max_length})"
        text = f"num_beams {self.num_beams}, max_new_tokens {bound}"
        extra = self.sampling.describe()
        return f"{text}, {extra}" + (f", seed {self.seed}" if self.seed is not None else "") if extra else text


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def generation_lock(model) -> threading.Lock:
    """One generation at a time per model: the injection hooks hold the conditioning of the generation in
    progress, so two at once (a stream still running, another thread) would read each other's media."""
    return _LOCKS.setdefault(model, threading.Lock())


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device):
    """Draws of one answer from `seed`, without changing the caller's random state (None: no seeding)."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, dict):
        return {key: tensor.to(device) for key, tensor in value.items()}
    return value.to(device) if value is not None else None


def model_inputs(loaded: LoadedModel, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch's tensors on the model's device, as EPALM.generate takes them."""
    device = loaded.device
    return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
            "media": to_device(batch.get("media"), device), "media_index": to_device(batch.get("media_index"), device)}


def lm_positions(loaded: LoadedModel) -> int | None:
    """The LM's position limit (None: it has none)."""
    return getattr(loaded.model.lm.model.config, "max_position_embeddings", None)


def positions_needed(loaded: LoadedModel, batch: dict[str, Any], settings: GenerationSettings, layout: str) -> int:
    """The LM positions a batch takes with its answer: the prompt tokens in front of it, its width, the bound."""
    model = loaded.model
    width = batch["input_ids"].shape[1]
    return ((model.prefix_len if layout == ONE_INSTANCE else model.prompt_len) + width
            + settings.new_token_bound(width, layout))


def fits(loaded: LoadedModel, batch: dict[str, Any], settings: GenerationSettings, layout: str) -> bool:
    limit = lm_positions(loaded)
    return limit is None or positions_needed(loaded, batch, settings, layout) <= limit


def check_fits(loaded: LoadedModel, batch: dict[str, Any], settings: GenerationSettings, layout: str,
               what: str = "a prompt") -> None:
    """DataFormatError when the batch and its answer do not fit the LM's positions (chat, predict, the API)."""
    if not fits(loaded, batch, settings, layout):
        bound = settings.new_token_bound(batch["input_ids"].shape[1], layout)
        raise DataFormatError(f"{what} takes {positions_needed(loaded, batch, settings, layout)} positions with "
                              f"the answer's {bound} tokens (max_new_tokens), more than the LM's "
                              f"{lm_positions(loaded)}: shorten it or lower max_new_tokens")


@torch.no_grad()
def generate_answers(loaded: LoadedModel, batch: dict[str, Any], settings: GenerationSettings, layout: str,
                     kind: str) -> list[str]:
    """One answer per row of `batch` (kind: qa, caption or chat, how the answer ends)."""
    bound = settings.new_token_bound(batch["input_ids"].shape[1], layout)
    with generation_lock(loaded.model), seeded(settings.seed, loaded.device), \
            deliberate_right_padding(loaded.cfg.eval.padding_side == "right"):
        new_tokens = loaded.model.generate(**model_inputs(loaded, batch), **settings.generate_kwargs(bound))
    return [clean_prediction(text) for text in decode_continuations(loaded.tokenizer, new_tokens, kind)]


def add_generation_arguments(parser) -> None:
    """The generation flags of chat, predict and serve; every default is the run's eval section."""
    group = parser.add_argument_group("generation (defaults: the run's eval.* keys)")
    group.add_argument("--num_beams", type=int, default=None, metavar="N",
                       help="beam width, 1 for greedy or sampling (default: the run's eval.num_beams)")
    group.add_argument("--max_new_tokens", type=int, default=None, metavar="N",
                       help="the answer's length bound in tokens (default: from eval.max_length)")
    group.add_argument("--do_sample", action=argparse.BooleanOptionalAction, default=None,
                       help="sample instead of greedy or beam search (default: the run's eval.do_sample)")
    group.add_argument("--temperature", type=float, default=None, metavar="T",
                       help="sampling temperature > 0 (needs --do_sample; default: eval.temperature, 1.0)")
    group.add_argument("--top_p", type=float, default=None, metavar="P",
                       help="nucleus sampling: keep the tokens within probability P (needs --do_sample)")
    group.add_argument("--top_k", type=int, default=None, metavar="K",
                       help="sample among the K likeliest tokens, 0 for all (needs --do_sample; default 50)")
    group.add_argument("--repetition_penalty", type=float, default=None, metavar="R",
                       help="divide the logits of tokens already present by R > 1 (default: 1.0, none)")
    group.add_argument("--seed", type=int, default=None, metavar="N",
                       help="seed of the sampled answers (each answer drawn from it; default: unseeded)")


def settings_from_args(cfg: RunConfig, args) -> GenerationSettings:
    return GenerationSettings.from_run(cfg, **{name: getattr(args, name) for name in OVERRIDES})
