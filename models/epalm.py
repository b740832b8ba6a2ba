"""eP-ALM: a frozen perception encoder and a frozen decoder LM joined by a trainable linear connection
and soft prompt; the connection's outputs are injected into the LM's layers (models/injection.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelConfig
from models.encoders.base import PerceptionEncoder
from models.injection import InjectionPlan, VisualInjector
from models.language_model import FrozenLanguageModel
from models.legacy_beam_search import legacy_beam_search
from models.soft_prompt import SoftPrompt


@dataclass
class EPALMOutput:
    logits: torch.Tensor  # (B, T, vocab): one row per text position (prefix positions carry no label)


class EPALM(nn.Module):
    """Only `connector` and `prompt_module` train (plus LayerNorms when the config unfreezes them)."""

    def __init__(
        self,
        config: ModelConfig,
        lm: FrozenLanguageModel,
        encoder: PerceptionEncoder | None,
        connector: nn.Module | None,
        prompt_module: SoftPrompt | None,
        plan: InjectionPlan | None,
        pad_token_id: int,
        eos_token_id: int,
    ):
        super().__init__()
        self.config = config
        self.lm = lm
        self.encoder = encoder
        self.connector = connector
        self.prompt_module = prompt_module
        self.plan = plan
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.injector = VisualInjector(
            lm, plan, config.injection_mode, prompt_module.prompt_len if prompt_module is not None else 0
        )
        if encoder is not None:
            encoder.requires_grad_(False)
        self._unfreeze_layer_norms()
        self.train(False)

    # --- parameters and modes --------------------------------------------------------------------------
    def _unfreeze_layer_norms(self) -> None:
        targets = []
        if self.config.unfreeze_text_layer_norm:
            targets.append(self.lm)
        if self.config.unfreeze_vision_layer_norm and self.encoder is not None:
            targets.append(self.encoder)
        for module in targets:
            for sub in module.modules():
                if isinstance(sub, nn.LayerNorm) or type(sub).__name__.endswith("RMSNorm"):
                    sub.requires_grad_(True)

    def train(self, mode: bool = True) -> "EPALM":
        # The frozen encoder and LM stay in eval mode (no dropout); their own train() refuses too.
        super().train(mode)
        self.lm.eval()
        if self.encoder is not None:
            self.encoder.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the tensors that train, under their module paths (reference key names for the bridge)."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {name: t.detach() for name, t in self.state_dict().items() if name in names}

    @property
    def prefix_len(self) -> int:
        return self.injector.prefix_len

    # --- forward -----------------------------------------------------------------------------------------
    def encode(self, media: torch.Tensor) -> torch.Tensor:
        """Frozen encoder: `(B, K, d_enc)` CLS tokens of its last K blocks."""
        if self.encoder is None:
            raise ValueError("this model is blind (visual: false): it has no encoder")
        # No graph through the encoder unless some of it trains (unfreeze_vision_layer_norm).
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.encoder.parameters())
        weight = next(self.encoder.parameters())
        with torch.set_grad_enabled(needs_grad):
            return self.encoder(media.to(weight.dtype), self.config.injected_hidden_states)

    def visual_tokens(self, media: torch.Tensor | None, features: torch.Tensor | None) -> torch.Tensor | None:
        """Connector outputs `(B, K, d_lm)` from media, or from cached encoder features."""
        if self.plan is None:
            return None
        if features is None:
            if media is None:
                raise ValueError("eP-ALM needs media (or cached encoder features) for every sample")
            features = self.encode(media)
        return self.connector(features.to(next(self.connector.parameters()).dtype))

    def _prompt(self) -> torch.Tensor | None:
        return self.prompt_module() if self.prompt_module is not None else None

    def _with_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = input_ids.shape[0]
        prefix_ids = input_ids.new_full((batch, self.prefix_len), self.pad_token_id)
        prefix_mask = attention_mask.new_ones((batch, self.prefix_len))
        return torch.cat([prefix_ids, input_ids], 1), torch.cat([prefix_mask, attention_mask], 1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        media: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        logit_positions: torch.Tensor | None = None,
    ) -> EPALMOutput:
        """input_ids, attention_mask: `(B, T)` text (BOS first), any padding side.

        logits: `(B, T, V)`, or `(B, len(logit_positions), V)` at those text positions only (the LM head skips
        the others: `training.loss.predicting_positions`)."""
        visual = self.visual_tokens(media, features)
        ids, mask = self._with_prefix(input_ids, attention_mask)
        if logit_positions is None:
            logit_positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # An index tensor, not an int slice: the head then reads a contiguous copy (faster on the CPU, in bf16).
        keep = logit_positions.to(input_ids.device) + self.prefix_len
        with self.injector.active(visual, self._prompt()):
            out = self.lm.model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep)
        return EPALMOutput(logits=out.logits)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        media: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        use_cache: bool | None = None,
        beam_score_length: str = "generated",
        **generate_kwargs,
    ) -> torch.Tensor:
        """Greedy or beam-search continuation of left- or right-padded text; returns only the new tokens.

        With right padding the new tokens follow the whole padded batch, as the reference's `generate` call
        does: a shorter row's first new token is predicted at its last pad position, the pads stay masked
        as keys (but in `epalm` mode the visual slot attends to them), and a new token's position id counts
        its row's real tokens (the hooks derive positions from the attention mask).

        `use_cache` defaults to True in `causal` mode and is refused in `epalm` mode, where the visual
        token's state depends on every later position, so cached keys and values would be stale.
        `beam_score_length="sequence"` scores beams as transformers 4.20 did (models/legacy_beam_search.py),
        recomputing every step; "generated" is transformers' own beam search.
        """
        if use_cache is None:
            use_cache = self.config.injection_mode == "causal"
        if use_cache and self.config.injection_mode == "epalm" and self.plan is not None:
            raise ValueError("epalm mode cannot generate with a KV cache: its visual token attends to later text")
        if beam_score_length not in ("generated", "sequence"):
            raise ValueError(f"beam_score_length {beam_score_length!r} is not 'generated' or 'sequence'")
        visual = self.visual_tokens(media, features)
        ids, mask = self._with_prefix(input_ids, attention_mask)
        with self.injector.active(visual, self._prompt()):
            if num_beams > 1 and beam_score_length == "sequence":
                return self._legacy_beam_search(ids, mask, num_beams, max_new_tokens, generate_kwargs)
            out = self.lm.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
                use_cache=use_cache,
                pad_token_id=self.pad_token_id,
                eos_token_id=self.eos_token_id,
                **generate_kwargs,
            )
        return out[:, ids.shape[1] :]

    def _legacy_beam_search(self, ids, mask, num_beams: int, max_new_tokens: int, generate_kwargs) -> torch.Tensor:
        """Inside `injector.active`: 4.20's beam search over full recomputations of the injected LM."""
        if generate_kwargs:
            options = sorted(generate_kwargs)
            raise ValueError(f"beam_score_length 'sequence' takes no other generation option, got {options}")

        def next_token_logits(step_ids: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
            out = self.lm.model(input_ids=step_ids, attention_mask=step_mask, use_cache=False, logits_to_keep=1)
            return out.logits[:, -1]

        return legacy_beam_search(next_token_logits, ids, mask, num_beams, max_new_tokens, self.eos_token_id,
                                  self.pad_token_id, uncounted=self.prefix_len)
