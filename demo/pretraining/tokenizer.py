"""The demo LM's tokenizer: BPE trained with `tokenizers` on the worlds' text corpus, saved as a transformers folder.

Metaspace pre-tokenizer with prepend_scheme "always": every word carries its leading "▁", also the first word
of the text and the first word after a special token, so "red" tokenizes the same after BOS, after " . " and
after "</a>" (an answer tokenized alone at fine-tuning equals the answer inside a corpus document). Byte-level
BPE would give the first word of a text a different token from the same word after a space.
Punctuation glued to a word is split off ("circle?" -> "▁circle" "?"), so a word is the same token in a
question as in a caption or an answer: the LM can compare "is there a circle?" with the context it read.
Special tokens follow OPT: `</s>` is both BOS and EOS and the post-processor prepends it; `</a>` separates a
question from its answer.
"""
from __future__ import annotations

import string
from collections.abc import Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from epalm.demo.synthetic.text_corpus import ANSWER_SEP, EOS, tokenizer_training_lines

PAD = "<pad>"
UNK = "<unk>"
# Order fixes the ids: <pad> 0, </s> 1, <unk> 2, </a> 3.
SPECIAL_TOKENS = (PAD, EOS, UNK, ANSWER_SEP)
# Any printable ASCII character stays known (no <unk>) even when the corpus never shows it.
ALPHABET = sorted(set(string.printable) - set(string.whitespace))
# A punctuation mark right after a non-space character: isolated from the word before it (" . " stays "▁.").
GLUED_PUNCTUATION = r"(?<=[^\s▁])[^\w\s▁]"


def train_tokenizer(documents: Sequence[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A BPE tokenizer over the documents' words (special tokens taken out first, then added as whole tokens)."""
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(GLUED_PUNCTUATION), behavior="isolated"),
    ])
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=ALPHABET, show_progress=False)
    backend.train_from_iterator(tokenizer_training_lines(documents), trainer)
    bos_id = backend.token_to_id(EOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=EOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=[ANSWER_SEP], model_max_length=max_length)


def unknown_token_share(tokenizer: PreTrainedTokenizerFast, documents: Sequence[str]) -> float:
    """Share of the documents' tokens that are <unk> (0 for a tokenizer trained on them)."""
    ids = [i for row in tokenizer(list(documents), add_special_tokens=False)["input_ids"] for i in row]
    return sum(i == tokenizer.unk_token_id for i in ids) / max(1, len(ids))
