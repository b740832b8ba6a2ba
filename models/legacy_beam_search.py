"""Beam search scored as transformers 4.20 scored it: the version behind the reference's published numbers.

Current transformers divides a finished hypothesis' summed log-probability by the number of tokens it
generated (eos included). Transformers 4.20 (the reference's pinned version) divided it by the length of
the whole sequence it returns: the question's padded tokens plus the generated ones, eos not counted, and
its stopping test divides the best running sum by that same length. With a question of ten or more
tokens and one- or two-token answers the two rules can rank finished answers differently, so the
reference's QA numbers need the old one. For a caption (input: BOS alone) the two agree except for
beams that reach the length limit.

The search follows 4.20's `BeamSearchScorer`: the 2 * num_beams best continuations by summed
log-probability, an eos among the first num_beams of them finishes a hypothesis, the others continue;
a sample stops once num_beams hypotheses are finished and none running can beat the worst of them; at the
length limit the running beams join the finished ones; the best score wins, eos appended when it fits.
Length penalty 1 (the reference's). Every step recomputes the whole sequence (no KV cache), as the
`epalm` mode has to anyway. Greedy search (num_beams 1) is the same in both versions: use `generate`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

# (input_ids, attention_mask) of every running beam -> (rows, vocab) logits of the next token
NextTokenLogits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FinishedHypotheses:
    """The best `num_beams` finished hypotheses of one sample, with 4.20's ranking and tie rules."""

    def __init__(self, num_beams: int):
        self.num_beams = num_beams
        self.items: list[tuple[float, list[int]]] = []

    @property
    def worst(self) -> float:
        return min((score for score, _ in self.items), default=1e9)

    def add(self, tokens: list[int], score: float) -> None:
        if len(self.items) < self.num_beams or score > self.worst:
            self.items.append((score, tokens))
            if len(self.items) > self.num_beams:  # the lowest goes; of equal ones the earliest added
                del self.items[min(range(len(self.items)), key=lambda i: (self.items[i][0], i))]

    def is_done(self, best_running_sum: float, length: int) -> bool:
        return len(self.items) >= self.num_beams and self.worst >= best_running_sum / length

    def best(self) -> list[int]:
        # The highest score; of equal ones the latest added (4.20 pops the end of a stable sort).
        return max(enumerate(self.items), key=lambda item: (item[1][0], item[0]))[1][1]


def _continuations(
    scores: list[float], flat_ids: list[int], sample: int, num_beams: int, vocab: int, eos_token_id: int,
    finished: FinishedHypotheses, rows: torch.Tensor, length: int,
) -> list[tuple[float, int, int]]:
    """(summed log-prob, token, beam row) of the sample's next beams; eos continuations become hypotheses."""
    beams = []
    for rank, (score, flat) in enumerate(zip(scores, flat_ids)):
        row, token = sample * num_beams + flat // vocab, flat % vocab
        if token == eos_token_id:
            if rank < num_beams:  # an eos below the best num_beams candidates is ignored
                finished.add(rows[row].tolist(), score / length)
        else:
            beams.append((score, token, row))
        if len(beams) == num_beams:
            break
    return beams


@torch.no_grad()
def legacy_beam_search(
    next_token_logits: NextTokenLogits,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_beams: int,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    uncounted: int = 0,
) -> torch.Tensor:
    """The new tokens `(B, n)`, pad-filled, of a 4.20 beam search continuing `input_ids` (any padding side).

    uncounted: leading positions that are not part of the reference's sequence (our soft-prompt and
    visual-slot placeholders): the length that divides a score counts the question and generated tokens."""
    batch, width = input_ids.shape
    ids = input_ids.repeat_interleave(num_beams, 0)
    mask = attention_mask.repeat_interleave(num_beams, 0)
    sums = torch.full((batch, num_beams), -1e9, device=ids.device)
    sums[:, 0] = 0.0  # the first step expands beam 0 only: the others are copies of it
    sums = sums.view(-1)
    finished = [FinishedHypotheses(num_beams) for _ in range(batch)]
    done = [False] * batch
    for _ in range(max_new_tokens):
        log_probs = torch.log_softmax(next_token_logits(ids, mask).float(), dim=-1) + sums[:, None]
        vocab = log_probs.shape[-1]
        top_sums, top_ids = (t.cpu() for t in log_probs.view(batch, -1).topk(2 * num_beams, dim=1))
        length = ids.shape[1] - uncounted
        sequences = ids[:, uncounted:].cpu()  # one copy per step; the bookkeeping below is per sample
        chosen: list[tuple[float, int, int]] = []
        for sample in range(batch):
            if done[sample]:  # a finished sample's rows run on with pads; their output is never read
                chosen += [(0.0, pad_token_id, sample * num_beams)] * num_beams
                continue
            chosen += _continuations(top_sums[sample].tolist(), top_ids[sample].tolist(), sample, num_beams, vocab,
                                     eos_token_id, finished[sample], sequences, length)
            done[sample] = finished[sample].is_done(top_sums[sample, 0].item(), length)
        rows = torch.tensor([row for _, _, row in chosen], device=ids.device)
        tokens = torch.tensor([token for _, token, _ in chosen], device=ids.device, dtype=ids.dtype)
        ids = torch.cat([ids[rows], tokens[:, None]], dim=1)
        mask = torch.cat([mask[rows], mask.new_ones(len(chosen), 1)], dim=1)
        sums = torch.tensor([score for score, _, _ in chosen], device=ids.device)
        if all(done):
            break
    return _best_continuations(ids, sums, finished, done, num_beams, width - uncounted, max_new_tokens,
                               eos_token_id, pad_token_id, uncounted)


def _best_continuations(
    ids: torch.Tensor, sums: torch.Tensor, finished: list[FinishedHypotheses], done: list[bool], num_beams: int,
    text_width: int, max_new_tokens: int, eos_token_id: int, pad_token_id: int, uncounted: int,
) -> torch.Tensor:
    """4.20's finalize: running beams of unfinished samples join the hypotheses; the best one's new tokens."""
    length = ids.shape[1] - uncounted
    sequences, sums = ids[:, uncounted:].tolist(), sums.tolist()
    for sample, hypotheses in enumerate(finished):
        if not done[sample]:
            for row in range(sample * num_beams, (sample + 1) * num_beams):
                hypotheses.add(sequences[row], sums[row] / length)
    new = []
    for hypotheses in finished:
        best = hypotheses.best()
        tokens = best[text_width:]
        if len(best) < text_width + max_new_tokens:  # a finished hypothesis gets its eos back
            tokens = tokens + [eos_token_id]
        new.append(tokens)
    width = max(len(tokens) for tokens in new)
    table = [tokens + [pad_token_id] * (width - len(tokens)) for tokens in new]
    return torch.tensor(table, dtype=ids.dtype, device=ids.device)
