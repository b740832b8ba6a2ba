"""An HTML page of predictions next to their media and ground truth, self-contained (thumbnails inline)."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from epalm.common.atomic_io import write_text_atomic
from epalm.common.errors import MediaDecodeError
from epalm.dataset.records import Sample, media_items
from epalm.dataset.tasks.task_split import TaskSplit
from epalm.models.modalities import get_modality

def _media_cell(split: TaskSplit, sample: Sample, page_dir: Path) -> str:
    cells = []
    for item in media_items(sample, split.modality):
        try:
            cells.append(get_modality(item.modality).preview_html(str(split.media_root / item.path), page_dir))
        except MediaDecodeError as error:
            cells.append(f"<em>media not readable: {html.escape(error.reason)}</em>")
    return "<br>".join(cells)


def write_html_report(path: Path, split: TaskSplit, predictions: dict[Any, str], metrics: dict[str, Any],
                      max_samples: int, title: str) -> None:
    rows = []
    for sample in [s for s in split if s.uid in predictions][:max_samples]:
        prediction = predictions[sample.uid]
        truth = ", ".join(sample.targets[:5]) if sample.targets else ""
        correct = split.kind in ("qa", "chat") and prediction.strip().lower() in {t.strip().lower() for t in sample.targets}
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
