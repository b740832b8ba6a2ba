"""Pretrain the demo's small OPT on the worlds' text corpus (text only: it never sees media).

Every document is one training sequence, BOS + document, never packed with or split from another, because a
document's later questions need its context; the loss is on every token.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm
from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast, get_cosine_schedule_with_warmup

from training.demo_pretraining.settings import LMSettings


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


def pad_batch(rows: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, mask and labels (every real token is a target, padding is not)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def pretrain_lm(model: OPTForCausalLM, rows: Sequence[list[int]], pad_id: int, settings: LMSettings,
                progress: bool = True) -> list[float]:
    """`settings.steps` AdamW steps over consecutive batches of `rows` (seen once each); returns the loss per step."""
    needed = settings.steps * settings.batch_size
    if len(rows) < needed:
        raise ValueError(f"LM pretraining needs {needed} documents ({settings.steps} steps x {settings.batch_size}), "
                         f"got {len(rows)}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.98),
                                  weight_decay=settings.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps, settings.steps)
    model.train()
    losses = []
    bar = tqdm(range(settings.steps), desc="LM pretraining", unit="step", disable=not progress)
    for step in bar:
        batch = pad_batch(rows[step * settings.batch_size:(step + 1) * settings.batch_size], pad_id)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses
