"""A conversation with a loaded model: which layout each message is read in, the turns kept, generation.

Layouts (inference/chat_inputs.py): a model trained on the reference formats (task.reader other than "chat")
reads a message with exactly one medium in the one-instance layout it was trained on; such a message is
answered alone (the reference formats have no conversation) and the conversation restarts from it. Any other
message (no medium, several media), and every message to a chat-trained model, is read in the chat layout
after the earlier turns, which are kept (with their media) until `reset()`; when the whole conversation no
longer fits the LM's positions, its earliest turns are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from epalm.common.errors import ConfigError, DataFormatError
from epalm.dataset.tasks.chat_messages import placeholder_pattern
from epalm.inference.chat_inputs import Message, chat_batch, chat_collator, instance_batch
from epalm.inference.checkpoint_source import LoadedModel
from epalm.training.evaluator import clean_prediction
from epalm.training.run_config import RunConfig

ONE_INSTANCE, CHAT = "one-instance", "chat"
NO_LIMIT = 1 << 30  # the collators' max_len: positions are checked here (whole turns dropped), not cut


@dataclass
class GenerationSettings:
    """num_beams: beam width (1: greedy). max_new_tokens: the answer's length bound."""

    num_beams: int
    max_new_tokens: int

    def __post_init__(self) -> None:
        for name in ("num_beams", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_run(cls, cfg: RunConfig, num_beams: int | None = None,
                 max_new_tokens: int | None = None) -> GenerationSettings:
        """The run's eval section, unless overridden. eval.max_length bounds prompt + answer in evaluation;
        here it bounds the answer alone (a conversation's prompt grows with every turn)."""
        return cls(num_beams if num_beams is not None else cfg.eval.num_beams,
                   max_new_tokens if max_new_tokens is not None else cfg.eval.max_length)


@dataclass
class Turn:
    user: str  # the message as the chat layout reads it (placeholders where the tags stood)
    instances: list[tuple[str, torch.Tensor]]  # (modality, preprocessed medium), placeholder order
    answer: str


@dataclass
class Reply:
    """answer: the generated text; layout: ONE_INSTANCE or CHAT; batch: what the model read; note: what was
    left out of the conversation to read this message, if anything."""

    answer: str
    layout: str
    batch: dict[str, Any]
    note: str | None = None


def choose_layout(chat_trained: bool, media_count: int) -> str:
    return ONE_INSTANCE if not chat_trained and media_count == 1 else CHAT


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, dict):
        return {key: tensor.to(device) for key, tensor in value.items()}
    return value.to(device) if value is not None else None


@dataclass
class Conversation:
    loaded: LoadedModel
    settings: GenerationSettings
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.collator = chat_collator(self.loaded, NO_LIMIT)
        config = self.loaded.model.lm.model.config
        self.max_positions: int | None = getattr(config, "max_position_embeddings", None)

    def reset(self) -> None:
        self.turns = []

    def ask(self, message: Message, media: list[torch.Tensor]) -> Reply:
        """Answer `message` (its media preprocessed, in tag order) and keep the turn."""
        instances = [(ref.modality, tensor) for ref, tensor in zip(message.media, media)]
        note = None
        if choose_layout(self.loaded.chat_trained, len(instances)) == ONE_INSTANCE:
            layout, batch = ONE_INSTANCE, instance_batch(self.loaded, message.plain_text, *instances[0], NO_LIMIT)
            self._check_fits(batch, self.loaded.model.prefix_len, "the message")
            dropped = len(self.turns)
            if dropped:
                note = (f"new conversation: a model trained on the reference formats reads one medium per prompt; "
                        f"{dropped} earlier turn(s) left out")
        else:
            layout, (batch, dropped) = CHAT, self._chat_batch(message, instances)
            if dropped:
                note = f"{dropped} earliest turn(s) left out to fit the LM's {self.max_positions} positions"
        answer = self.generate(batch)  # the turns change only once it has answered (Ctrl-C may stop it)
        kept = self.turns[dropped:]
        self.turns = [*kept, Turn(message.chat_text, instances, placeholder_pattern().sub("", answer))]
        return Reply(answer, layout, batch, note)

    def _chat_batch(self, message: Message, instances: list[tuple[str, torch.Tensor]]) -> tuple[dict, int]:
        """The conversation's batch without its earliest turns as long as it does not fit; turns dropped."""
        prompt_len = self.loaded.model.prompt_len
        for dropped in range(len(self.turns) + 1):
            kept = self.turns[dropped:]
            messages = [m for t in kept for m in ({"role": "user", "content": t.user},
                                                  {"role": "assistant", "content": t.answer})]
            batch = chat_batch(self.collator, [*messages, {"role": "user", "content": message.chat_text}],
                               [i for t in kept for i in t.instances] + instances)
            if self._fits(batch, prompt_len):
                return batch, dropped
        self._check_fits(batch, prompt_len, "the message")
        raise AssertionError("unreachable: _check_fits raises when the batch does not fit")

    def _needed(self, batch: dict, prefix_len: int) -> int:
        return prefix_len + batch["input_ids"].shape[1] + self.settings.max_new_tokens

    def _fits(self, batch: dict, prefix_len: int) -> bool:
        return self.max_positions is None or self._needed(batch, prefix_len) <= self.max_positions

    def _check_fits(self, batch: dict, prefix_len: int, what: str) -> None:
        if not self._fits(batch, prefix_len):
            raise DataFormatError(f"{what} takes {self._needed(batch, prefix_len)} positions with the answer's "
                                  f"{self.settings.max_new_tokens} (--max_new_tokens), more than the LM's "
                                  f"{self.max_positions}: shorten it or lower --max_new_tokens")

    @torch.no_grad()
    def generate(self, batch: dict[str, Any]) -> str:
        device = self.loaded.device
        new_tokens = self.loaded.model.generate(
            batch["input_ids"].to(device), batch["attention_mask"].to(device),
            media=_to_device(batch.get("media"), device), media_index=_to_device(batch.get("media_index"), device),
            max_new_tokens=self.settings.max_new_tokens, num_beams=self.settings.num_beams)
        return clean_prediction(self.loaded.tokenizer.decode(new_tokens[0], skip_special_tokens=True))


def add_generation_arguments(parser) -> None:
    parser.add_argument("--num_beams", type=int, default=None, metavar="N",
                        help="beam width, 1 for greedy (default: the run's eval.num_beams)")
    parser.add_argument("--max_new_tokens", type=int, default=None, metavar="N",
                        help="the answer's length bound in tokens (default: the run's eval.max_length)")
