"""Pretrain the demo's small OPT on the worlds' text corpus (text only: it never sees media).

Every document is one training sequence, BOS + document, never packed with or split from another, because a
document's later questions need its context. The loss is on every token; answer tokens (after `</a>`, up to
and including their `</s>`) weigh `answer_loss_weight` times more: they are the only tokens that need the
context, and without the extra weight learning to read it takes several times more steps (docs/demo_models.md).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

from epalm.demo.pretraining.settings import LMSettings
from epalm.demo.synthetic.text_corpus import ANSWER_SEP
from epalm.training.fixed_steps import train_fixed_steps


def new_opt(tokenizer: PreTrainedTokenizerFast, settings: LMSettings) -> OPTForCausalLM:
    """A randomly initialised OPT sized by `settings`, with the tokenizer's vocabulary and special ids."""
    config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        word_embed_proj_dim=settings.hidden_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        ffn_dim=settings.ffn_dim,
        max_position_embeddings=settings.max_positions,
        # No dropout: the corpus is drawn fresh (never repeated), and the LM is frozen downstream anyway.
        dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=settings.tie_embeddings,
    )
    return OPTForCausalLM(config)


def tokenize_documents(tokenizer: PreTrainedTokenizerFast, documents: Sequence[str], max_length: int) -> list[list[int]]:
    """BOS + document ids for each document; a document longer than the position table is an error."""
    rows = tokenizer(list(documents), add_special_tokens=True)["input_ids"]
    for index, row in enumerate(rows):
        if len(row) > max_length:
            raise ValueError(f"corpus document {index} is {len(row)} tokens, more than the LM's {max_length} "
                             f"positions: {documents[index]!r}")
    return rows


def length_bucketed_batches(rows: Sequence[list[int]], batch_size: int, buckets: int,
                            rng: random.Random) -> list[list[list[int]]]:
    """Consecutive batches of `rows`; within each run of `buckets` batches the rows are sorted by length (less
    padding) and the batches shuffled. Every row is used once; the last partial batch is dropped."""
    batches = []
    span = batch_size * max(1, buckets)
    for start in range(0, len(rows) - batch_size + 1, span):
        chunk = sorted(rows[start:start + span], key=len)
        group = [chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
        rng.shuffle(group)
        batches += group
    return batches


def pad_batch(rows: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids and mask."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def answer_tokens(ids: torch.Tensor, answer_sep_id: int, eos_id: int) -> torch.Tensor:
    """True at the tokens of each answer: after a `</a>`, up to and including the `</s>` that closes it."""
    is_sep = ids == answer_sep_id
    is_eos = ids == eos_id
    is_eos[:, 0] = False  # BOS
    open_answers = torch.cumsum(is_sep.long(), 1) - torch.cumsum(is_eos.long(), 1)  # > 0 between </a> and </s>
    before = torch.nn.functional.pad(open_answers[:, :-1], (1, 0))
    return ((open_answers > 0) & ~is_sep) | (is_eos & (before > 0))


def weighted_lm_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], answer_sep_id: int, eos_id: int,
                     answer_weight: float) -> torch.Tensor:
    """Next-token cross-entropy over every real token, answer tokens weighted `answer_weight` times."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    targets = ids[:, 1:]
    weights = mask[:, 1:].float() * (1 + (answer_weight - 1) * answer_tokens(ids, answer_sep_id, eos_id)[:, 1:])
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), reduction="none")
    return (losses * weights.flatten()).sum() / weights.sum()


def pretrain_lm(model: OPTForCausalLM, rows: Sequence[list[int]], tokenizer: PreTrainedTokenizerFast,
                settings: LMSettings, seed: int, progress: bool = True) -> list[float]:
    """`settings.steps` AdamW steps, each document seen once; returns the loss per step."""
    batches = length_bucketed_batches(rows, settings.batch_size, settings.length_buckets,
                                      random.Random(f"demo-lm-batches/{seed}"))
    if len(batches) < settings.steps:
        raise ValueError(f"LM pretraining needs {settings.steps} batches of {settings.batch_size} documents, "
                         f"got {len(rows)} documents")
    groups = [{"params": list(model.parameters()), "lr": settings.lr, "weight_decay": settings.weight_decay}]
    answer_sep_id = tokenizer.convert_tokens_to_ids(ANSWER_SEP)

    def loss_of_step(step: int) -> torch.Tensor:
        batch = pad_batch(batches[step], tokenizer.pad_token_id)
        return weighted_lm_loss(model(**batch).logits, batch, answer_sep_id, tokenizer.eos_token_id,
                                settings.answer_loss_weight)

    model.train()
    losses = train_fixed_steps(groups, loss_of_step, settings.steps, settings.warmup_steps, betas=(0.9, 0.98),
                               desc="LM pretraining", progress=progress)
    model.eval()
    return losses
