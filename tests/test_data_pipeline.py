"""From samples to batches: deterministic augmentation, target sampling, the collator's text formats."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from epalm.dataset.collate import TextCollator
from epalm.dataset.media_dataset import MediaTextDataset, choose_target
from epalm.dataset.records import Sample
from epalm.dataset.tasks import TASK_READERS
from epalm.models.encoders import build_encoder
from epalm.models.modalities import get_modality
from tests.tiny_models import TINY_VIT
from tests.tiny_run import build_tiny_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_tiny_setup(tmp_path_factory.mktemp("pipeline"))


@pytest.fixture(scope="module")
def tokenizer(setup):
    from epalm.models.language_models.tokenizer import load_tokenizer

    return load_tokenizer(str(setup["tokenizer"]))


def test_augmented_items_depend_on_seed_epoch_and_index_only(setup):
    split = TASK_READERS.build("vqa_v2", setup["data"], "karpathy_train")
    encoder = build_encoder(TINY_VIT)
    dataset = MediaTextDataset(split, True, 7, {"image": get_modality("image").preprocessor(encoder, TINY_VIT, True)})
    dataset.set_epoch(3)
    first = [dataset[i]["media"] for i in range(12)]
    torch.manual_seed(123), random.seed(5), np.random.seed(9)  # disturb every global RNG
    again = [dataset[i]["media"] for i in range(12)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    dataset.set_epoch(4)
    assert any(not torch.equal(a, dataset[i]["media"]) for i, a in enumerate(first))


def test_vqa_targets_follow_label_scores():
    sample = Sample(uid=1, media="x.jpg", prompt="q", targets=["two", "three"], target_weights=[0.9, 0.3])
    rng = random.Random(0)
    picks = [choose_target(sample, rng) for _ in range(4000)]
    assert abs(picks.count("two") / len(picks) - 0.75) < 0.03


def _items(prompts, targets):
    return [{"index": i, "uid": i, "prompt": p, "target": t, "skipped": None} for i, (p, t) in
            enumerate(zip(prompts, targets))]


def test_training_batch_labels_answer_only_or_all_tokens(tokenizer):
    items = _items(["how many shapes are there?", "what colour are the shapes?"], ["2", "red"])
    batch = TextCollator(tokenizer, "qa", train=True, loss_tokens="answer")(items)
    sep = tokenizer.convert_tokens_to_ids("</a>")
    for row in range(2):
        ids, labels, mask = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        assert ids[0] == tokenizer.bos_token_id  # BOS first, right padding
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        answer_start = (ids == sep).nonzero()[0].item() + 1
        assert (labels[:answer_start] == -100).all()
        assert torch.equal(labels[answer_start:n], ids[answer_start:n])  # answer tokens + eos
        assert ids[n - 1] == tokenizer.eos_token_id
        # The batch is tokenized in one call: each row equals its sample tokenized on its own.
        alone = (tokenizer(items[row]["prompt"] + "</a>")["input_ids"]
                 + tokenizer(items[row]["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        assert ids[:n].tolist() == alone
    every = TextCollator(tokenizer, "qa", train=True, loss_tokens="all")(items)
    assert torch.equal(every["labels"][every["attention_mask"].bool()], every["input_ids"][every["attention_mask"].bool()])


def test_evaluation_batch_is_the_left_padded_prompt(tokenizer):
    items = _items(["how many shapes are there?", "is there a circle?"], [None, None])
    batch = TextCollator(tokenizer, "qa", train=False)(items)
    assert "labels" not in batch
    assert (batch["input_ids"][:, -1] == tokenizer.convert_tokens_to_ids("</a>")).all()
    assert batch["attention_mask"][:, -1].all()
    caption = TextCollator(tokenizer, "caption", train=False)(_items(["", ""], [None, None]))
    assert caption["input_ids"].tolist() == [[tokenizer.bos_token_id]] * 2


def test_unreadable_media_dropped_from_training_kept_flagged_in_evaluation(tokenizer):
    items = _items(["a?", "b?"], ["x", "y"])
    items[1]["skipped"] = "img.jpg: not decodable"
    items[0]["media"] = torch.ones(3, 4, 4)
    train = TextCollator(tokenizer, "qa", train=True)(items)
    assert train["uids"] == [0] and train["media"].shape == (1, 3, 4, 4)
    evaluation = TextCollator(tokenizer, "qa", train=False)(items)
    assert evaluation["uids"] == [0, 1] and evaluation["valid"].tolist() == [True, False]
    assert evaluation["skipped"] == ["img.jpg: not decodable"]
