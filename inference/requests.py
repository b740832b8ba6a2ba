"""What the Python API is asked, checked and put in the two layouts' terms: one `Request` per prompt.

A prompt is a string (with `<image:path>` tags where media stand, as in the chat) and the media given beside
it go in front of it, in the order images, videos, audios, then `media={modality: ...}`: exactly what
`main.py predict --media X --prompt "..."` builds, so both read the same text. A conversation is a list of
`{"role", "content"}` messages whose contents hold tags or bare placeholders (`<image>`), each placeholder
taking the next file of its modality from the media given, as the rows of a chat data set do.

Media arguments: for one prompt, a path or a list of paths (several media in that prompt); for a list of
prompts (a batch), a list with one entry per prompt, each a path, a list of paths or None.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

from epalm.common.errors import ConfigError, DataFormatError
from epalm.dataset.tasks.chat_messages import placeholder_pattern
from epalm.inference.chat_inputs import TAG, MediaRef, Message, media_ref, parse_message
from epalm.models.modalities import get_modality, modality_names, placeholders

MEDIA_ARGUMENTS = {"images": "image", "videos": "video", "audios": "audio"}
ROLES = ("system", "user", "assistant")
PathArg = str | PathLike


@dataclass(frozen=True)
class Request:
    """One prompt: `message` (a prompt, read in either layout) or `messages` (a conversation, read in the chat
    layout: contents with placeholders), and its media in placeholder order."""

    typed: str
    media: tuple[MediaRef, ...]
    message: Message | None = None
    messages: tuple[dict[str, str], ...] | None = None


def _paths(value: Any, where: str) -> list[PathArg]:
    if value is None:
        return []
    if isinstance(value, (str, PathLike)):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(item, (str, PathLike)) for item in value):
        return list(value)
    raise ConfigError(f"{where}: expected a file path or a list of paths, got {type(value).__name__}")


def media_by_request(count: int, batched: bool, media: dict[str, Any]) -> list[list[tuple[str, PathArg]]]:
    """Per request, its (modality, path) pairs in argument order. `media`: argument name -> value, names being
    images / videos / audios or a modality's name (or data key)."""
    names = {name: name for name in modality_names()}
    names.update({get_modality(name).data_key: name for name in modality_names()}, **MEDIA_ARGUMENTS)
    per_request: list[list[tuple[str, PathArg]]] = [[] for _ in range(count)]
    for argument, value in media.items():
        if value is None:
            continue
        if argument not in names:
            raise ConfigError(f"media argument {argument!r}: not a modality; known: {', '.join(sorted(names))}")
        modality = names[argument]
        if not batched:
            per_request[0] += [(modality, path) for path in _paths(value, argument)]
            continue
        if isinstance(value, (str, PathLike)) or not isinstance(value, Sequence) or len(value) != count:
            raise ConfigError(f"{argument}: with a list of {count} prompts, give a list of {count} entries "
                              f"(a path, a list of paths or None for each prompt)")
        for index, entry in enumerate(value):
            per_request[index] += [(modality, path) for path in _paths(entry, f"{argument}[{index}]")]
    return per_request


def prompt_request(prompt: str, media: list[tuple[str, PathArg]], media_root: Path) -> Request:
    """The media in front of the prompt as tags (absolute paths), then the prompt: predict's message."""
    if not isinstance(prompt, str):
        raise ConfigError(f"a prompt is a string, got {type(prompt).__name__}")
    refs = [media_ref(modality, str(path), media_root) for modality, path in media]
    tags = [f"<{ref.modality}:{ref.path.resolve()}>" for ref in refs]
    message = parse_message(" ".join([*tags, prompt]), media_root)
    return Request(prompt, message.media, message=message)


def conversation_request(messages: Sequence[dict[str, str]], media: list[tuple[str, PathArg]],
                         media_root: Path) -> Request:
    """Messages with tags or bare placeholders; a placeholder takes the next given file of its modality."""
    if not messages or not all(isinstance(m, dict) for m in messages):
        raise ConfigError("messages: a non-empty list of {'role': ..., 'content': ...} dicts")
    queues: dict[str, list[PathArg]] = {}
    for modality, path in media:
        queues.setdefault(modality, []).append(path)
    owners = placeholders()
    refs: list[MediaRef] = []
    rendered = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise DataFormatError(f"messages[{index}]: expected a role in {ROLES} and a string content, "
                                  f"got {message!r}")

        def place(match) -> str:
            if match.group(0) in owners:  # a bare placeholder: the next file of its modality
                modality = owners[match.group(0)]
                if not queues.get(modality):
                    raise DataFormatError(f"messages[{index}]: {match.group(0)} has no file left: give one more "
                                          f"{modality} (or write <{modality}:path>)")
                refs.append(media_ref(modality, str(queues[modality].pop(0)), media_root))
                return match.group(0)
            refs.append(media_ref(match.group(1), match.group(2), media_root))
            return get_modality(match.group(1)).placeholder

        # One pattern for tags and bare placeholders: media are numbered in the order they stand.
        pattern = f"{TAG.pattern}|{placeholder_pattern().pattern}"
        rendered.append({"role": role, "content": re.sub(pattern, place, content)})
    if rendered[-1]["role"] != "user":
        raise DataFormatError("messages: the last message must be the user's (the model answers it)")
    left = {modality: len(paths) for modality, paths in queues.items() if paths}
    if left:
        raise DataFormatError(f"messages: more media than placeholders ({left} left over): put a placeholder "
                              f"such as <image> where each goes")
    return Request(rendered[-1]["content"], tuple(refs), messages=tuple(rendered))


def build_requests(prompt: str | Sequence[str] | None, messages: Sequence | None, media: dict[str, Any],
                   media_root: Path) -> tuple[list[Request], bool]:
    """The requests and whether they were asked as a batch (a list of prompts or of conversations)."""
    if (prompt is None) == (messages is None):
        raise ConfigError("give either a prompt (or a list of prompts) or messages (a conversation, or a list "
                          "of conversations)")
    if prompt is not None:
        batched = not isinstance(prompt, str)
        prompts = list(prompt) if batched else [prompt]
        if not prompts:
            raise ConfigError("an empty list of prompts")
        media_lists = media_by_request(len(prompts), batched, media)
        return [prompt_request(text, items, media_root) for text, items in zip(prompts, media_lists)], batched
    batched = bool(messages) and all(isinstance(item, (list, tuple)) for item in messages)
    conversations = list(messages) if batched else [messages]
    media_lists = media_by_request(len(conversations), batched, media)
    return [conversation_request(conv, items, media_root) for conv, items in zip(conversations, media_lists)], \
        batched
