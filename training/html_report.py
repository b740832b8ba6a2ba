"""An HTML page of predictions next to their media and ground truth, self-contained (thumbnails inline)."""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dataset.media.errors import MediaDecodeError
from dataset.media.image import load_image
from dataset.media.video import load_video_frames
from dataset.records import Sample
from dataset.tasks.task_split import TaskSplit
from models.atomic_io import write_text_atomic

THUMBNAIL = 160


def _png_data_uri(image: Image.Image) -> str:
    image = image.copy()
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    if max(image.size) < 96:  # tiny synthetic images: enlarge, sharp pixels
        scale = 96 // max(image.size) + 1
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _media_cell(split: TaskSplit, sample: Sample, page_dir: Path) -> str:
    path = str(split.media_path(sample))
    try:
        if split.modality == "image":
            return f'<img src="{_png_data_uri(load_image(path))}">'
        if split.modality == "video":
            frames = load_video_frames(path, 4, train=False)
            strip = Image.fromarray(np.concatenate(list(frames), axis=1))
            return f'<img src="{_png_data_uri(strip)}">'
        return f'<audio controls src="{html.escape(os.path.relpath(path, page_dir))}"></audio>'
    except MediaDecodeError as error:
        return f"<em>media not readable: {html.escape(error.reason)}</em>"


def write_html_report(path: Path, split: TaskSplit, predictions: dict[Any, str], metrics: dict[str, Any],
                      max_samples: int, title: str) -> None:
    rows = []
    for sample in [s for s in split if s.uid in predictions][:max_samples]:
        prediction = predictions[sample.uid]
        truth = ", ".join(sample.targets[:5]) if sample.targets else ""
        correct = split.kind == "qa" and prediction.strip().lower() in {t.strip().lower() for t in sample.targets}
        question = f"<b>Q:</b> {html.escape(sample.prompt)}<br>" if sample.prompt else ""
        rows.append(
            f"<tr><td>{_media_cell(split, sample, path.parent)}</td><td>{question}"
            f'<b>Predicted:</b> <span class="{"ok" if correct else ""}">{html.escape(prediction)}</span><br>'
            f"<b>Ground truth:</b> {html.escape(truth)}</td></tr>"
        )
    main = metrics.get("main", {})
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{padding:6px;border-bottom:1px solid #ddd;vertical-align:top}}
img{{image-rendering:pixelated}} .ok{{color:#080;font-weight:bold}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{html.escape(split.task)} / {html.escape(split.split)}: {len(predictions)} predictions;
{html.escape(str(main.get("name")))} = {html.escape(str(main.get("value")))}</p>
<table>{"".join(rows)}</table></body></html>"""
    write_text_atomic(path, page)
