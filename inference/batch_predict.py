"""`predict --input FOLDER_OR_JSONL --output FILE.jsonl`: an answer per row, one JSON line each, resumable.

Rows:
- a folder: each media file under it (recursively, sorted; the modality from its extension, or `--modality`
  for all), asked `--prompt` (default: none, a caption model's caption); id: the path inside the folder;
- a JSONL file: one object per line, `{"id": ..., "prompt": "...", "images": [...], "videos": ..., "audios":
  ..., "media": {modality: [...]}}` or `{"id": ..., "messages": [...], "images": [...]}` (a conversation);
  ids default to the line number; relative paths are read against `--media_root`.

Output: per row `{"id", "prompt", "media", "answer", "layout"}`, or `{"id", "error"}` when the row cannot be
answered (a missing or broken file, a bad row): the batch goes on. Each line is written and flushed once its
batch is answered. Resuming (the same command again) skips the rows the output already answers; a line cut by
a crash and the error rows are dropped first (the file rewritten whole) and those rows asked again.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator, TextIO

from tqdm.auto import tqdm

from epalm.common.atomic_io import write_text_atomic
from epalm.common.errors import ConfigError, DataFormatError, MissingFileError, UserError
from epalm.inference.api import Bridge, Prepared
from epalm.inference.chat_inputs import media_root_from_args
from epalm.inference.checkpoint_source import load_from_args
from epalm.inference.generation import settings_from_args
from epalm.inference.media_files import media_files
from epalm.inference.requests import MEDIA_ARGUMENTS, build_requests

ROW_MEDIA_KEYS = (*MEDIA_ARGUMENTS, "media")


def add_batch_arguments(parser) -> None:
    group = parser.add_argument_group("many prompts (one JSON line per row, resumable)")
    group.add_argument("--input", default=None, metavar="DIR_OR_JSONL",
                       help="a folder of media (each asked --prompt) or a JSONL file of rows")
    group.add_argument("--output", default=None, metavar="FILE.jsonl",
                       help="where the answers go, a line per row; rows already in it are skipped")
    group.add_argument("--modality", default=None, metavar="NAME",
                       help="read every file of an --input folder as this modality (default: by extension)")
    group.add_argument("--batch_size", type=int, default=None, metavar="N",
                       help="prompts answered together (default: the run's eval.batch_size)")


def read_rows(path: Path, prompt: str, modalities: list[str], forced: str | None) -> Iterator[dict[str, Any]]:
    """`{"id", ...row}` for each row of the input (a folder or a JSONL file)."""
    if path.is_dir():
        files = media_files(path, modalities, forced)
        if not files:
            raise MissingFileError(f"--input {path}: no media file of {', '.join(modalities)} in it (by extension; "
                                   f"--modality NAME reads every file as NAME)")
        for modality, file in files:
            yield {"id": file.relative_to(path).as_posix(), "prompt": prompt, "media": {modality: [str(file)]}}
        return
    if not path.is_file():
        raise MissingFileError(f"--input {path}: no such file or folder")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield {"id": number, "error": f"{path}: line {number}: not valid JSON ({error})"}
                continue
            if not isinstance(row, dict):
                yield {"id": number, "error": f"{path}: line {number}: expected a JSON object"}
                continue
            yield {"id": number, **row}


def done_rows(output: Path) -> set[str]:
    """Ids the output already answers; a cut last line and error rows are dropped (the file rewritten whole)."""
    if not output.is_file():
        return set()
    kept, answered, dropped = [], set(), 0
    for line in output.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(row, dict) and "answer" in row and "id" in row:
            kept.append(line)
            answered.add(json.dumps(row["id"]))
        else:
            dropped += 1
    if dropped:
        write_text_atomic(output, "".join(line + "\n" for line in kept))
    return answered


def _request(row: dict[str, Any], media_root: Path):
    unknown = sorted(set(row) - {"id", "prompt", "messages", *ROW_MEDIA_KEYS})
    if unknown:
        raise DataFormatError(f"row {row['id']!r}: unknown field(s) {unknown}; a row has id, prompt or messages, "
                              f"and {', '.join(ROW_MEDIA_KEYS)}")
    media = {key: row[key] for key in MEDIA_ARGUMENTS if key in row}
    if isinstance(row.get("media"), dict):
        media.update(row["media"])
    elif "media" in row:
        raise DataFormatError(f"row {row['id']!r}: 'media' must be an object {{modality: [paths]}}")
    messages = row.get("messages")
    prompt = row.get("prompt", "" if messages is None else None)
    requests, _ = build_requests(prompt, messages, media, media_root)
    return requests[0]


def _answer_rows(bridge: Bridge, rows: list[tuple[dict[str, Any], Prepared]], batch_size: int | None
                 ) -> list[dict[str, Any]]:
    answers = bridge.answer_prepared([prepared for _, prepared in rows], batch_size=batch_size)
    return [{"id": row["id"], "prompt": prepared.request.typed,
             "media": [{"modality": ref.modality, "path": str(ref.path)} for ref in prepared.request.media],
             "answer": answer, "layout": prepared.layout}
            for (row, prepared), answer in zip(rows, answers)]


def predict_batch(args: argparse.Namespace, out: TextIO) -> dict[str, Any]:
    """Answer every row not yet in --output; returns the counts (answered, failed, skipped as done)."""
    media_root, output = media_root_from_args(args), Path(args.output)
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch_size must be >= 1, got {args.batch_size}")
    if not Path(args.input).exists():
        raise MissingFileError(f"--input {args.input}: no such file or folder")
    loaded = load_from_args(args)
    bridge = Bridge(loaded, settings_from_args(loaded.cfg, args))
    if args.modality is not None and args.modality not in bridge.modalities:
        raise ConfigError(f"--modality {args.modality}: this model reads {', '.join(bridge.modalities) or 'no media'}")
    rows = list(read_rows(Path(args.input), args.prompt, bridge.modalities, args.modality))
    done = done_rows(output)
    todo = [row for row in rows if json.dumps(row["id"]) not in done]
    counts = {"rows": len(rows), "skipped": len(rows) - len(todo), "answered": 0, "failed": 0}
    output.parent.mkdir(parents=True, exist_ok=True)
    size = args.batch_size or loaded.cfg.eval.batch_size
    with open(output, "a", encoding="utf-8") as handle, \
            tqdm(total=len(rows), initial=counts["skipped"], desc="predict", unit="row") as progress:
        for start in range(0, len(todo), size):
            chunk, lines, ready = todo[start:start + size], {}, []
            for position, row in enumerate(chunk):
                try:
                    if "error" in row:
                        raise DataFormatError(row["error"])
                    ready.append((position, row, bridge.prepare(_request(row, media_root))))
                except UserError as error:
                    lines[position] = {"id": row["id"], "error": str(error)}
            if ready:
                answered = _answer_rows(bridge, [(row, prepared) for _, row, prepared in ready], size)
                lines.update({position: line for (position, _, _), line in zip(ready, answered)})
            for line in (lines[position] for position in range(len(chunk))):
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                counts["failed" if "error" in line else "answered"] += 1
            handle.flush()
            progress.update(len(lines))
    out.write(f"{counts['answered']} answered, {counts['failed']} failed (their lines say why), "
              f"{counts['skipped']} already in {output}\n")
    out.flush()
    return counts
