"""The frozen LM side of every few-shot method: the project's EPALM (models/epalm.py) and its text conventions.

Methods on the shared projector build an EPALM with the input-prefix connector and pass their projector's
outputs as `tokens=` (B, N, d_embed), which the model places after its soft prompt (none here), in the forward
and in generation; the eP-ALM baseline passes its encoder features as `features=` to a layer-injection EPALM.
Caption batches are the project's (dataset/collate.py: `BOS caption</s>`, loss on the caption; or, with
`text_format: chat`, a one-turn conversation through the tokenizer's chat template), the loss is training/loss.py's,
generation starts from the collator's prompt (BOS alone, or the rendered user turn), as the trainer's caption
evaluation does.
"""
from __future__ import annotations

import torch

from epalm.dataset.collate import DEFAULT_CAPTION_PROMPT, TextCollator
from epalm.models.config import ModelConfig
from epalm.models.encoders import ENCODERS, EncoderConfig, encoder_modality
from epalm.models.epalm import EPALM
from epalm.models.factory import build_model
from epalm.models.language_models.frozen_lm import LanguageModelConfig
from epalm.studies.fewshot.config import EpalmBaselineConfig
from epalm.training.evaluator import clean_prediction
from epalm.training.loss import lm_loss, predicting_positions


def study_readout(encoder: EncoderConfig) -> str:
    """What the study's features are: each block's CLS token, or the mean of its tokens for an encoder without one
    (studies/fewshot/features.py reads the same)."""
    return "cls" if "cls" in ENCODERS.get(encoder.type).readouts else "mean"


def prefix_model(lm: str, encoder: EncoderConfig, tokens: int) -> tuple[EPALM, object]:
    """An EPALM reading N input tokens and no soft prompt; its own connector is never used (`tokens=` replaces it)."""
    cfg = ModelConfig(lm=LanguageModelConfig(name=lm, dtype="float32"), encoders={encoder_modality(encoder): encoder},
                      connector="prefix", connector_options={"tokens": tokens}, injected_hidden_states=1, prompt_len=0,
                      readout=study_readout(encoder))
    return build_model(cfg)


def injection_model(lm: str, encoder: EncoderConfig, recipe: EpalmBaselineConfig, blocks: int, seed: int
                    ) -> tuple[EPALM, object]:
    """eP-ALM: a linear connection per encoder block injected into the LM's layers, and a soft prompt started from
    vocabulary rows (the demo's recipe), randomly initialised from `seed`."""
    torch.manual_seed(seed)
    cfg = ModelConfig(lm=LanguageModelConfig(name=lm, dtype="float32"), encoders={encoder_modality(encoder): encoder}, connector="linear",
                      injected_hidden_states=min(recipe.injected_hidden_states, blocks),
                      start_layer_idx=recipe.start_layer_idx, end_layer_idx=recipe.end_layer_idx,
                      prompt_len=recipe.prompt_len, prompt_init="vocab", readout=study_readout(encoder))
    return build_model(cfg)


class CaptionLM:
    """Caption loss and greedy captions of one EPALM; `inputs` are `tokens=...` or `features=...`."""

    def __init__(self, model: EPALM, tokenizer, max_text_len: int = 48, text_format: str = "reference",
                 caption_prompt: str = DEFAULT_CAPTION_PROMPT):
        self.model, self.tokenizer = model, tokenizer
        text = {"text_format": text_format, "caption_prompt": caption_prompt}
        self.collate = TextCollator(tokenizer, "caption", train=True, max_len=max_text_len, **text)
        self.prompts = TextCollator(tokenizer, "caption", train=False, max_len=max_text_len, **text)

    def batch(self, captions: list[str]) -> dict[str, torch.Tensor]:
        items = [{"uid": i, "index": i, "skipped": None, "prompt": "", "target": c} for i, c in enumerate(captions)]
        return self.collate(items)

    def loss(self, captions: list[str], **inputs: torch.Tensor) -> torch.Tensor:
        batch = self.batch(captions)
        positions = predicting_positions(batch["labels"])
        out = self.model(batch["input_ids"], batch["attention_mask"], logit_positions=positions, **inputs)
        return lm_loss(out.logits, batch["labels"], positions=positions)

    @torch.no_grad()
    def captions(self, max_new_tokens: int, batch_size: int = 100, **inputs: torch.Tensor) -> list[str]:
        """Greedy captions from the collator's prompt (BOS, or the rendered user turn), one per row of the inputs."""
        self.model.eval()
        rows = next(iter(inputs.values())).shape[0]
        texts: list[str] = []
        for first in range(0, rows, batch_size):
            part = {key: value[first:first + batch_size] for key, value in inputs.items()}
            count = next(iter(part.values())).shape[0]
            prompt = self.prompts([{"uid": i, "index": i, "skipped": None, "prompt": "", "target": None}
                                   for i in range(count)])
            new = self.model.generate(prompt["input_ids"], prompt["attention_mask"], max_new_tokens=max_new_tokens,
                                      num_beams=1, **part)
            texts.extend(clean_prediction(t) for t in self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return texts
