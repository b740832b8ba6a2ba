"""Talk to a trained model: `python main.py chat --checkpoint RUN` (docs/chat.md).

A `User:` prompt; `<image:path>` (`<video:...>`, `<audio:...>`, any modality plugin's name) inside a message
puts that medium in the prompt, and the model answers on a `Model:` line, streamed as it is generated (greedy
or sampling; Ctrl-C stops the reply, not the chat). Commands: /tokens, /randvqa, /reset, /help. Ctrl-D, or
Ctrl-C twice within a few seconds at the prompt, quits. A bad path, a broken file or an unknown command prints
an `error:` line and the prompt stays.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from epalm.common.command_line import add_debug_flag, command_parser, format_user_error, run_command
from epalm.common.errors import ConfigError, UnknownNameError, UserError, did_you_mean
from epalm.inference.chat_inputs import (MediaReader, add_media_root_argument, media_root_from_args,
                                         parse_media_argument, parse_message)
from epalm.inference.checkpoint_source import LoadedModel, add_model_arguments, describe, load_from_args
from epalm.inference.conversation import Conversation
from epalm.inference.generation import GenerationSettings, add_generation_arguments, settings_from_args
from epalm.inference.streaming import check_streamable
from epalm.inference.nearest_tokens import format_nearest, nearest_tokens, visual_tokens
from epalm.inference.random_vqa import RandomVQA

PROMPT = "User: "
QUIT_WINDOW_S = 3.0
HELP = """\
Type a message; <image:path>, <video:path> or <audio:path> in it puts that file in the prompt
(relative paths against --media_root). Commands:
  /tokens <media>   the nearest vocabulary tokens of each visual token the model makes of a file
                    (<image:path>, image:path, or a path of the model's main modality); --topk of them
  /randvqa          a random question of the VQA split (--data_dir, --split): image, answer, human answers
  /reset            forget the conversation
  /help             this text
Ctrl-C during a reply stops it; Ctrl-D, or Ctrl-C twice within 3 s, quits."""
EPILOG = """\
examples:
  python main.py chat --checkpoint outputs/demo/image_vqa/epalm --media_root outputs/demo/data/image/COCO/images
  python main.py chat --checkpoint outputs/run/best --data_dir data --split karpathy_test --num_beams 1
  python main.py chat --checkpoint RUN --do_sample --temperature 0.8 --top_p 0.9 --seed 0
  python main.py chat --checkpoint ePALM_pt_L_vqa.pth --config configs/image/epalm_pt_l_vqa.yaml
  printf '<image:a.jpg> what colour?\\n/tokens a.jpg\\n' | python main.py chat --checkpoint RUN  # a transcript

in the prompt:
  User: <image:val2014/COCO_val2014_000000006304.jpg> which colour do the shapes have?
  User: is <image:a.jpg> the same colour as <image:b.jpg>?
  User: /tokens val2014/COCO_val2014_000000006304.jpg
  User: /randvqa

A model trained on the reference formats reads a message with one medium as it was trained (question</a>,
the medium in front); other messages, and every message to a chat-trained model, are read as a chat
conversation with the earlier turns. See docs/chat.md."""


class ChatSession:
    """The REPL's state and commands; `handle(line)` prints to `out` and raises UserError for bad input."""

    def __init__(self, loaded: LoadedModel, settings: GenerationSettings, media_root: Path, topk: int,
                 vqa: RandomVQA | None, out: TextIO, stream: bool = False):
        """stream: print each reply as it is generated (num_beams 1)."""
        if stream:
            check_streamable(settings, 1)
        self.loaded, self.media_root, self.topk, self.vqa, self.out = loaded, media_root, topk, vqa, out
        self.streaming = stream
        self.conversation = Conversation(loaded, settings)
        self.media = MediaReader(loaded)
        self.commands: dict[str, Callable[[str], None]] = {
            "/help": lambda _: self.say(HELP), "/reset": self.reset, "/tokens": self.tokens, "/randvqa": self.randvqa,
        }

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def handle(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        if line.startswith("/"):
            name, _, argument = line.partition(" ")
            if name not in self.commands:
                raise UnknownNameError(f"unknown command {name}{did_you_mean(name, self.commands)}; /help lists them")
            self.commands[name](argument.strip())
            return
        self.message(line)

    def message(self, text: str) -> None:
        message = parse_message(text, self.media_root)
        media = [self.media.read(ref) for ref in message.media]
        if not self.streaming:
            reply = self.conversation.ask(message, media)
            if reply.note:
                self.say(f"({reply.note})")
            self.say(f"Model: {reply.answer}")
            return
        prepared = self.conversation.prepare(message, media)
        if prepared.note:
            self.say(f"({prepared.note})")
        self.out.write("Model: ")
        self.out.flush()
        stream = self.conversation.stream(prepared)
        try:
            for piece in stream:
                self.out.write(piece)
                self.out.flush()
        except KeyboardInterrupt:  # stops the reply, not the chat; the conversation stays as it was
            stream.stop()
            self.say(" [stopped: this turn is not kept]")
            return
        self.say("")
        self.conversation.keep(prepared, stream.text)

    def reset(self, _: str) -> None:
        self.conversation.reset()
        self.say("(conversation cleared)")

    def tokens(self, argument: str) -> None:
        if not argument:
            raise ConfigError("/tokens needs a file: /tokens <image:path>, /tokens image:path or /tokens path")
        ref = parse_media_argument(argument, self.loaded.model.modality, self.media_root)
        tokens = visual_tokens(self.loaded.model, self.media.read(ref), ref.modality)
        report = nearest_tokens(self.loaded.model, self.loaded.tokenizer, tokens, self.topk)
        self.say(f"{ref.path} ({ref.modality}): {len(report.rows)} visual token(s)\n{format_nearest(report)}")

    def randvqa(self, _: str) -> None:
        if self.vqa is None:
            raise ConfigError("/randvqa needs a VQA-format data folder: start the chat with --data_dir "
                              "(e.g. outputs/demo/data/image)")
        question = self.vqa.draw()
        self.say(f"Question {question.uid}: {question.question}")
        self.say(f"Image: {question.image}")
        # Asked as a typed message would be (tag in front), so it follows the same layout rules.
        self.message(f"<image:{question.image.resolve()}> {question.question}")
        label = "Human answers" if question.human else "Answers (the split's scored labels; no human answers)"
        self.say(f"{label}: {question.answer_counts()}")


def line_reader(stdin: TextIO, out: TextIO) -> Callable[[str], str]:
    """read(prompt) -> the line, EOFError at the end. A terminal gets input() (with readline's editing and
    history where available); piped input is echoed after the prompt so that the output reads as a transcript."""
    if stdin is sys.stdin and out is sys.stdout and stdin.isatty() and out.isatty():
        try:
            import readline  # noqa: F401  (importing it gives input() line editing and history)
        except ImportError:
            pass
        return input

    def read(prompt: str) -> str:
        out.write(prompt)
        line = stdin.readline()
        if not line:
            raise EOFError
        out.write(line if line.endswith("\n") else line + "\n")
        out.flush()
        return line.rstrip("\n")

    return read


def repl(session: ChatSession, read: Callable[[str], str], clock: Callable[[], float] = time.monotonic,
         quit_window_s: float = QUIT_WINDOW_S) -> None:
    """Read, handle, print until Ctrl-D or two Ctrl-C within `quit_window_s` (at the prompt or while generating)."""
    last_interrupt: float | None = None

    def interrupted(what: str) -> bool:
        nonlocal last_interrupt
        now = clock()
        if last_interrupt is not None and now - last_interrupt <= quit_window_s:
            session.say("")
            return True
        last_interrupt = now
        session.say(f"\n({what}Ctrl-C again within {quit_window_s:g} s to quit, or Ctrl-D)")
        return False

    while True:
        try:
            line = read(PROMPT)
        except EOFError:
            session.say("")
            return
        except KeyboardInterrupt:
            if interrupted(""):
                return
            continue
        try:
            session.handle(line)
        except UserError as error:
            session.say(format_user_error(error))
        except KeyboardInterrupt:
            if interrupted("interrupted; "):
                return


def vqa_source(args: argparse.Namespace, loaded: LoadedModel) -> RandomVQA | None:
    """--data_dir / --split, else the run's own data when it was a VQA v2 run."""
    task = loaded.cfg.task
    own = loaded.source.run_config is not None and task.reader == "vqa_v2"
    data_dir = args.data_dir or (task.data_dir if own else None)
    if data_dir is None:
        return None
    split = args.split or (own and (task.test_split or task.val_split)) or "karpathy_test"
    media_root = task.media_root if own and not args.data_dir else None
    return RandomVQA(data_dir, split, media_root, args.seed)


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python main.py chat", __doc__, EPILOG)
    add_model_arguments(parser)
    add_media_root_argument(parser)
    add_generation_arguments(parser)
    parser.add_argument("--topk", type=int, default=5, metavar="K",
                        help="vocabulary tokens /tokens lists per visual token (default: 5)")
    parser.add_argument("--data_dir", default=None, metavar="DIR",
                        help="VQA-format data folder for /randvqa (default: a VQA v2 run's own)")
    parser.add_argument("--split", default=None, metavar="NAME",
                        help="the split /randvqa draws from (default: the run's test split)")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                        help="print replies as they are generated (default: with num_beams 1)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
    args = argument_parser().parse_args(argv)
    if args.topk < 1:
        raise ConfigError(f"--topk must be >= 1, got {args.topk}")
    stdin, out = stdin or sys.stdin, stdout or sys.stdout
    media_root = media_root_from_args(args)
    out.write(f"loading {args.checkpoint} ...\n")
    out.flush()
    loaded = load_from_args(args)
    settings = settings_from_args(loaded.cfg, args)
    stream = settings.num_beams == 1 if args.stream is None else args.stream
    session = ChatSession(loaded, settings, media_root, args.topk, vqa_source(args, loaded), out, stream)
    session.say(describe(loaded))
    session.say(f"generation: {settings.describe()}{', streamed' if stream else ''}; "
                "/help for the commands, Ctrl-D or Ctrl-C twice to quit")
    repl(session, line_reader(stdin, out))


if __name__ == "__main__":
    sys.exit(run_command(main))
