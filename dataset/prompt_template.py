"""The QA prompt template: how a question becomes the text the LM continues with its answer.

`{question}` is replaced by the question as the data gives it; everything else is literal text (no other
braces are interpreted, so a question may contain any character). Captions have no question: their input
is BOS alone and the template does not apply.

Default `{question}</a>`. The reference appends a `?` to every question, and the VL-T5 annotation files
already end their questions with one, so its released checkpoints were trained and scored on
`...??</a>`: `REFERENCE_QA_TEMPLATE` reproduces that (configs/compat/reference_eval.yaml).
"""
from __future__ import annotations

from epalm.common.errors import ConfigError
from epalm.models.language_models.tokenizer import QA_SEPARATOR

QUESTION_FIELD = "{question}"
DEFAULT_QA_TEMPLATE = QUESTION_FIELD + QA_SEPARATOR
REFERENCE_QA_TEMPLATE = QUESTION_FIELD + "?" + QA_SEPARATOR


def check_prompt_template(template: str) -> str:
    """The template itself, or a ConfigError saying what a template must contain."""
    if not isinstance(template, str) or QUESTION_FIELD not in template:
        raise ConfigError(
            f"prompt_template {template!r} must contain {QUESTION_FIELD} (where the question goes), "
            f"e.g. {DEFAULT_QA_TEMPLATE!r} (default) or {REFERENCE_QA_TEMPLATE!r} (the reference's)"
        )
    return template


def fill_prompt_template(template: str, question: str) -> str:
    return template.replace(QUESTION_FIELD, question)
