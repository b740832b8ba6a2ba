"""Answers, scriptable: `python main.py predict --checkpoint C --media X --prompt "..."` (docs/chat.md).

One prompt: prints the generated text (one line), or with --json an object with the prompt, the media, the
answer, the layout the model read the prompt in and the generation settings. The prompt follows the chat
REPL's rules: each --media goes in front of the prompt text in the order given, and `<image:path>` tags inside
the prompt place media where they stand. No prompt (or an empty one) asks a caption model for its caption.

Many: `--input` (a folder of media, or a JSONL file of prompts) and `--output FILE.jsonl`, one line per row,
resumable (inference/batch_predict.py). Errors (a missing file, a broken one, a bad flag) are one `error:`
line, exit 2; in a batch, a row's bad medium is its line's `error` and the batch goes on.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.common.errors import ConfigError
from epalm.inference.api import Bridge
from epalm.inference.batch_predict import add_batch_arguments, predict_batch
from epalm.inference.chat_inputs import add_media_root_argument, media_root_from_args, parse_media_argument
from epalm.inference.checkpoint_source import add_model_arguments, load_from_args
from epalm.inference.generation import add_generation_arguments, settings_from_args
from epalm.inference.requests import prompt_request

EPILOG = """\
examples:
  python main.py predict --checkpoint outputs/demo/image_vqa/epalm \\
      --media outputs/demo/data/image/COCO/images/val2014/COCO_val2014_000000006304.jpg \\
      --prompt "which colour do the shapes have?"
  python main.py predict --checkpoint RUN --media a.jpg --media b.jpg --prompt "same colour?" --json
  python main.py predict --checkpoint RUN --media_root photos --prompt "is <image:a.jpg> left of <image:b.jpg>?"
  python main.py predict --checkpoint CAPTION_RUN --media a.jpg              # a caption model's caption
  python main.py predict --checkpoint RUN --media a.jpg --prompt "what is it?" --do_sample --temperature 0.7 --seed 1
  python main.py predict --checkpoint RUN --input photos/ --prompt "what colour?" --output answers.jsonl
  python main.py predict --checkpoint RUN --input prompts.jsonl --output answers.jsonl --batch_size 32
  python main.py predict --checkpoint ePALM_pt_L_vqa.pth --config configs/image/epalm_pt_l_vqa.yaml \\
      --media a.jpg --prompt "what is it?"   # read with the reference's inputs (--our_defaults: ours)"""


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python main.py predict", __doc__, EPILOG)
    add_model_arguments(parser)
    parser.add_argument("--media", action="append", default=[], metavar="[MODALITY:]PATH",
                        help="a medium in front of the prompt (repeatable): image:a.jpg or a.jpg")
    parser.add_argument("--prompt", default="",
                        help="the question, may hold <image:path> tags (default: none, a caption)")
    add_media_root_argument(parser)
    add_generation_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print a JSON object (prompt, media, answer, layout, settings)")
    add_batch_arguments(parser)
    add_debug_flag(parser)
    return parser


def predict(args: argparse.Namespace) -> dict[str, Any]:
    """Load, answer once; returns what --json prints."""
    media_root = media_root_from_args(args)
    loaded = load_from_args(args)
    refs = [parse_media_argument(text, loaded.model.modality, media_root) for text in args.media]
    request = prompt_request(args.prompt, [(ref.modality, ref.path.resolve()) for ref in refs], media_root)
    bridge = Bridge(loaded, settings_from_args(loaded.cfg, args))
    prepared = bridge.prepare(request)
    answer = bridge.answer_prepared([prepared])[0]
    return {
        "checkpoint": args.checkpoint,
        "prompt": args.prompt,
        "media": [{"modality": ref.modality, "path": str(ref.path)} for ref in request.media],
        "answer": answer,
        "layout": prepared.layout,
        "settings": bridge.settings.as_dict(),
    }


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> dict[str, Any]:
    args = argument_parser().parse_args(argv)
    out = stdout or sys.stdout
    if args.input or args.output:
        if not (args.input and args.output):
            raise ConfigError("--input and --output go together: --input FOLDER_OR_JSONL --output FILE.jsonl")
        if args.media or args.json:
            raise ConfigError("--media and --json are for one prompt; a batch's rows name their media "
                              "(--input) and every row is a JSON line (--output)")
        return predict_batch(args, out)
    result = predict(args)
    out.write((json.dumps(result, indent=2) if args.json else result["answer"]) + "\n")
    out.flush()
    return result


if __name__ == "__main__":
    sys.exit(run_command(main))
