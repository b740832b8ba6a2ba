"""The web demo's page (Gradio Blocks) and what its buttons do; inference/serve.py is the command around it.

The page: the model's description (LM, encoders, connector, trained steps, metrics); a file upload (image,
video or audio; the modality from the extension, or as picked), or one of a data split's samples; the
question; the answer, streamed in as it is generated (Stop ends it); the nearest vocabulary tokens of each
visual token of the file; a few generation settings. Every element that a test reads has an `elem_id`.

A bad upload (not a medium the model reads, an empty file, one over the size cap) is reported in the page, in
the status line and as a warning toast, never raised: the server goes on. Files over the cap are refused by
the browser before they are sent (Gradio's `max_file_size`, also enforced by the server); the handler checks
again.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from epalm.common.errors import UserError
from epalm.inference.api import Bridge, Prepared
from epalm.inference.chat_inputs import MediaReadError
from epalm.inference.media_files import guess_modality
from epalm.inference.nearest_tokens import NearestTokens
from epalm.inference.requests import prompt_request

AUTO = "auto (from the file name)"
DONE = "done"


@dataclass(frozen=True)
class Example:
    """One sample of a data split the page offers: its label in the list, its file, modality and question."""

    label: str
    path: Path
    modality: str
    prompt: str


def tokens_markdown(report: NearestTokens) -> str:
    # <code> with escaped text, not backticks: a token may be a backtick, a pipe or markup itself
    rows = [f"| {html.escape(row.label)} | " + ", ".join(
        f"<code>{html.escape(text.strip() or repr(text)).replace('|', '&#124;')}</code> {value:.2f}"
        for text, value in row.neighbours) + " |" for row in report.rows]
    return "\n".join([f"Nearest vocabulary tokens by cosine similarity with {report.space}:", "",
                      "| visual token | nearest tokens |", "|---|---|", *rows])


class ServeHandlers:
    """What the page does, kept free of Gradio so that it can be called (and tested) as plain functions."""

    def __init__(self, bridge: Bridge, examples: list[Example], max_upload_bytes: int, topk: int = 5):
        self.bridge, self.examples, self.max_upload_bytes, self.topk = bridge, examples, max_upload_bytes, topk
        self.by_label = {example.label: example for example in examples}

    def check_upload(self, path: str | None, picked: str) -> tuple[Path, str]:
        """The file and the modality it is read as, or a UserError saying what is wrong with the upload."""
        if not path:
            raise UserError("Upload an image, video or audio file, or pick a sample first.")
        file = Path(path)
        size = file.stat().st_size if file.is_file() else -1
        if size < 0:
            raise UserError(f"The upload {file.name} did not arrive; upload it again.")
        if size == 0:
            raise UserError(f"The uploaded file {file.name} is empty.")
        if size > self.max_upload_bytes:
            raise UserError(f"The uploaded file {file.name} is {_size(size)}, over the "
                            f"{_size(self.max_upload_bytes)} limit.")
        modalities = self.bridge.modalities
        if not modalities:
            raise UserError("This model is blind (model.visual: false): it reads no media.")
        modality = picked if picked in modalities else guess_modality(file, modalities)
        if modality is None:
            if len(modalities) > 1:
                raise UserError(f"{file.name}: which modality is it? Pick one of {', '.join(modalities)}.")
            modality = modalities[0]
        return file, modality

    def prepare(self, question: str, path: Path, modality: str) -> Prepared:
        """The question with the file in front, its media read once (a broken file is reported before
        generation starts)."""
        request = prompt_request(question, [(modality, path)], Path("."))
        try:
            return self.bridge.prepare(request)
        except MediaReadError as error:
            if error.ref != request.media[0]:  # a file tagged in the question: reported as it is
                raise
            raise UserError(f"{path.name} is not a readable {modality} file "
                            f"({str(error).split(': ', 2)[-1]})") from None

    def pick(self, label: str | None, question: str, preview: str | None = None
             ) -> tuple[str | None, str, str | None]:
        """A sample picked in the list: (its file, its question, its image for the preview); none picked: no
        file, the question and the preview as they stand."""
        example = self.by_label.get(label or "")
        if example is None:
            return None, question, preview
        preview = str(example.path) if example.modality == "image" else None
        return str(example.path), example.prompt, preview

    def uploaded(self, path: str | None) -> tuple[None, str | None]:
        """A new upload replaces the picked sample's file (the latest choice is asked about); an image Pillow can
        open shows in the preview (a broken one is reported when asked about)."""
        if not path or not guess_modality(path, ["image"]):
            return None, None
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, ValueError):
            return None, None
        return None, path

    def answer(self, upload: str | None, example_file: str | None, picked: str, question: str, do_sample: bool,
               temperature: float, top_p: float, seed: float | None) -> Iterator[tuple[str, str, str]]:
        """Yields (answer so far, status, nearest tokens); the last status is DONE, or an error message."""
        stream = None
        try:
            # the latest choice: a picked sample, until a file is uploaded (which clears the pick's file)
            file, modality = self.check_upload(example_file or upload, picked)
            prepared = self.prepare(question or "", file, modality)
            tokens = tokens_markdown(self.bridge.nearest_of(prepared.tensors[0], modality, self.topk))
            yield "", "generating ...", tokens
            settings: dict[str, Any] = {"do_sample": bool(do_sample)}
            if do_sample:
                settings.update(temperature=float(temperature), top_p=float(top_p),
                                seed=None if seed in (None, "") else int(seed))
            stream = self.bridge.stream_prepared(prepared, self.bridge.settings.with_overrides(num_beams=1,
                                                                                               **settings))
            for _ in stream:
                yield stream.text, "generating ...", tokens
            yield stream.text, DONE, tokens
        except UserError as error:
            message = str(error)
            _warn(message)
            yield "", f"**Error:** {html.escape(message)}", ""
        finally:  # the page's Stop button (or a closed page) closes this generator: end generation too
            if stream is not None:
                stream.stop()


def _size(count: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{count} bytes"


def _warn(message: str) -> None:
    try:
        import gradio as gr
    except ImportError:  # called as a plain function, without a page
        return
    gr.Warning(message)


def build_page(handlers: ServeHandlers, description: str, split_name: str | None):
    """The Gradio Blocks of the page."""
    import gradio as gr

    modalities = handlers.bridge.modalities
    with gr.Blocks(title="eP-ALM", analytics_enabled=False) as page:
        gr.Markdown("# eP-ALM: ask a trained bridge about a file", elem_id="title")
        gr.Markdown(description, elem_id="model")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label=f"Upload a file ({', '.join(modalities) or 'none'})", type="filepath",
                                 elem_id="upload")
                example = gr.Dropdown([e.label for e in handlers.examples], value=None,
                                      label=f"... or pick a sample of {split_name}" if split_name else "samples",
                                      visible=bool(handlers.examples), elem_id="example")
                example_file = gr.State(None)
                picked = gr.Dropdown([AUTO, *modalities], value=AUTO, label="read the file as",
                                     visible=len(modalities) > 1, elem_id="modality")
                preview = gr.Image(label="image", type="filepath", interactive=False, height=220, elem_id="preview")
            with gr.Column():
                question = gr.Textbox(label="Question (empty: a caption model's caption)", elem_id="question")
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    stop = gr.Button("Stop", elem_id="stop")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                status = gr.Markdown("", elem_id="status")
                with gr.Accordion("generation", open=False):
                    do_sample = gr.Checkbox(label="sample (else greedy)", value=False, elem_id="do_sample")
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
                    seed = gr.Number(value=None, precision=0, label="seed (empty: unseeded)")
        tokens = gr.Markdown("", elem_id="tokens")
        example.change(handlers.pick, inputs=[example, question, preview], outputs=[example_file, question, preview])
        # No event writes the other's input component: chained change events would race (each reads the
        # preview before the other has set it).
        upload.change(handlers.uploaded, inputs=[upload], outputs=[example_file, preview])
        inputs = [upload, example_file, picked, question, do_sample, temperature, top_p, seed]
        event = ask.click(handlers.answer, inputs=inputs, outputs=[answer, status, tokens])
        submitted = question.submit(handlers.answer, inputs=inputs, outputs=[answer, status, tokens])
        stop.click(None, None, None, cancels=[event, submitted])
    return page
