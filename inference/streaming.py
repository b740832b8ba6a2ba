"""An answer as it is generated: text pieces from transformers' TextIteratorStreamer, generation in a thread.

The pieces join into the answer that `generate_answers` returns for the same batch and settings (the text up
to the first eos, or `</a>` for QA and chat, decoded without special tokens; `text` tidies the whitespace as
evaluation does): generation stops at that token here, where a batch generates on and is cut afterwards, which
changes neither the tokens before it nor the draws of a sampled answer.

Streaming needs one prompt and num_beams 1 (greedy or sampling): transformers' streamers take one sequence,
and beam search cannot stream (its best sequence is known only at the end). `stop()` (Ctrl-C in the chat,
the Stop button of `serve`) ends generation at the next token; the text so far stays readable.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from epalm.common.errors import ConfigError
from epalm.inference.checkpoint_source import LoadedModel
from epalm.inference.generation import GenerationSettings, generation_lock, model_inputs, seeded
from epalm.models.language_models.tokenizer import QA_SEPARATOR
from epalm.training.evaluator import clean_prediction, deliberate_right_padding

JOIN_TIMEOUT_S = 60.0


class _StopWhen(StoppingCriteria):
    """Stops every row once `event` is set (asked from another thread)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _StopAtToken(StoppingCriteria):
    """Stops a row whose last token is one of `token_ids` (`</a>`: a QA answer ends where a new one begins)."""

    def __init__(self, token_ids: list[int], device: torch.device):
        self.token_ids = torch.tensor(token_ids, device=device)  # made once, not copied to the device per token

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.token_ids)


def check_streamable(settings: GenerationSettings, rows: int) -> None:
    if settings.num_beams != 1:
        raise ConfigError(f"streaming works with num_beams 1 only (greedy or sampling), not {settings.num_beams}: "
                          "beam search knows its best answer only at the end. Set --num_beams 1 or turn "
                          "streaming off")
    if rows != 1:
        raise ConfigError(f"streaming answers one prompt at a time, got {rows}")


class ReplyStream:
    """Iterate it for the answer's pieces (empty ones are skipped); `text` is the answer so far, tidied;
    `stopped` says whether `stop()` cut it short. Generation starts at construction."""

    def __init__(self, loaded: LoadedModel, batch: dict[str, Any], settings: GenerationSettings, layout: str,
                 kind: str):
        check_streamable(settings, batch["input_ids"].shape[0])
        tokenizer = loaded.tokenizer
        self.pieces: list[str] = []
        self.stopped = False
        self._done = False
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        criteria: list[StoppingCriteria] = [_StopWhen(self._stop)]
        if kind in ("qa", "chat"):
            criteria.append(_StopAtToken([tokenizer.convert_tokens_to_ids(QA_SEPARATOR)], loaded.device))
        bound = settings.new_token_bound(batch["input_ids"].shape[1], layout)
        kwargs = {**model_inputs(loaded, batch), **settings.generate_kwargs(bound), "streamer": self._streamer,
                  "stopping_criteria": StoppingCriteriaList(criteria)}
        right_padded = loaded.cfg.eval.padding_side == "right"
        self._thread = threading.Thread(target=self._generate, args=(loaded, kwargs, settings.seed, right_padded),
                                        daemon=True)
        self._thread.start()

    def _generate(self, loaded: LoadedModel, kwargs: dict[str, Any], seed: int | None, right_padded: bool) -> None:
        try:  # the seed is set in this thread, right before generation, as generate_answers sets it
            with torch.no_grad(), generation_lock(loaded.model), seeded(seed, loaded.device), \
                    deliberate_right_padding(right_padded):
                loaded.model.generate(**kwargs)
        except BaseException as error:  # noqa: BLE001 (re-raised in the reading thread)
            self._error = error
            self._streamer.end()  # else the reader waits for pieces forever

    def _drain(self) -> Iterator[str]:
        if self._done:  # the streamer's end was read: asking it again would wait forever
            return
        for piece in self._streamer:
            if piece:
                self.pieces.append(piece)
                yield piece
        self._done = True

    def __iter__(self) -> Iterator[str]:
        yield from self._drain()
        self._thread.join(JOIN_TIMEOUT_S)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """End generation at the next token and wait for it (the pieces already generated are kept)."""
        self.stopped = not self._done
        self._stop.set()
        for _ in self._drain():
            pass
        self._thread.join(JOIN_TIMEOUT_S)

    def read(self) -> str:
        """Every piece, then the whole answer."""
        for _ in self:
            pass
        return self.text

    @property
    def text(self) -> str:
        return clean_prediction("".join(self.pieces))
