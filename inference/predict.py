"""One answer, scriptable: `python main.py predict --checkpoint C --media X --prompt "..."` (docs/chat.md).

Prints the generated text (one line), or with --json an object with the prompt, the media, the answer, the
layout the model read the prompt in and the generation settings. The prompt follows the chat REPL's rules:
each --media goes in front of the prompt text in the order given, and `<image:path>` tags inside the prompt
place media where they stand. Errors (a missing file, a broken one, a bad flag) are one `error:` line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from epalm.common.errors import MissingFileError
from epalm.inference.chat_inputs import MediaReader, add_media_root_argument, parse_media_argument, parse_message
from epalm.inference.checkpoint_source import add_model_arguments, load_model
from epalm.inference.conversation import Conversation, GenerationSettings, add_generation_arguments

EPILOG = """\
examples:
  python main.py predict --checkpoint outputs/demo/image_vqa/epalm \\
      --media outputs/demo/data/image/COCO/images/val2014/COCO_val2014_000000006304.jpg \\
      --prompt "which colour do the shapes have?"
  python main.py predict --checkpoint RUN --media a.jpg --media b.jpg --prompt "same colour?" --json
  python main.py predict --checkpoint RUN --media_root photos --prompt "is <image:a.jpg> left of <image:b.jpg>?"
  python main.py predict --checkpoint ePALM_pt_L_vqa.pth --config configs/image/epalm_pt_l_vqa.yaml \\
      --media video:clip.mp4 --prompt "what happens?"  # needs a model that reads video

--debug keeps the traceback of a user error."""


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python main.py predict", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--media", action="append", default=[], metavar="[MODALITY:]PATH",
                        help="a medium put in front of the prompt (repeat for several): image:a.jpg, or a bare path "
                             "for the model's main modality")
    parser.add_argument("--prompt", required=True, help="the question or instruction; may hold <image:path> tags")
    add_media_root_argument(parser)
    add_generation_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print a JSON object (prompt, media, answer, layout, settings) instead of the text")
    return parser


def predict(args: argparse.Namespace) -> dict[str, Any]:
    """Load, answer once; returns what --json prints."""
    media_root = Path(args.media_root)
    if not media_root.is_dir():
        raise MissingFileError(f"--media_root {media_root}: no such folder")
    loaded = load_model(args.checkpoint, args.config, args.device)
    refs = [parse_media_argument(text, loaded.model.modality, media_root) for text in args.media]
    tags = [f"<{ref.modality}:{ref.path.resolve()}>" for ref in refs]  # absolute: not read against the root again
    message = parse_message(" ".join([*tags, args.prompt]), media_root)
    reader = MediaReader(loaded)
    settings = GenerationSettings.from_run(loaded.cfg, args.num_beams, args.max_new_tokens)
    reply = Conversation(loaded, settings).ask(message, [reader.read(ref) for ref in message.media])
    return {
        "checkpoint": args.checkpoint,
        "prompt": args.prompt,
        "media": [{"modality": ref.modality, "path": str(ref.path)} for ref in message.media],
        "answer": reply.answer,
        "layout": reply.layout,
        "settings": {"num_beams": settings.num_beams, "max_new_tokens": settings.max_new_tokens},
    }


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> dict[str, Any]:
    args = argument_parser().parse_args(argv)
    result = predict(args)
    out = stdout or sys.stdout
    out.write((json.dumps(result, indent=2) if args.json else result["answer"]) + "\n")
    out.flush()
    return result
