"""Has the text-only LM learned to read its context? Measured on held-out scenes with greedy decoding.

A frozen LM that never needed earlier context ignores eP-ALM's visual slot (demo-notes.md), so the check is:
  caption   "caption . question</a>" -> answer: the answer is only in the context, should be near perfect;
  keywords  "values . question</a>"  -> answer: the corpus's terse context, closer to one visual token;
  blind     "question</a>" alone after BOS: no context, should stay near chance (the demo's blind baseline);
and captions generated from BOS alone should be well-formed (state one value of every attribute of a world).
"""
from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import OPTForCausalLM, PreTrainedTokenizerFast

from epalm.dataset.metrics.attribute_accuracy import parse_attributes
from epalm.demo.synthetic.text_corpus import CONTEXT_SEP, qa_prompt
from epalm.demo.synthetic.worlds import WORLDS, World, discover_worlds

CONDITIONS = ("caption", "keywords", "blind")
# Where a caption generated from BOS ends: at EOS, or where the corpus would go on with " . <more>".
CAPTION_END = re.compile(r"\s\.(?:\s|$)")


@dataclass(frozen=True)
class HeldOutQuestion:
    world: str
    question_type: str
    question: str
    answer: str
    caption: str
    keywords: str

    def prompt(self, condition: str) -> str:
        context = {"caption": self.caption + CONTEXT_SEP, "keywords": self.keywords + CONTEXT_SEP, "blind": ""}
        return context[condition] + qa_prompt(self.question)


def held_out_questions(seed: int, scenes_per_world: int, worlds: Sequence[str]) -> list[HeldOutQuestion]:
    """Every candidate question of fresh scenes (an rng stream apart from the corpus's), with two contexts."""
    discover_worlds()  # named worlds register on import
    rng = random.Random(f"demo-lm-held-out/{seed}")
    items = []
    for name in worlds:
        world: World = WORLDS.build(name)
        for _ in range(scenes_per_world):
            scene = world.sample_scene(rng)
            caption = rng.choice(world.captions(scene, rng))
            values = list(world.attributes(scene).values())
            rng.shuffle(values)
            for qa in world.questions(scene, rng):
                items.append(HeldOutQuestion(name, qa.question_type, qa.question, qa.answer, caption, " ".join(values)))
    return items


@torch.no_grad()
def generate(model: OPTForCausalLM, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_new_tokens: int,
             sample: bool = False, batch_size: int = 256, desc: str = "generating", progress: bool = True) -> list[str]:
    """The text each prompt is continued with (greedy, or sampled at temperature 1), up to EOS."""
    outputs = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        batch = tokenizer(list(texts[start:start + batch_size]), add_special_tokens=True, padding=True,
                          padding_side="left", return_tensors="pt")
        decoding = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0) if sample else dict(do_sample=False)
        generated = model.generate(**batch, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id, **decoding)
        new_tokens = generated[:, batch["input_ids"].shape[1]:]
        outputs += [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return outputs


def qa_accuracy(items: Sequence[HeldOutQuestion], predictions: Sequence[str]) -> dict:
    """Overall, per world and per (world, question type) exact-match accuracy."""
    hits: dict[str, list[int]] = defaultdict(list)
    for item, prediction in zip(items, predictions, strict=True):
        correct = int(prediction == item.answer)
        for key in ("overall", item.world, f"{item.world}/{item.question_type}"):
            hits[key].append(correct)
    return {key: round(sum(v) / len(v), 4) for key, v in sorted(hits.items())}


def majority_baseline(items: Sequence[HeldOutQuestion]) -> dict:
    """What always giving each question type's most frequent answer scores, and uniform guessing among its answers."""
    by_type: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for item in items:
        by_type[(item.world, item.question_type)][item.answer] += 1
    majority = sum(c.most_common(1)[0][1] for c in by_type.values()) / len(items)
    uniform = sum(sum(c.values()) / len(c) for c in by_type.values()) / len(items)
    return {"majority_answer": round(majority, 4), "uniform_guess": round(uniform, 4)}


def generated_caption(text: str) -> str:
    return CAPTION_END.split(text, maxsplit=1)[0].strip()


def well_formed_for(caption: str, worlds: Sequence[str]) -> list[str]:
    """The worlds whose every attribute the caption states with exactly one value ([] when none fits).

    Worlds sharing words can both fit ("a red circle that moves up and stays red" states the image world's
    count, colour and shape too, and "up" is no side, so it fits only the video world)."""
    discover_worlds()
    fits = []
    for name in worlds:
        stated = parse_attributes(caption, WORLDS.build(name).attribute_vocabulary())
        if all(len(values) == 1 for values in stated.values()):
            fits.append(name)
    return fits


def evaluate_lm(model: OPTForCausalLM, tokenizer: PreTrainedTokenizerFast, worlds: Sequence[str], seed: int,
                scenes_per_world: int, n_samples: int, progress: bool = True) -> dict:
    model.eval()
    items = held_out_questions(seed, scenes_per_world, worlds)
    report: dict = {"held_out_questions": len(items), "chance": majority_baseline(items), "qa_accuracy": {}}
    for condition in CONDITIONS:
        predictions = generate(model, tokenizer, [item.prompt(condition) for item in items], max_new_tokens=8,
                               desc=f"QA ({condition})", progress=progress)
        report["qa_accuracy"][condition] = qa_accuracy(items, predictions)
    greedy = generated_caption(generate(model, tokenizer, [""], max_new_tokens=48, progress=False)[0])
    torch.manual_seed(seed)
    samples = [generated_caption(text) for text in generate(
        model, tokenizer, [""] * n_samples, max_new_tokens=48, sample=True, desc="captions", progress=progress)]
    fits = [well_formed_for(caption, worlds) for caption in samples]
    report["captions_from_bos"] = {
        "greedy": greedy,
        "greedy_well_formed_for": well_formed_for(greedy, worlds),
        "sampled": n_samples,
        "sampled_well_formed": round(sum(bool(fit) for fit in fits) / max(1, n_samples), 4),
        "sampled_well_formed_for": dict(Counter("+".join(fit) or "none" for fit in fits)),
        "sampled_examples": samples[:5],
    }
    return report
