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

from epalm.dataset.tasks.chat_messages import placeholder_pattern
from epalm.inference.chat_inputs import Message, chat_batch, chat_collator, instance_batch
from epalm.inference.checkpoint_source import LoadedModel
from epalm.inference.generation import (CHAT, ONE_INSTANCE, GenerationSettings, check_fits, fits,
                                        generate_answers, lm_positions)
from epalm.inference.streaming import ReplyStream

__all__ = ["CHAT", "ONE_INSTANCE", "Conversation", "GenerationSettings", "Reply", "Prepared", "choose_layout"]
NO_LIMIT = 1 << 30  # the collators' max_len: positions are checked here (whole turns dropped), not cut


@dataclass
class Turn:
    user: str  # the message as the chat layout reads it (placeholders where the tags stood)
    instances: list[tuple[str, torch.Tensor]]  # (modality, preprocessed medium), placeholder order
    answer: str


@dataclass
class Prepared:
    """A message ready to answer: the layout and batch it is read in, how its answer ends (kind: qa, caption,
    chat), the earlier turns left out to read it, and the note saying so."""

    message: Message
    instances: list[tuple[str, torch.Tensor]]
    layout: str
    batch: dict[str, Any]
    kind: str
    dropped: int
    note: str | None


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


@dataclass
class Conversation:
    loaded: LoadedModel
    settings: GenerationSettings
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.collator = chat_collator(self.loaded, NO_LIMIT)
        self.max_positions = lm_positions(self.loaded)

    def reset(self) -> None:
        self.turns = []

    def prepare(self, message: Message, media: list[torch.Tensor]) -> Prepared:
        """The batch `message` (its media preprocessed, in tag order) is read in, after the turns that fit."""
        instances = [(ref.modality, tensor) for ref, tensor in zip(message.media, media)]
        note = None
        if choose_layout(self.loaded.chat_trained, len(instances)) == ONE_INSTANCE:
            modality, tensor = instances[0]
            batch = instance_batch(self.loaded, modality, [(message.plain_text, tensor)], NO_LIMIT)
            check_fits(self.loaded, batch, self.settings, ONE_INSTANCE, "the message")
            dropped = len(self.turns)
            if dropped:
                note = (f"new conversation: a model trained on the reference formats reads one medium per prompt; "
                        f"{dropped} earlier turn(s) left out")
            return Prepared(message, instances, ONE_INSTANCE, batch, self.loaded.kind(modality), dropped, note)
        batch, dropped = self._chat_batch(message, instances)
        if dropped:
            note = f"{dropped} earliest turn(s) left out to fit the LM's {self.max_positions} positions"
        return Prepared(message, instances, CHAT, batch, "chat", dropped, note)

    def ask(self, message: Message, media: list[torch.Tensor]) -> Reply:
        """Answer `message` and keep the turn."""
        prepared = self.prepare(message, media)
        # The turns change only once it has answered (Ctrl-C may stop it).
        answer = generate_answers(self.loaded, prepared.batch, self.settings, prepared.layout, prepared.kind)[0]
        self.keep(prepared, answer)
        return Reply(answer, prepared.layout, prepared.batch, prepared.note)

    def stream(self, prepared: Prepared) -> ReplyStream:
        """The answer to a prepared message as it is generated; `keep` it once read (num_beams 1 only)."""
        return ReplyStream(self.loaded, prepared.batch, self.settings, prepared.layout, prepared.kind)

    def keep(self, prepared: Prepared, answer: str) -> None:
        kept = self.turns[prepared.dropped:]
        self.turns = [*kept, Turn(prepared.message.chat_text, prepared.instances,
                                  placeholder_pattern().sub("", answer))]

    def _chat_batch(self, message: Message, instances: list[tuple[str, torch.Tensor]]) -> tuple[dict, int]:
        """The conversation's batch without its earliest turns as long as it does not fit; turns dropped."""
        for dropped in range(len(self.turns) + 1):
            kept = self.turns[dropped:]
            messages = [m for t in kept for m in ({"role": "user", "content": t.user},
                                                  {"role": "assistant", "content": t.answer})]
            batch = chat_batch(self.collator, [([*messages, {"role": "user", "content": message.chat_text}],
                                                [i for t in kept for i in t.instances] + instances)])
            if fits(self.loaded, batch, self.settings, CHAT):
                return batch, dropped
        check_fits(self.loaded, batch, self.settings, CHAT, "the message")
        raise AssertionError("unreachable: check_fits raises when the batch does not fit")
