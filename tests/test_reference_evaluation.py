"""Released checkpoints scored as published: the reference's prompt, right padding and 4.20 beam scores
(configs/compat/reference_eval.yaml), checked against the spec written out by hand; our default left
padding stays batch-independent."""
from __future__ import annotations

import math

import pytest
import torch

from epalm.common.config_io import ConfigError
from epalm.dataset.collate import TextCollator
from epalm.models.language_models.tokenizer import load_tokenizer
from epalm.models.legacy_beam_search import legacy_beam_search
import epalm.training.run as entry
from tests.test_injection import reference_forward_opt
from tests.tiny_models import VOCAB, images, tiny_model
from tests.tiny_run import build_tiny_setup, tiny_config
from epalm.training.data import build_loader
from epalm.training.evaluator import decode_continuations
from epalm.training.run_config import resolve_config

PAD, BOS = 1, 2
OVERLAY = "configs/compat/reference_eval.yaml"


def padded(rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch as a tokenizer pads it: pad id 1, mask 0 on the pads."""
    width = max(len(r) for r in rows)
    ids, mask = [], []
    for row in rows:
        pad = width - len(row)
        ids.append([PAD] * pad + row if side == "left" else row + [PAD] * pad)
        mask.append([0] * pad + [1] * len(row) if side == "left" else [1] * len(row) + [0] * pad)
    return torch.tensor(ids), torch.tensor(mask)


def questions(seed: int, lengths: list[int]) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [[BOS] + torch.randint(3, VOCAB, (n - 1,), generator=g).tolist() for n in lengths]


# --- (a) the padding side changes what an epalm-mode model answers ----------------------------------


def test_right_and_left_padding_continue_a_short_question_differently():
    """A 3-token and an 8-token question in one batch: with right padding the short one's answer is read
    after five pads (which the visual slot attends to); left-padded it equals the question answered alone."""
    model = tiny_model("opt", seed=0, injection_mode="epalm")
    short, long = questions(100, [3, 8])
    media = images(2, seed=0)
    kwargs = dict(media=media, max_new_tokens=5, min_new_tokens=5)
    left = model.generate(*padded([short, long], "left"), **kwargs)
    right = model.generate(*padded([short, long], "right"), **kwargs)
    alone = model.generate(*padded([short], "left"), media=media[:1], max_new_tokens=5, min_new_tokens=5)
    assert torch.equal(left[0], alone[0])
    assert not torch.equal(left[0], right[0])
    assert torch.equal(left[1], right[1])  # the longest question has no pad: both sides agree


# --- (b) the compatibility path equals the spec's computation written out by hand --------------------


def hand_written_step(model, features: torch.Tensor):
    """Next-token logits of the spec's equations (tests/test_injection.py), rows of one sample repeated for beams."""

    def step(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows = features.repeat_interleave(ids.shape[0] // features.shape[0], dim=0)
        return reference_forward_opt(model, ids, mask, rows)[:, -1]

    return step


def hand_written_greedy(step, ids, mask, max_new_tokens: int, eos: int) -> torch.Tensor:
    """The reference's greedy generate: every step reads the last column, the mask grows by a 1, finished
    rows continue with pads."""
    running = torch.ones(ids.shape[0], dtype=torch.bool)
    new = []
    for _ in range(max_new_tokens):
        token = step(ids, mask).argmax(-1)
        token = torch.where(running, token, torch.full_like(token, PAD))
        new.append(token)
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(token)[:, None]], 1)
        running &= token != eos
        if not running.any():
            break
    return torch.stack(new, 1)


# With and without project_in; a token these random models often generate stands in for eos, so that rows
# and beams finish at different steps.
@pytest.mark.parametrize(("kind", "eos"), [("opt", 26), ("opt-post-ln", 88)])
def test_reference_generation_equals_the_hand_written_spec(kind, eos):
    """Right-padded mixed-length questions, `epalm` mode: greedy and 3-beam continuations (4.20 beam scores)
    equal the spec's forward run step by step by hand."""
    model = tiny_model(kind, seed=3, injection_mode="epalm", mlp=True)
    model.eos_token_id = eos
    ids, mask = padded(questions(7, [3, 9, 5]), "right")
    features = torch.randn(3, 2, model.encoder_for().hidden_size, generator=torch.Generator().manual_seed(3))
    step = hand_written_step(model, features)
    with torch.no_grad():
        greedy = model.generate(ids, mask, features=features, max_new_tokens=8)
        torch.testing.assert_close(greedy, hand_written_greedy(step, ids, mask, 8, eos), rtol=0, atol=0)
        beams = model.generate(ids, mask, features=features, max_new_tokens=8, num_beams=3,
                               beam_score_length="sequence")
        by_hand = legacy_beam_search(step, ids, mask, 3, 8, eos_token_id=eos, pad_token_id=PAD)
    assert torch.equal(beams, by_hand)
    assert (beams == eos).any(), "no beam finished early: the test would not exercise the beam scores"


def test_the_beam_scores_change_an_answer_of_a_tiny_model():
    """The opt-post-ln case above, where the divisor decides between finished beams (counting our prefix
    placeholders in it fails that test): transformers' own beam scores, the default, answer its first
    question differently."""
    model = tiny_model("opt-post-ln", seed=3, injection_mode="epalm", mlp=True)
    model.eos_token_id = 88
    ids, mask = padded(questions(7, [3, 9, 5]), "right")
    features = torch.randn(3, 2, model.encoder_for().hidden_size, generator=torch.Generator().manual_seed(3))
    kwargs = dict(features=features, max_new_tokens=8, num_beams=3)
    legacy = model.generate(ids, mask, beam_score_length="sequence", **kwargs)
    current = model.generate(ids, mask, **kwargs)
    assert legacy[0, :2].tolist() == [73, 88] and current[0, :2].tolist() != [73, 88]


class MarkovToyLM:
    """Next-token log-probabilities set by the last token: a question Q, then answer A (logP -0.693) ending
    (eos -0.307, total -1.0), or B C (-0.9, -0.2) ending (-0.2, total -1.3); filler tokens absorb the rest."""

    EOS, A, B, C, Q = 1, 2, 3, 4, 5
    VOCAB = 12

    def __init__(self):
        self.table = torch.full((self.VOCAB, self.VOCAB), -1e4)
        self.set(self.Q, {self.A: -0.693147, self.B: -0.9})
        self.set(self.A, {self.EOS: -0.306853})
        self.set(self.B, {self.C: -0.2})
        self.set(self.C, {self.EOS: -0.2})
        for filler in range(6, self.VOCAB):
            self.set(filler, {})

    def set(self, token: int, log_probs: dict[int, float]) -> None:
        rest = 1 - sum(math.exp(v) for v in log_probs.values())
        row = torch.full((self.VOCAB,), math.log(rest / 6))
        row[:6] = -1e4
        for target, value in log_probs.items():
            row[target] = value
        self.table[token] = row

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.table[ids[:, -1]]


def test_legacy_beam_scores_divide_by_the_whole_sequence():
    """Finished answers: `A` (log-prob -1.0, one token) and `B C` (-1.3, two tokens). transformers 4.20
    divides by the question's and the answer's tokens (eos not counted): after a 10-token question
    -1.0 / 11 > -1.3 / 12 and `A` wins; after a 2-token one -1.3 / 4 > -1.0 / 3 and `B C` wins.
    (Dividing by the generated tokens with eos, as transformers does now, -1.3 / 3 > -1.0 / 2: `B C` always.)"""
    toy = MarkovToyLM()

    def search(question_len: int, prefix: int = 0, uncounted: int = 0) -> list[list[int]]:
        ids = torch.cat([torch.zeros(1, prefix, dtype=torch.long), torch.full((1, question_len), toy.Q)], 1)
        return legacy_beam_search(toy, ids, torch.ones_like(ids), num_beams=2, max_new_tokens=4,
                                  eos_token_id=toy.EOS, pad_token_id=0, uncounted=uncounted).tolist()

    assert search(10) == [[toy.A, toy.EOS]]
    assert search(2) == [[toy.B, toy.C, toy.EOS]]
    # Leading positions that are not the reference's (our soft-prompt and slot placeholders) do not count ...
    assert search(2, prefix=6, uncounted=6) == [[toy.B, toy.C, toy.EOS]]
    # ... counted, they would make it an 8-token question.
    assert search(2, prefix=6) == [[toy.A, toy.EOS]]


# --- (c) the default path: an answer does not depend on the other questions of its batch -------------


@pytest.mark.parametrize("mode", ["epalm", "causal"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_answers_do_not_depend_on_the_batch(mode, num_beams):
    model = tiny_model("opt", seed=2, injection_mode=mode)
    target, *others = questions(11, [4, 9, 2, 6])
    media = images(4, seed=5)
    kwargs = dict(max_new_tokens=6, num_beams=num_beams, min_new_tokens=6)
    alone = model.generate(*padded([target], "left"), media=media[:1], **kwargs)[0]
    for companions in ([others[0]], [others[1], others[2]], others):
        batch = [target, *companions]
        out = model.generate(*padded(batch, "left"), media=media[: len(batch)], **kwargs)
        assert torch.equal(out[0], alone)


# --- (d) the template and the padding side reach the tokenizer, in training and evaluation ----------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("reference_eval"))


@pytest.fixture(scope="module")
def tokenizer(setup):
    return load_tokenizer(str(setup["tokenizer"]))


def _items(prompts, targets):
    return [{"index": i, "uid": i, "prompt": p, "target": t, "skipped": None} for i, (p, t) in
            enumerate(zip(prompts, targets))]


def test_collator_fills_the_template_in_training_and_evaluation(tokenizer):
    template = "{question}?</a>"
    items = _items(["how many shapes are there", "is there a circle?"], ["2", "no"])
    expected = [tokenizer(item["prompt"] + "?</a>")["input_ids"] for item in items]
    assert expected[0] != tokenizer(items[0]["prompt"] + "</a>")["input_ids"]  # the template shows in the ids
    train = TextCollator(tokenizer, "qa", train=True, prompt_template=template)(items)
    for row, prompt in enumerate(expected):
        assert train["input_ids"][row, : len(prompt)].tolist() == prompt
        assert (train["labels"][row, : len(prompt)] == -100).all()
    right = TextCollator(tokenizer, "qa", train=False, prompt_template=template, padding_side="right")(items)
    for row, prompt in enumerate(expected):
        n = len(prompt)
        assert right["input_ids"][row, :n].tolist() == prompt and right["attention_mask"][row, :n].all()
        assert not right["attention_mask"][row, n:].any()
    assert len(expected[0]) != len(expected[1])  # so that one row is padded
    left = TextCollator(tokenizer, "qa", train=False, prompt_template=template)(items)
    for row, prompt in enumerate(expected):
        assert left["input_ids"][row, -len(prompt):].tolist() == prompt
    # Captions have no question: BOS alone, whatever the template.
    caption = TextCollator(tokenizer, "caption", train=False, prompt_template=template, padding_side="right")
    assert caption(_items(["", ""], [None, None]))["input_ids"].tolist() == [[tokenizer.bos_token_id]] * 2


class _Items(torch.utils.data.Dataset):
    def __init__(self, items, kind):
        self.items, self.split = items, type("Split", (), {"kind": kind})()

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_the_overlay_reaches_the_data_loaders(setup, tokenizer, tmp_path):
    cfg = resolve_config(["--config", str(tiny_config(setup, tmp_path / "c.yaml")), "--config", OVERLAY])
    assert (cfg.task.prompt_template, cfg.eval.padding_side, cfg.model.injection_mode) == (
        "{question}?</a>", "right", "epalm")
    items = _items(["is there a circle", "how many red shapes are there"], ["yes", "2"])
    prompts = sorted(tokenizer(item["prompt"] + "?</a>")["input_ids"] for item in items)
    assert prompts != sorted(tokenizer(item["prompt"] + "</a>")["input_ids"] for item in items)
    for train in (True, False):
        batch = next(iter(build_loader(_Items(items, "qa"), tokenizer, cfg, train=train)))
        # Each row starts with one of the filled prompts (training shuffles the rows).
        starts = [next((p for p in prompts if ids[: len(p)] == p), None) for ids in batch["input_ids"].tolist()]
        assert None not in starts and sorted(starts) == prompts
        assert batch["attention_mask"][:, 0].all() and not batch["attention_mask"][:, -1].all()  # right-padded


def test_template_and_padding_are_checked(setup, tmp_path):
    config = str(tiny_config(setup, tmp_path / "c.yaml"))
    with pytest.raises(ConfigError, match=r"prompt_template .* must contain \{question\}"):
        resolve_config(["--config", config, "--set", "task.prompt_template=Q?</a>"])
    with pytest.raises(ConfigError, match="padding_side"):
        resolve_config(["--config", config, "--set", "eval.padding_side=middle"])
    with pytest.raises(ConfigError, match="beam_score_length"):
        resolve_config(["--config", config, "--set", "eval.beam_score_length=mean"])


def test_answer_is_the_text_up_to_eos_or_a_new_separator(tokenizer):
    sep, eos, pad = tokenizer.convert_tokens_to_ids("</a>"), tokenizer.eos_token_id, tokenizer.pad_token_id
    two, red = tokenizer.convert_tokens_to_ids("2"), tokenizer.convert_tokens_to_ids("red")
    rows = torch.tensor([[two, eos, red, pad], [red, sep, two, eos], [pad, two, red, pad]])
    assert decode_continuations(tokenizer, rows, "qa") == ["2", "red", "2 red"]
    assert decode_continuations(tokenizer, rows, "caption") == ["2", "red 2", "2 red"]


def test_reference_evaluation_runs_end_to_end(setup, tmp_path):
    """--evaluate with the overlay on the tiny setup: every test question gets a prediction, scored with the
    2017 VQA evaluator, and the run's config records the reference's settings."""
    config = str(tiny_config(setup, tmp_path / "c.yaml"))
    result = entry.main(["--config", config, "--config", OVERLAY, "--output_dir", str(tmp_path / "eval"),
                         "--evaluate", "--set", "eval.max_length=16"])
    test = result["test"]
    assert test["num_samples"] == test["num_predictions"] == 13 * 2
    assert test["version"] == "2017"
    saved = (tmp_path / "eval" / "config.yaml").read_text()
    assert "padding_side: right" in saved and "beam_score_length: sequence" in saved
