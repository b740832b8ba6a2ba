"""Batched generation on every process, predictions gathered without duplicates or drops, metrics,
and the files a run leaves: predictions and metrics JSON, an HTML page of predictions beside media."""
from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from epalm.common.atomic_io import write_text_atomic
from epalm.dataset.tasks.task_split import TaskSplit
from epalm.models.language_models.tokenizer import QA_SEPARATOR
from epalm.training.html_report import write_html_report
from epalm.training.provenance import provenance
from epalm.training.run_config import EvalConfig, RunConfig
from epalm.training.scoring import metric_name, metric_reason, score_predictions


def _write_json(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def clean_prediction(text: str) -> str:
    return " ".join(text.split())


def decode_continuations(tokenizer, new_tokens: torch.Tensor, kind: str) -> list[str]:
    """Each row's answer (or caption) as the reference extracts it: the generated text up to the first eos,
    for QA also up to a second `</a>` (a new answer begins), pads removed, other special tokens dropped."""
    stops = {tokenizer.eos_token_id}
    if kind in ("qa", "chat"):
        stops.add(tokenizer.convert_tokens_to_ids(QA_SEPARATOR))
    kept = []
    for row in new_tokens.tolist():
        end = next((i for i, token in enumerate(row) if token in stops), len(row))
        kept.append([token for token in row[:end] if token != tokenizer.pad_token_id])
    return tokenizer.batch_decode(kept, skip_special_tokens=True)


class _DropRightPaddingWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "right-padding was detected" not in record.getMessage()


@contextlib.contextmanager
def deliberate_right_padding(enabled: bool):
    """Silence transformers' per-call warning about right-padded generation while it is what was asked for."""
    if not enabled:
        yield
        return
    logger, quiet = logging.getLogger("transformers.generation.utils"), _DropRightPaddingWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


@torch.no_grad()
def keyed_by_modality(value, modality: str):
    """A one-instance batch's media tensor as `{modality: tensor}`, so a model that reads several modalities
    uses that modality's encoder and connector (chat batches are keyed already)."""
    return {modality: value} if isinstance(value, torch.Tensor) else value


def generate_predictions(
    accelerator: Accelerator, model, loader, tokenizer, cfg: EvalConfig, desc: str, kind: str, modality: str,
    seed: int = 0, between_batches: Callable[[], None] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """One `{uid, index, prediction}` per sample across all processes, and the media that failed.
    seed: sampling's (eval.do_sample), offset by the process index so that processes draw differently.
    `between_batches` is called (by every process) before each batch: the run may stop there (preemption)."""
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    sampling = cfg.sampling.generation_config()
    options = {} if sampling is None else {"generation_config": sampling}
    if cfg.do_sample:
        torch.manual_seed(seed + accelerator.process_index)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process, leave=False):
        if between_batches is not None:
            between_batches()
        if batch["valid"].any():
            text_len = batch["input_ids"].shape[1]  # the padded width: the reference's max_length counts it
            with deliberate_right_padding(cfg.padding_side == "right"):
                new_tokens = unwrapped.generate(
                    batch["input_ids"],
                    batch["attention_mask"],
                    media=keyed_by_modality(batch.get("media"), modality),
                    features=keyed_by_modality(batch.get("features"), modality),
                    media_index=batch.get("media_index"),
                    max_new_tokens=max(1, cfg.max_length - text_len),
                    num_beams=cfg.num_beams,
                    beam_score_length=cfg.beam_score_length,
                    **options,
                )
            texts = decode_continuations(tokenizer, new_tokens, kind)
        else:  # every medium of this batch was unreadable: nothing to generate from
            texts = [""] * len(batch["uids"])
        batch_rows = [
            {"uid": uid, "index": index, "valid": valid, "prediction": clean_prediction(text)}
            for uid, index, valid, text in zip(batch["uids"], batch["indices"], batch["valid"].tolist(), texts)
        ]
        # Per batch: on the last one, gather_for_metrics drops the samples the sharded sampler repeated
        # to give every process a full batch.
        rows.extend(accelerator.gather_for_metrics(batch_rows, use_gather_object=True))
        skipped.extend(batch["skipped"])
    return rows, sorted(set(gather_object(skipped)))


def skipped_line(name: str, count: int, total: int, skipped: list[str], shown: int = 3) -> str:
    """'test: 2 of 18 samples have no prediction, their media could not be read: a.jpg: file not found; ...'."""
    more = f"; and {len(skipped) - shown} more (all in the metrics file)" if len(skipped) > shown else ""
    return (f"{name}: {count} of {total} samples have no prediction, their media could not be read: "
            f"{'; '.join(skipped[:shown])}{more}")


def evaluate_split(
    accelerator: Accelerator,
    model,
    loader,
    tokenizer,
    split: TaskSplit,
    cfg: RunConfig,
    out_dir: Path,
    name: str,
    between_batches: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Generate, gather, score and write `<name>_predictions.json`, `<name>_metrics.json`, `<name>.html`.

    Returns the metrics on every process (scored once, on the main process)."""
    rows, skipped = generate_predictions(accelerator, model, loader, tokenizer, cfg.eval, f"eval {name}", split.kind,
                                         split.modality, seed=cfg.seed, between_batches=between_batches)
    metrics: dict[str, Any] | None = None
    if accelerator.is_main_process:
        indices = sorted(row["index"] for row in rows)
        if indices != list(range(len(split))):
            raise RuntimeError(f"evaluation of {name} returned {len(rows)} rows for {len(split)} samples")
        valid = [row for row in rows if row["valid"]]
        predictions = {row["uid"]: row["prediction"] for row in valid}
        metric = metric_name(cfg.task.reader, split.kind, cfg.task.metric)
        reported, why = metric_reason(cfg.task.reader, split, cfg.task.metric)
        with warnings.catch_warnings():  # the samples without a prediction are named below, with the reason
            warnings.filterwarnings("ignore", message=".*ground-truth ids have no prediction")
            metrics = score_predictions(split, predictions, metric, cfg.task.vqa_eval_version) if predictions else {
                "main": {"name": reported, "value": None}
            }
        metrics.update(
            split=split.split, num_samples=len(split), num_predictions=len(predictions),
            num_skipped_media=len(rows) - len(valid), skipped_media=skipped[:20], provenance=provenance(cfg),
            metric_reason=why,
        )
        if len(valid) < len(rows):
            accelerator.print(skipped_line(name, len(rows) - len(valid), len(rows), skipped))
        out_dir.mkdir(parents=True, exist_ok=True)
        key = {"qa": "question_id", "chat": "id"}.get(split.kind, "image_id")
        value = "caption" if split.kind == "caption" else "answer"
        _write_json(out_dir / f"{name}_predictions.json", [{key: uid, value: text} for uid, text in predictions.items()])
        _write_json(out_dir / f"{name}_metrics.json", metrics)
        write_html_report(out_dir / f"{name}.html", split, predictions, metrics, cfg.eval.html_samples, title=name)
    holder = [metrics]
    broadcast_object_list(holder)
    return holder[0]
