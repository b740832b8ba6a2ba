"""Chat-message rows, several media instances per prompt: `<data_dir>/<split>.jsonl`, one JSON row a line.

    {"id": "q1", "images": ["a.png", "b.png"], "audios": ["c.wav"],
     "messages": [{"role": "user", "content": "Given <image> and <image>, answer the question in <audio>"},
                  {"role": "assistant", "content": "yes"}]}

Keys: `id` (string or integer), `messages` (user / assistant / system turns; the last one is the
assistant's, the target of evaluation), one list of files per modality under the plugin's data key
(`images`, `videos`, `audios`, and those of other modality plugins), optional `meta` (an object kept
for evaluation, e.g. `question_type`). The k-th placeholder of a modality (`<image>` ...) in the
user/system messages stands for the k-th file of its list. Any other key, a placeholder without a file,
a file without a placeholder, or a placeholder in an assistant turn is an error naming the file, the
line and what was expected. Missing or broken media are reported and skipped when read, as elsewhere.
Paths are relative to `media_root` (default: the data folder).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from epalm.common.errors import DataFormatError, did_you_mean
from epalm.dataset.records import MediaItem, Sample
from epalm.dataset.tasks.task_split import TASK_READERS, TaskSplit, annotation_path
from epalm.models.modalities import get_modality, modality_names, placeholders

ROLES = ("system", "user", "assistant")
FIXED_KEYS = ("id", "messages", "meta")


def placeholder_pattern() -> re.Pattern:
    """Every registered modality's placeholder, longest first."""
    names = sorted(placeholders(), key=len, reverse=True)
    return re.compile("|".join(re.escape(name) for name in names))


def _messages(row: dict, where: str) -> list[dict[str, str]]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataFormatError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise DataFormatError(f"{where}: message {k} must be an object with exactly 'role' and 'content', "
                                  f"got {message!r:.80}")
        if message["role"] not in ROLES:
            raise DataFormatError(f"{where}: message {k} has role {message['role']!r}, expected one of {ROLES}")
        if not isinstance(message["content"], str):
            raise DataFormatError(f"{where}: message {k} content must be a string")
    if messages[-1]["role"] != "assistant":
        raise DataFormatError(f"{where}: the last message must be the assistant's (the target), "
                              f"got {messages[-1]['role']!r}")
    return [dict(message) for message in messages]


def _items(row: dict, messages: list[dict[str, str]], where: str) -> list[MediaItem]:
    """The row's files in the order their placeholders appear; counts checked per modality."""
    by_key = {get_modality(name).data_key: name for name in modality_names()}
    files: dict[str, list[str]] = {}
    for key, value in row.items():
        if key in FIXED_KEYS:
            continue
        if key not in by_key:
            known = [*FIXED_KEYS, *sorted(by_key)]
            raise DataFormatError(f"{where}: unknown key {key!r}{did_you_mean(key, known)}; known: {known}")
        if not isinstance(value, list) or not all(isinstance(path, str) and path for path in value):
            raise DataFormatError(f"{where}: {key!r} must be a list of file paths")
        files[by_key[key]] = value
    pattern, owners = placeholder_pattern(), placeholders()
    items: list[MediaItem] = []
    used = {name: 0 for name in files}
    for k, message in enumerate(messages):
        for match in pattern.finditer(message["content"]):
            modality = owners[match.group(0)]
            if message["role"] == "assistant":
                raise DataFormatError(f"{where}: message {k} (assistant) holds the placeholder {match.group(0)}; "
                                      "media may only appear in user and system messages")
            paths = files.get(modality, [])
            if used.get(modality, 0) >= len(paths):
                key = get_modality(modality).data_key
                raise DataFormatError(f"{where}: placeholder {match.group(0)} number {used.get(modality, 0) + 1} "
                                      f"has no file: {key!r} lists {len(paths)}")
            items.append(MediaItem(modality, paths[used[modality]]))
            used[modality] += 1
    for modality, paths in files.items():
        if used[modality] < len(paths):
            raise DataFormatError(f"{where}: {get_modality(modality).data_key!r} lists {len(paths)} file(s) but the "
                                  f"messages hold {used[modality]} {get_modality(modality).placeholder} placeholder(s)")
    return items


def chat_sample(row: Any, where: str) -> Sample:
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if not isinstance(row.get("id"), (str, int)) or isinstance(row.get("id"), bool):
        raise DataFormatError(f"{where}: missing field 'id' (a string or an integer)")
    messages = _messages(row, where)
    meta = row.get("meta", {})
    if not isinstance(meta, dict):
        raise DataFormatError(f"{where}: 'meta' must be an object")
    users = [m["content"] for m in messages[:-1] if m["role"] == "user"]
    return Sample(uid=row["id"], media="", prompt=users[-1] if users else "", targets=[messages[-1]["content"]],
                  meta=dict(meta), items=_items(row, messages, where), messages=messages)


def read_chat_rows(path: Path) -> list[Sample]:
    samples, seen = [], set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{where}: not valid JSON ({error})") from None
            sample = chat_sample(row, where)
            if sample.uid in seen:
                raise DataFormatError(f"{where}: id {sample.uid!r} appears twice")
            seen.add(sample.uid)
            samples.append(sample)
    return samples


@TASK_READERS.register("chat")
def read_chat(data_dir: str | Path, split: str, media_root: str | Path | None = None) -> TaskSplit:
    """The rows of `<data_dir>/<split>.jsonl`."""
    data_dir = Path(data_dir)
    known = tuple(sorted(p.stem for p in data_dir.glob("*.jsonl"))) or ("none found",)
    path = annotation_path(data_dir / f"{split}.jsonl", split, known)
    samples = read_chat_rows(path)
    modalities = sorted({item.modality for sample in samples for item in sample.items})
    return TaskSplit(task="chat", split=split, kind="chat", modality="+".join(modalities) or "text",
                     media_root=Path(media_root) if media_root else data_dir, annotation_file=path, samples=samples)
