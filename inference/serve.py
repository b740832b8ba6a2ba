"""A web demo of a trained bridge: `python main.py serve --checkpoint RUN` (docs/chat.md, "serve").

Needs the optional `web` extra (`pip install -e ".[web]"`: Gradio). Serves on 127.0.0.1 (this machine only)
unless `--host` says otherwise, never through a public share link; uploads are capped (`--max_upload_mb`).
The page (inference/serve_app.py): upload an image, video or audio file or pick one of a data split's samples,
ask, and see the answer stream in, the nearest vocabulary tokens of each visual token and the model's
description. Ctrl-C stops the server.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from epalm.common.command_line import add_debug_flag, command_parser, run_command
from epalm.common.errors import ConfigError, LaunchError, UserError
from epalm.common.ports import free_port
from epalm.dataset.tasks import TASK_READERS
from epalm.inference.api import Bridge
from epalm.inference.checkpoint_source import LoadedModel, add_model_arguments, load_from_args
from epalm.inference.generation import add_generation_arguments, settings_from_args
from epalm.inference.model_card import run_record
from epalm.inference.serve_app import Example, ServeHandlers, build_page

EXAMPLES = """examples:
  pip install -e ".[web]"
  python main.py serve --checkpoint outputs/demo/image_vqa/epalm          # http://127.0.0.1:7860
  python main.py serve --checkpoint exports/my-bridge --port 8000 --data_dir data --split karpathy_test
  python main.py serve --checkpoint RUN --host 0.0.0.0    # reachable from other machines: mind who can reach it"""


def split_examples(loaded: LoadedModel, data_dir: str | None, split: str | None, limit: int
                   ) -> tuple[list[Example], str | None]:
    """Up to `limit` one-medium samples of a data split: --data_dir / --split, else the run's own test split when
    its data is on this machine. None found: no list (and no error unless --data_dir was given)."""
    task = loaded.cfg.task
    own = loaded.source.run_config is not None and loaded.source.kind != "export" and not loaded.cfg.mixture
    folder = data_dir or (task.data_dir if own else None)
    name = split or task.test_split or task.val_split
    if folder is None or not name or loaded.chat_trained:
        return [], None
    options = dict(task.reader_options)
    if task.media_root and not data_dir:
        options["media_root"] = task.media_root
    try:
        samples = TASK_READERS.build(task.reader, folder, name, **options)
    except (OSError, ValueError, UserError) as error:
        if data_dir:
            raise ConfigError(f"--data_dir {data_dir} --split {name}: cannot read it ({error})") from None
        return [], None
    examples = []
    for sample in samples.samples[:limit]:
        path = samples.media_path(sample)
        label = f"{sample.uid}: {sample.prompt}" if sample.prompt else f"{sample.uid}: {Path(sample.media).name}"
        examples.append(Example(label, path, samples.modality, sample.prompt))
    return examples, f"{task.reader} {name}"


def description(loaded: LoadedModel) -> str:
    """The model in a few lines of Markdown: LM, encoders, connector, trained steps, metrics."""
    model, source = loaded.model, loaded.source
    encoders = ", ".join(f"{name}: `{cfg.name}` ({cfg.type})" for name, cfg in model.config.encoders.items()) \
        if model.config.visual else "none (a blind model)"
    steps, metrics = run_record(source)
    scores = "; ".join(f"{split} {m['name']} {m['value']}" for split, m in metrics.items()) or "none recorded"
    return "\n".join([
        f"**LM** `{model.config.lm.name}` · **encoders** {encoders} · **connector** {model.describe_bridge()}",
        f"**trained** {steps if steps is not None else 'unknown'} steps on `{loaded.cfg.task.reader}` · "
        f"**metrics** {scores} · **weights** {source.kind} `{source.weights}`",
    ])


def build(args: argparse.Namespace) -> tuple[Any, ServeHandlers]:
    """The Gradio page and its handlers for the parsed flags (loads the model)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no call home from the page's server
    try:
        import gradio  # noqa: F401  (checked before the model loads)
    except ImportError:
        raise LaunchError('serve needs Gradio, an optional extra: pip install -e ".[web]"') from None
    loaded = load_from_args(args)
    bridge = Bridge(loaded, settings_from_args(loaded.cfg, args))
    examples, split_name = split_examples(loaded, args.data_dir, args.split, args.examples)
    handlers = ServeHandlers(bridge, examples, args.max_upload_mb * 2**20, args.topk)
    return build_page(handlers, description(loaded), split_name), handlers


def launch(page, host: str, port: int | None, max_upload_mb: int, allowed: list[str], block: bool) -> str:
    """Start the server (in a thread unless `block`); returns its URL."""
    page.queue(default_concurrency_limit=1)  # one generation at a time: the model is one
    _, url, _ = page.launch(server_name=host, server_port=port or free_port(host), share=False,
                            prevent_thread_lock=not block, quiet=not block, show_error=False,
                            max_file_size=f"{max_upload_mb}mb", ssr_mode=False, allowed_paths=allowed)
    return url


def argument_parser() -> argparse.ArgumentParser:
    parser = command_parser("python main.py serve", __doc__, EXAMPLES)
    add_model_arguments(parser)
    add_generation_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free one)")
    parser.add_argument("--max_upload_mb", type=int, default=50, metavar="MB",
                        help="largest upload accepted, in MB (default 50)")
    parser.add_argument("--data_dir", default=None, metavar="DIR",
                        help="a data folder whose samples the page offers (default: the run's)")
    parser.add_argument("--split", default=None, metavar="NAME", help="that split (default: the run's test split)")
    parser.add_argument("--examples", type=int, default=100, metavar="N", help="samples offered (default 100)")
    parser.add_argument("--topk", type=int, default=5, metavar="K",
                        help="nearest vocabulary tokens shown per visual token (default 5)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> None:
    args = argument_parser().parse_args(argv)
    out = stdout or sys.stdout
    if args.max_upload_mb < 1 or args.topk < 1 or args.examples < 0:
        raise ConfigError("--max_upload_mb and --topk must be >= 1, --examples >= 0")
    if not 0 <= args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a port number")
    page, handlers = build(args)
    allowed = sorted({str(example.path.parent) for example in handlers.examples})
    out.write(f"serving {args.checkpoint} on http://{args.host}:{args.port or '<free port>'} (Ctrl-C stops)\n")
    out.flush()
    try:
        launch(page, args.host, args.port, args.max_upload_mb, allowed, block=True)
    except KeyboardInterrupt:
        pass
    finally:
        page.close()


if __name__ == "__main__":
    sys.exit(run_command(main))
