"""The Python API: a trained bridge as an object to ask questions of (docs/chat.md, "Python API").

    from epalm.inference import Bridge
    bridge = Bridge.load("outputs/demo/image_vqa/epalm", device="cpu")
    bridge.ask("what colour are the shapes?", images="scene.jpg")                  # -> "red"
    bridge.ask(["what shape?", "how many?"], images=["a.jpg", "b.jpg"], do_sample=True, seed=0)
    for piece in bridge.stream("describe it", images="scene.jpg"): print(piece, end="")

`Bridge.load` takes what `--checkpoint` takes (a run folder, a checkpoint folder, an exported folder, or a
reference `.pth` with `config=[...]`), a device and the precision of the frozen weights. Prompts are read as
`main.py predict` reads them (inference/requests.py) and answered as evaluation answers (inference/generation.py):
the same inputs and settings give `predict`'s answer. A list of prompts is answered in batches of
`eval.batch_size` (left padding by default: each answer is the one it gets alone; seeded sampling answers one
prompt at a time, so that a sampled answer depends only on its prompt and seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from epalm.inference.chat_inputs import MediaReader, MediaRef, chat_batch, chat_collator, instance_batch, media_ref
from epalm.inference.checkpoint_source import LoadedModel, describe, load_model
from epalm.inference.conversation import NO_LIMIT, choose_layout
from epalm.inference.generation import CHAT, ONE_INSTANCE, GenerationSettings, check_fits, generate_answers
from epalm.inference.nearest_tokens import NearestTokens, nearest_tokens, visual_tokens
from epalm.inference.requests import Request, build_requests
from epalm.inference.streaming import ReplyStream, check_streamable


@dataclass
class Answer:
    """One answer with what produced it (`details=True`): the layout, the media read, and per medium its visual
    tokens (the connector's outputs, `(tokens, width)`) and their nearest vocabulary tokens."""

    text: str
    prompt: str
    layout: str
    media: list[dict[str, str]]
    visual_tokens: list[torch.Tensor]
    nearest: list[NearestTokens]

    def __str__(self) -> str:
        return self.text


@dataclass
class Prepared:
    """A request with its media read: the layout it is read in, and (one-instance layout) its modality."""

    request: Request
    tensors: list[torch.Tensor]
    layout: str
    modality: str | None


class Bridge:
    """A loaded model and its generation settings (the run's eval section unless changed)."""

    def __init__(self, loaded: LoadedModel, settings: GenerationSettings | None = None):
        self.loaded = loaded
        self.settings = settings or GenerationSettings.from_run(loaded.cfg)
        self.reader = MediaReader(loaded)
        self._collator = chat_collator(loaded, NO_LIMIT)

    @classmethod
    def load(cls, path: str | Path, config: Sequence[str] | None = None, device: str = "auto", dtype: str = "auto",
             reference_inputs: bool = True, **generation: Any) -> Bridge:
        """path: a run, checkpoint or exported folder, or a reference `.pth` (with `config`, its YAML files,
        read with the reference's inputs unless `reference_inputs=False`). device: auto, cpu, cuda, cuda:1 ...
        dtype: the frozen weights' precision (auto: as trained; float32, bfloat16, float16). generation:
        settings that replace the run's eval section (num_beams, max_new_tokens, do_sample, temperature, top_p,
        top_k, repetition_penalty, seed)."""
        loaded = load_model(str(path), list(config or []), device, dtype, reference_inputs)
        return cls(loaded, GenerationSettings.from_run(loaded.cfg, **generation))

    # --- what the model is ------------------------------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        return list(self.loaded.model.modalities)

    def describe(self) -> str:
        return describe(self.loaded)

    # --- asking -----------------------------------------------------------------------------------------
    def ask(self, prompt: str | Sequence[str] | None = None, *, messages: Sequence | None = None,
            images: Any = None, videos: Any = None, audios: Any = None, media: dict[str, Any] | None = None,
            media_root: str | Path = ".", details: bool = False, topk: int = 5, batch_size: int | None = None,
            **generation: Any) -> str | Answer | list[str] | list[Answer]:
        """The answer to a prompt (a string), or to each of a list of prompts (a list of strings). `messages`
        instead of a prompt: a conversation, or a list of them. Media beside the prompt: `images`, `videos`,
        `audios`, `media={modality: ...}` (inference/requests.py). details: `Answer`s instead of strings, with
        the visual tokens and their `topk` nearest vocabulary tokens. generation: this call's settings."""
        requests, batched = build_requests(prompt, messages, self._media(images, videos, audios, media),
                                           Path(media_root))
        settings = self.settings.with_overrides(**generation)
        answers = self.answer(requests, settings, batch_size, details, topk)
        return answers if batched else answers[0]

    def stream(self, prompt: str | None = None, *, messages: Sequence | None = None, images: Any = None,
               videos: Any = None, audios: Any = None, media: dict[str, Any] | None = None,
               media_root: str | Path = ".", **generation: Any) -> ReplyStream:
        """The answer to one prompt as it is generated: iterate it for text pieces; `.text` is the answer,
        the same as `ask` gives; `.stop()` ends it early. Greedy or sampling only (num_beams 1)."""
        requests, batched = build_requests(prompt, messages, self._media(images, videos, audios, media),
                                           Path(media_root))
        settings = self.settings.with_overrides(**generation)
        check_streamable(settings, len(requests) if batched else 1)
        return self.stream_prepared(self.prepare(requests[0]), settings)

    def stream_prepared(self, prepared: Prepared, settings: GenerationSettings | None = None) -> ReplyStream:
        """`stream` for a request whose media are read (`prepare`)."""
        settings = settings or self.settings
        batch, kind = self._batch([prepared])
        check_fits(self.loaded, batch, settings, prepared.layout)
        return ReplyStream(self.loaded, batch, settings, prepared.layout, kind)

    def answer(self, requests: list[Request], settings: GenerationSettings | None = None,
               batch_size: int | None = None, details: bool = False, topk: int = 5) -> list[Any]:
        """Answers (strings, or `Answer`s) to requests, in order: batched by layout (and modality)."""
        return self.answer_prepared([self.prepare(request) for request in requests], settings, batch_size,
                                    details, topk)

    def prepare(self, request: Request) -> Prepared:
        """The request's media read (a broken file is a user error naming it) and its layout chosen."""
        tensors = [self.reader.read(ref) for ref in request.media]
        if request.messages is None and choose_layout(self.loaded.chat_trained, len(tensors)) == ONE_INSTANCE:
            return Prepared(request, tensors, ONE_INSTANCE, request.media[0].modality)
        return Prepared(request, tensors, CHAT, None)

    def answer_prepared(self, prepared: list[Prepared], settings: GenerationSettings | None = None,
                        batch_size: int | None = None, details: bool = False, topk: int = 5) -> list[Any]:
        settings = settings or self.settings
        size = batch_size or self.loaded.cfg.eval.batch_size
        if settings.sampling.do_sample and settings.seed is not None:
            size = 1  # each seeded draw from its own prompt alone: the answer does not depend on its batch
        texts: list[str] = [""] * len(prepared)
        groups: dict[tuple[str, str | None], list[int]] = {}
        for index, item in enumerate(prepared):
            groups.setdefault((item.layout, item.modality), []).append(index)
        for (layout, _), indices in groups.items():
            for start in range(0, len(indices), size):
                chunk = indices[start:start + size]
                batch, kind = self._batch([prepared[i] for i in chunk])
                check_fits(self.loaded, batch, settings, layout)
                for index, text in zip(chunk, generate_answers(self.loaded, batch, settings, layout, kind)):
                    texts[index] = text
        if not details:
            return texts
        return [self._details(item, text, topk) for item, text in zip(prepared, texts)]

    # --- visual tokens ----------------------------------------------------------------------------------
    def visual_tokens(self, path: str | Path, modality: str | None = None) -> torch.Tensor:
        """The connector's outputs for one file `(tokens, width)`: what the LM receives for it."""
        ref = self._ref(path, modality)
        return visual_tokens(self.loaded.model, self.reader.read(ref), ref.modality).cpu()

    def nearest_tokens(self, path: str | Path, modality: str | None = None, k: int = 5) -> NearestTokens:
        """The `k` vocabulary tokens nearest to each visual token of one file (chat's /tokens)."""
        ref = self._ref(path, modality)
        return self.nearest_of(self.reader.read(ref), ref.modality, k)

    def nearest_of(self, tensor: torch.Tensor, modality: str, k: int = 5) -> NearestTokens:
        """`nearest_tokens` of a medium already read (a `Prepared`'s tensor)."""
        tokens = visual_tokens(self.loaded.model, tensor, modality)
        return nearest_tokens(self.loaded.model, self.loaded.tokenizer, tokens, k)

    def _ref(self, path: str | Path, modality: str | None) -> MediaRef:
        return media_ref(modality or self.loaded.model.modality, str(path), Path("."))

    # --- helpers ----------------------------------------------------------------------------------------
    @staticmethod
    def _media(images: Any, videos: Any, audios: Any, media: dict[str, Any] | None) -> dict[str, Any]:
        return {"images": images, "videos": videos, "audios": audios, **(media or {})}

    def _batch(self, items: list[Prepared]) -> tuple[dict[str, Any], str]:
        """One batch of requests of one layout (and modality); the kind their answers end as."""
        first = items[0]
        if first.layout == ONE_INSTANCE:
            rows = [(item.request.message.plain_text, item.tensors[0]) for item in items]
            return instance_batch(self.loaded, first.modality, rows, NO_LIMIT), self.loaded.kind(first.modality)
        rows = []
        for item in items:
            messages = list(item.request.messages or [{"role": "user", "content": item.request.message.chat_text}])
            rows.append((messages, [(ref.modality, t) for ref, t in zip(item.request.media, item.tensors)]))
        return chat_batch(self._collator, rows), "chat"

    def _details(self, item: Prepared, text: str, topk: int) -> Answer:
        tokens, nearest = [], []
        for ref, tensor in zip(item.request.media, item.tensors):
            visual = visual_tokens(self.loaded.model, tensor, ref.modality)
            tokens.append(visual.cpu())
            nearest.append(nearest_tokens(self.loaded.model, self.loaded.tokenizer, visual, topk))
        media = [{"modality": ref.modality, "path": str(ref.path)} for ref in item.request.media]
        return Answer(text, item.request.typed, item.layout, media, tokens, nearest)
