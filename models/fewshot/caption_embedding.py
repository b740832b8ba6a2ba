"""A caption as one vector: the mean of the frozen LM's input embeddings of its tokens (no BOS, no EOS).

What the hypernetwork's set encoder reads of a (feature, caption) sample, and the "text" seen modality's
feature. A bag of the LM's own word vectors: every attribute word of a caption leaves its direction in it.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def caption_embeddings(embedding: torch.nn.Embedding, tokenizer, captions: list[str],
                       batch_size: int = 512) -> torch.Tensor:
    """`(len(captions), d_embed)` float32."""
    rows = []
    for start in range(0, len(captions), batch_size):
        ids = tokenizer(captions[start:start + batch_size], add_special_tokens=False)["input_ids"]
        for caption, token_ids in zip(captions[start:start + batch_size], ids):
            if not token_ids:
                raise ValueError(f"caption {caption!r} has no token")
            rows.append(embedding(torch.tensor(token_ids)).float().mean(0))
    return torch.stack(rows)
