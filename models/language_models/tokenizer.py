"""The LM's tokenizer, with the QA separator eP-ALM's text formats need."""
from __future__ import annotations

from transformers import AutoTokenizer

from epalm.common.errors import loading

QA_SEPARATOR = "</a>"


def load_tokenizer(name: str):
    """The LM's tokenizer with the QA separator `</a>` and a pad token (eos where the LM has none)."""
    with loading("tokenizer", name):
        tokenizer = AutoTokenizer.from_pretrained(name)
    if QA_SEPARATOR not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [QA_SEPARATOR]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
