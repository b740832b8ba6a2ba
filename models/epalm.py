"""eP-ALM and its neighbours: frozen perception encoders and a frozen decoder LM joined by trainable
connectors and a soft prompt. Where a connector's tokens enter the LM is its placement's business
(models/connectors/placements.py: injected into the LM's layers, eP-ALM's, or LM input embeddings);
the hooks that put them there are models/injection.py."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from epalm.models.config import ModelConfig
from epalm.models.connectors import Connector, Placement
from epalm.models.encoders.base import PerceptionEncoder
from epalm.models.injection import Conditioning, InjectionPlan, VisualInjector
from epalm.models.language_models.frozen_lm import FrozenLanguageModel
from epalm.models.legacy_beam_search import legacy_beam_search
from epalm.models.media_instances import instance_order
from epalm.models.precision import autocast_dtype, native_precision
from epalm.models.soft_prompt import SoftPrompt

MediaInput = torch.Tensor | dict[str, torch.Tensor] | None


@dataclass
class EPALMOutput:
    logits: torch.Tensor  # (B, T, vocab): one row per text position (prefix positions carry no label)


class EPALM(nn.Module):
    """Only the connectors and `prompt_module` train (plus LayerNorms when the config unfreezes them, and the LM's
    LoRA adapters or all its weights when `model.lm.train` says so: models/language_models/lm_training.py).

    `encoders` / `connectors` hold one frozen encoder and one connector per modality of `model.encoders`, in its
    order; the first is the main modality (what an untagged medium is). State-dict keys: `connectors.<modality>.*`,
    `prompt_module.*` (a reference checkpoint's `connector.{i}.*` are the main modality's: models/checkpoint.py).

    Media reach the model in one of two layouts (both in `forward` and `generate`):
    - one instance per sample, `media` `(B, ...)` or `features` `(B, K, d_enc)` of the main modality (or a
      one-entry `{modality: tensor}` for another), text without a placeholder: the instance's positions are in
      the prefix (eP-ALM's slot at position 0, or the input tokens after the soft prompt);
    - several instances per sample (chat messages with placeholders): `media` / `features` map each
      modality to its instances `(M_m, ...)`, and `media_index` `(B, T)` marks the text positions the
      collator expanded each placeholder into (models/media_instances.py).
    """

    def __init__(
        self,
        config: ModelConfig,
        lm: FrozenLanguageModel,
        encoders: dict[str, PerceptionEncoder],
        connectors: dict[str, Connector],
        prompt_module: SoftPrompt | None,
        plan: InjectionPlan | None,
        pad_token_id: int,
        eos_token_id: int,
    ):
        super().__init__()
        if list(encoders) != list(connectors):
            raise ValueError(f"one connector per encoder: encoders {list(encoders)}, connectors {list(connectors)}")
        placements = {connector.placement.name for connector in connectors.values()}
        if len(placements) > 1:
            raise ValueError(f"the connectors of one model write to one place, got {sorted(placements)}")
        self.config = config
        self.lm = lm
        self.encoders = nn.ModuleDict(encoders)
        self.connectors = nn.ModuleDict(connectors)
        self.prompt_module = prompt_module
        self.plan = plan
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.injector = VisualInjector(lm, plan, config.injection_mode)
        for module in self.encoders.values():
            module.requires_grad_(False)
        self._unfreeze_layer_norms()
        self.train(False)

    # --- structure ---------------------------------------------------------------------------------------
    @property
    def modality(self) -> str | None:
        """The main modality (the first of `model.encoders`), None for a blind model."""
        return next(iter(self.encoders), None)

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def encoder_for(self, modality: str | None = None) -> PerceptionEncoder:
        if not self.encoders:
            raise ValueError("this model is blind (visual: false): it has no encoder")
        modality = modality or self.modality
        if modality not in self.encoders:
            raise ValueError(f"this model has no encoder for modality '{modality}'; it reads {self.modalities}")
        return self.encoders[modality]

    def connector_for(self, modality: str | None = None) -> Connector:
        self.encoder_for(modality)  # the same error for a modality the model does not read
        return self.connectors[modality or self.modality]

    @property
    def placement(self) -> Placement | None:
        """Where the connectors' tokens enter the LM (None: blind)."""
        return next(iter(self.connectors.values())).placement if self.connectors else None

    @property
    def tokens_per_instance(self) -> int:
        """Positions one instance of the main modality takes where a placeholder stands (0 for a blind model)."""
        return next(iter(self.connectors.values())).tokens_per_instance if self.connectors else 0

    @property
    def positions_per_instance(self) -> dict[str, int]:
        """`{modality: positions one instance takes}`: they may differ (576 patch tokens of an image, 10 vectors
        of a sound)."""
        return {modality: connector.tokens_per_instance for modality, connector in self.connectors.items()}

    @property
    def prompt_len(self) -> int:
        return self.prompt_module.prompt_len if self.prompt_module is not None else 0

    @property
    def prefix_len(self) -> int:
        """Positions before BOS in the one-instance layout: the instance's positions and the soft prompt."""
        return self.prompt_len + self.tokens_per_instance

    def describe_bridge(self) -> str:
        """The bridge in a few words: how the media enter the LM."""
        if self.placement is None:
            return "blind (no encoder)"
        layers = sorted(self.plan.layer_tokens) if self.plan is not None else []
        return self.placement.describe(self.tokens_per_instance, layers, self.config.injected_hidden_states)

    # --- parameters and modes --------------------------------------------------------------------------
    def _unfreeze_layer_norms(self) -> None:
        targets = []
        if self.config.unfreeze_text_layer_norm:
            targets.append(self.lm)
        if self.config.unfreeze_vision_layer_norm:
            targets.extend(self.encoders.values())
        for module in targets:
            for sub in module.modules():
                if isinstance(sub, nn.LayerNorm) or type(sub).__name__.endswith("RMSNorm"):
                    sub.requires_grad_(True)

    def train(self, mode: bool = True) -> "EPALM":
        # The frozen encoders stay in eval mode (no dropout); so does the LM, by its own train() (which lets
        # only LoRA's dropout follow `mode`, when model.lm.train is lora).
        super().train(mode)
        for encoder in self.encoders.values():
            encoder.eval()
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the tensors that train, under their module paths."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {name: t.detach() for name, t in self.state_dict().items() if name in names}

    # --- media -> connector tokens -----------------------------------------------------------------------
    def encode(self, media: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """Frozen encoder: `(M, F, d_enc)`, one vector per each of its last K blocks, or the (pooled) patch tokens
        of block -K (`model.readout`, `model.patch_tokens`)."""
        encoder = self.encoder_for(modality)
        # No graph through the encoder unless some of it trains (unfreeze_vision_layer_norm).
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in encoder.parameters())
        weight = next(encoder.parameters())
        cfg = self.config
        with torch.set_grad_enabled(needs_grad), native_precision(encoder):
            # the module's own call: an engine's wrapper (FSDP) gathers its weights in the call
            tokens = encoder(media.to(weight.dtype), cfg.injected_hidden_states, cfg.readout)
        return encoder.pooled(tokens, cfg.injected_hidden_states, cfg.readout, cfg.patch_tokens)

    def features_per_instance(self, modality: str | None = None) -> int:
        """F of the `(M, F, d_enc)` features `encode` gives (K, or the patch tokens read)."""
        cfg = self.config
        return self.encoder_for(modality).features_per_instance(cfg.readout, cfg.injected_hidden_states,
                                                                cfg.patch_tokens)

    def connect(self, features: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """Connector outputs of encoder features: `(M, W, d)`, W tokens in the width of the connector's placement."""
        connector = self.connector_for(modality)
        # Under autocast the connector's matmuls read the autocast dtype: cast there once (fp32 cached features),
        # or not at all (features of an encoder held in that dtype), rather than to fp32 and back in each Linear.
        dtype = autocast_dtype(features) or next(connector.parameters()).dtype
        return connector(features.to(dtype))

    def media_tokens(self, media: MediaInput, features: MediaInput, modality: str | None = None) -> torch.Tensor:
        """Connector outputs of the instances of one modality, from media or from cached encoder features."""
        if features is None:
            if media is None:
                raise ValueError("a model that reads media needs media (or cached encoder features) for every sample")
            features = self.encode(media, modality)
        return self.connect(features, modality)

    def _instance_rows(self, media: MediaInput, features: MediaInput) -> torch.Tensor:
        """The placement's rows of every instance of the batch, modalities in `instance_order` (each modality's
        instances may take their own number of positions W)."""
        media = media if isinstance(media, dict) or media is None else {self.modality: media}
        features = features if isinstance(features, dict) or features is None else {self.modality: features}
        names = instance_order(set(media or {}) | set(features or {}))
        parts = [self.placement.rows(self.media_tokens((media or {}).get(m), (features or {}).get(m), m))
                 for m in names]
        if parts:
            return torch.cat(parts, dim=0)
        # No instance in the batch: the connector of an empty batch gives the right (0, W, d).
        encoder = self.encoder_for(None)
        weight = next(self.connector_for(None).parameters())
        empty = weight.new_zeros(0, self.features_per_instance(None), encoder.hidden_size)
        return self.placement.rows(self.connect(empty))

    def conditioning(self, media: MediaInput = None, features: MediaInput = None,
                     media_index: torch.Tensor | None = None, tokens: torch.Tensor | None = None) -> Conditioning:
        """What the LM receives besides the text. `tokens` replaces the connector's outputs (already computed,
        e.g. by a generated adapter): `(B, W, d)` in the one-instance layout, `(M, W, d)` with `media_index`."""
        prompt = self.prompt_module() if self.prompt_module is not None else None
        prompt_len = self.prompt_len
        placement = self.placement
        if placement is None:
            return Conditioning(prompt=prompt, prefix_len=prompt_len)
        if media_index is not None:  # media positions inside the text, after the prompt
            rows = placement.rows(tokens) if tokens is not None else self._instance_rows(media, features)
            in_prefix = media_index.new_full((media_index.shape[0], prompt_len), -1)
            return Conditioning(prompt=prompt, placement=placement, rows=rows,
                                media_index=torch.cat([in_prefix, media_index], dim=1), prefix_len=prompt_len)
        modality, media, features = _one_modality(media, features)
        visual = tokens if tokens is not None else self.media_tokens(media, features, modality)
        batch, positions = visual.shape[0], self.connector_for(modality).tokens_per_instance
        media_start, prompt_start = placement.prefix_order(prompt_len, positions)
        index = torch.full((batch, prompt_len + positions), -1, dtype=torch.long, device=visual.device)
        index[:, media_start:media_start + positions] = (
            torch.arange(batch, device=visual.device)[:, None] * positions
            + torch.arange(positions, device=visual.device))
        return Conditioning(prompt=prompt, prompt_start=prompt_start, placement=placement,
                            rows=placement.rows(visual), media_index=index, prefix_len=prompt_len + positions,
                            one_instance=True)

    # --- forward -----------------------------------------------------------------------------------------
    def _with_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     prefix_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = input_ids.shape[0]
        prefix_ids = input_ids.new_full((batch, prefix_len), self.pad_token_id)
        prefix_mask = attention_mask.new_ones((batch, prefix_len))
        return torch.cat([prefix_ids, input_ids], 1), torch.cat([prefix_mask, attention_mask], 1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        media: MediaInput = None,
        features: MediaInput = None,
        logit_positions: torch.Tensor | None = None,
        media_index: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
    ) -> EPALMOutput:
        """input_ids, attention_mask: `(B, T)` text (BOS first), any padding side.

        logits: `(B, T, V)`, or `(B, len(logit_positions), V)` at those text positions only (the LM head skips
        the others: `epalm.training.loss.predicting_positions`)."""
        cond = self.conditioning(media, features, media_index, tokens)
        prefix_len = cond.prefix_len
        ids, mask = self._with_prefix(input_ids, attention_mask, prefix_len)
        if logit_positions is None:
            logit_positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # An index tensor, not an int slice: the head then reads a contiguous copy (faster on the CPU, in bf16).
        keep = logit_positions.to(input_ids.device) + prefix_len
        with self.injector.active(cond), native_precision(self.lm):
            out = self.lm.model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep)
        return EPALMOutput(logits=out.logits)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        media: MediaInput = None,
        features: MediaInput = None,
        max_new_tokens: int = 20,
        num_beams: int = 1,
        use_cache: bool | None = None,
        media_index: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        beam_score_length: str = "generated",
        **generate_kwargs,
    ) -> torch.Tensor:
        """Greedy or beam-search continuation of left- or right-padded text; returns only the new tokens.

        With right padding the new tokens follow the whole padded batch, as the reference's `generate` call
        does: a shorter row's first new token is predicted at its last pad position, the pads stay masked
        as keys (but in `epalm` mode the visual slot attends to them), and a new token's position id counts
        its row's real tokens (the hooks derive positions from the attention mask).

        `use_cache` defaults to True except in `epalm` mode with slots, where a slot's state depends on every
        later position, so cached keys and values would be stale: refused there.
        `beam_score_length="sequence"` scores beams as transformers 4.20 did (models/legacy_beam_search.py),
        recomputing every step; "generated" is transformers' own beam search.
        `generate_kwargs` go to transformers' `generate` (a `streamer`, `stopping_criteria` ...); a
        `generation_config` (transformers' GenerationConfig: sampling, temperature, top-p, top-k, repetition
        penalty) replaces the greedy default, the arguments above set on a copy of it.
        """
        epalm_slots = self.config.injection_mode == "epalm" and self.placement is not None and \
            self.placement.masks_as_slots
        if use_cache is None:
            use_cache = not epalm_slots
        if use_cache and epalm_slots:
            raise ValueError("epalm mode cannot generate with a KV cache: its visual token attends to later text")
        if beam_score_length not in ("generated", "sequence"):
            raise ValueError(f"beam_score_length {beam_score_length!r} is not 'generated' or 'sequence'")
        cond = self.conditioning(media, features, media_index, tokens)
        ids, mask = self._with_prefix(input_ids, attention_mask, cond.prefix_len)
        settings = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, use_cache=use_cache,
                        pad_token_id=self.pad_token_id, eos_token_id=self.eos_token_id)
        config = generate_kwargs.pop("generation_config", None)
        if config is None:
            settings["do_sample"] = False
        else:  # sampling settings (a transformers GenerationConfig): ours above are set on a copy of it
            config = copy.deepcopy(config)
            config.update(**settings)
            config.do_sample = bool(config.do_sample)  # unset: greedy or beam, whatever the LM's own defaults say
            settings = {"generation_config": config}
        with self.injector.active(cond), native_precision(self.lm):
            if num_beams > 1 and beam_score_length == "sequence":
                if config is not None and (config.do_sample or config.repetition_penalty not in (None, 1.0)):
                    raise ValueError("beam_score_length 'sequence' neither samples nor penalises repetition")
                return self._legacy_beam_search(ids, mask, num_beams, max_new_tokens, generate_kwargs,
                                                cond.prefix_len)
            out = self.lm.model.generate(input_ids=ids, attention_mask=mask, **settings, **generate_kwargs)
        return out[:, ids.shape[1] :]

    def _legacy_beam_search(self, ids, mask, num_beams: int, max_new_tokens: int, generate_kwargs,
                            prefix_len: int) -> torch.Tensor:
        """Inside `injector.active`: 4.20's beam search over full recomputations of the injected LM."""
        if generate_kwargs:
            options = sorted(generate_kwargs)
            raise ValueError(f"beam_score_length 'sequence' takes no other generation option, got {options}")

        def next_token_logits(step_ids: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
            out = self.lm.model(input_ids=step_ids, attention_mask=step_mask, use_cache=False, logits_to_keep=1)
            return out.logits[:, -1]

        return legacy_beam_search(next_token_logits, ids, mask, num_beams, max_new_tokens, self.eos_token_id,
                                  self.pad_token_id, uncounted=prefix_len)


def _one_modality(media: MediaInput, features: MediaInput) -> tuple[str | None, torch.Tensor | None,
                                                                    torch.Tensor | None]:
    """The one-instance layout's modality (None: the main one) and tensors, from plain or `{modality: ...}`."""
    keyed = [value for value in (media, features) if isinstance(value, dict)]
    if not keyed:
        return None, media, features
    names = {name for value in keyed for name in value}
    if len(names) != 1:
        raise ValueError(f"one instance per sample needs media of one modality, got {sorted(names)}; "
                         "several instances need a media_index")
    (name,) = names
    media = media.get(name) if isinstance(media, dict) else media
    features = features.get(name) if isinstance(features, dict) else features
    return name, media, features
