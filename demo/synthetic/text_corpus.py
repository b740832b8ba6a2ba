"""Text-only pretraining documents for the demo's tiny LM, drawn from the worlds' scenes (no media, ever).

Why context-grounded text (docs/demo_data.md, /work/shared/docs/demo-notes.md): a frozen LM pretrained on
captions and bare QA strings never needed to read earlier context, so it ignored the visual slot, even with
oracle features. Documents where a question follows a description of the scene, and only that description
holds the answer, teach it to read its context, which the visual slot then takes the place of.

Text conventions, shared with fine-tuning (use these constants and helpers, not literals):
    QA target        question + ANSWER_SEP + answer + EOS        e.g. "how many shapes are there?</a>2</s>"
    caption target   caption + EOS
    corpus context   context + CONTEXT_SEP + <one or more targets>  e.g. "two red circles on the left . what
                     colour are the shapes?</a>red</s>which side are the shapes on?</a>left</s>"
Every answer is followed by EOS, as at fine-tuning, so the LM learns to stop after the answer. One document is
one training sequence: start it with BOS, and do not split or pack documents at EOS (later QAs need the context).
"""
from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

from epalm.common.atomic_io import write_text_atomic
from epalm.demo.synthetic.worlds import WORLDS, World, discover_worlds

EOS = "</s>"
ANSWER_SEP = "</a>"
CONTEXT_SEP = " . "
SPECIAL_TOKENS = (EOS, ANSWER_SEP)

# Share of each document kind:
#   caption     a caption alone (the captioning target)
#   caption_qa  a caption, then 1-3 QAs about the same scene (answers only from the caption)
#   paraphrase  a caption, then another paraphrase of the same scene (continue consistently with the context)
#   keywords_qa the scene's attribute values in random order, then 1-3 QAs: a terse context, closer to what
#               a single visual token can carry, still the only source of the answers
DEFAULT_MIX = {"caption": 0.2, "caption_qa": 0.5, "paraphrase": 0.15, "keywords_qa": 0.15}
MAX_QAS_PER_DOCUMENT = 3


def qa_prompt(question: str) -> str:
    """The generation input of a QA: the answer is the text the LM writes after it."""
    return question + ANSWER_SEP


def qa_text(question: str, answer: str) -> str:
    return question + ANSWER_SEP + answer + EOS


def caption_text(caption: str) -> str:
    return caption + EOS


def build_text_corpus(seed: int, n_documents: int, worlds: Sequence[str | World] | None = None,
                      mix: dict[str, float] | None = None) -> list[str]:
    """`n_documents` documents, deterministic from `seed`; worlds are drawn uniformly (default: all registered)."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = set(mix) - set(DEFAULT_MIX)
    if unknown or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
        raise ValueError(f"mix must give non-negative weights to some of {sorted(DEFAULT_MIX)}, got {mix}")
    instances = _resolve(worlds)
    rng = random.Random(f"text-corpus/{seed}")
    kinds, weights = list(mix), list(mix.values())
    documents = []
    for _ in range(n_documents):
        world = rng.choice(instances)
        kind = rng.choices(kinds, weights)[0]
        documents.append(_document(world, kind, rng))
    return documents


def _resolve(worlds: Sequence[str | World] | None) -> list[World]:
    registered = discover_worlds()  # named worlds register on import
    if worlds is None:
        worlds = registered
    instances = [WORLDS.build(w) if isinstance(w, str) else w for w in worlds]
    if not instances:
        raise ValueError("no world to draw documents from")
    return instances


def _document(world: World, kind: str, rng: random.Random) -> str:
    scene = world.sample_scene(rng)
    captions = world.captions(scene, rng)
    if kind == "caption":
        return caption_text(captions[0])
    if kind == "paraphrase":
        return captions[0] + CONTEXT_SEP + caption_text(captions[1])
    if kind == "keywords_qa":
        values = list(world.attributes(scene).values())
        rng.shuffle(values)
        context = " ".join(values)
    else:
        context = captions[0]
    qas = world.questions(scene, rng)
    chosen = rng.sample(qas, rng.randint(1, min(MAX_QAS_PER_DOCUMENT, len(qas))))
    return context + CONTEXT_SEP + "".join(qa_text(qa.question, qa.answer) for qa in chosen)


def tokenizer_training_lines(documents: Sequence[str]) -> list[str]:
    """The documents with the special tokens taken out (a tokenizer trainer adds those itself), one per line."""
    pattern = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
    return [" ".join(pattern.sub(" ", doc).split()) for doc in documents]


def write_tokenizer_training_text(path: str | Path, documents: Sequence[str]) -> Path:
    path = Path(path)
    write_text_atomic(path, "\n".join(tokenizer_training_lines(documents)) + "\n")
    return path
