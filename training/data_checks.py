"""What a run says about its data before any model is built: a split it cannot use is an error (one `error:` line
naming the first files and the reason, exit status 2), media that fail are counted and named at the start (not
only in a metrics file at the end), and images a squashing resize will distort are counted, once per split.

`task.check_media` (default on) probes every media file of each split (dataset/media_survey.py: an image's header,
about 30 us a file; other modalities: the file is there); `task.max_unreadable_share` is the share of a split's
files that may fail before the line is a `warning:` rather than a `note:`. Training leaves out the samples whose
media failed; evaluation keeps them (they are reported as skipped, one row each).
"""
from __future__ import annotations

from epalm.common.command_line import is_main_process
from epalm.common.errors import DataFormatError
from epalm.dataset.media_survey import MediaSurvey, survey_split
from epalm.dataset.tasks.task_split import TaskSplit
from epalm.models.encoders import ENCODERS
from epalm.training.run_config import RunConfig


def say(text: str) -> None:
    """A line on the console, once per launch (rank 0): the splits are read by every process."""
    if is_main_process():
        print(text, flush=True)


def no_sample_reason(cfg: RunConfig, split: TaskSplit, read: int, train: bool) -> str:
    """Why a split ended up empty, for its error line."""
    where = f"{split.annotation_file}: split '{split.split}'"
    limit, key = (cfg.task.max_train_samples, "max_train_samples") if train else (cfg.task.max_eval_samples,
                                                                                   "max_eval_samples")
    if read == 0:
        return f"{where} has no entry"
    if limit == 0:
        return f"{where}: task.{key} is 0"
    return (f"{where}: none of its {read} samples has a target to train on (an empty `label` and no `answer`: "
            "docs/datasets.md)")


def squashes(cfg: RunConfig, modality: str) -> bool:
    """Whether the encoder of `modality` resizes a picture to a square whatever its shape (timm's ViTs, as the
    reference does) rather than cropping it: its class says so with `test_resize = "squash"`."""
    section = cfg.model.encoders.get(modality)
    return section is not None and getattr(ENCODERS.get(section.type), "test_resize", "") == "squash"


def squash_effect(cfg: RunConfig, survey: MediaSurvey, why: str = "") -> str:
    """': the <type> encoder squashes them to a square<why>' when an encoder of the survey's media squashes, else ''."""
    squashing = [modality for modality in survey.files if squashes(cfg, modality)]
    return f": the {cfg.model.encoders[squashing[0]].type} encoder squashes them to a square{why}" if squashing else ""


def check_split_media(cfg: RunConfig, split: TaskSplit, train: bool) -> MediaSurvey | None:
    """Survey the split's media; raise when no sample is left, report failures and squashed images, and leave the
    failed samples out of a training split. None when the check is off or the model reads no media."""
    if not cfg.task.check_media or not cfg.model.visual or len(split) == 0:
        return None
    survey = survey_split(split, show_progress=is_main_process())
    name = f"{split.task} {split.split}"
    if survey.failures:
        usable = [sample for sample in split if survey.usable(sample)]
        if not usable:
            kind = "training sample" if train else "sample to evaluate"
            raise DataFormatError(f"{name}: no usable {kind}: {survey.failure_summary()}")
        share = len(survey.failures) / max(1, survey.total)
        level = "warning" if share > cfg.task.max_unreadable_share else "note"
        left_out = ""
        if train:
            left_out = f"; {len(split) - len(usable)} training sample(s) left out"
            split.samples = usable
        say(f"{level}: {name}: {survey.failure_summary()}{left_out}")
    shapes = survey.shape_summary()
    effect = squash_effect(cfg, survey, " (no crop: docs/encoders.md)")
    if shapes and effect:
        say(f"{name}: {shapes}{effect}")
    return survey
