"""Conditioning a frozen decoder on media and a soft prompt through hooks: eP-ALM's layer injection (two
mask modes) and input tokens.

The sequence the decoder sees is a prefix, then the text: `[slot][prompt_1..P][prefix_1..N] BOS text...`.
- slot (eP-ALM's layout, one media instance per sample, text without a placeholder): one position 0 whose
  hidden state is replaced by the visual token of each injection layer. Before the first injection layer
  no position may attend to it, so those layers compute exactly what they would without it (the
  reference *prepends* the token there instead; same result, but a fixed length keeps the KV cache and
  the library's generation loop working).
- prompt: the soft prompt's input embeddings.
- prefix: input-prefix connector tokens (input embeddings) of one instance per sample, for text without
  a placeholder.
- Media placeholders inside the text (several instances per prompt) were expanded by the collator into
  positions marked by the media index: each is an in-text slot (layer injection: replaced at the injection
  layers, masked as the slot is) or an input token (its input embedding replaced).
What is written where is the placement's (models/connectors/placements.py): the hooks below ask it.
Prefix positions get position id 0 and no learned position embedding; text positions (media positions
inside the text included) count from BOS, from the attention mask alone.

Modes for slots (layers from the first injection layer on):
- `epalm`: the reference's mask: a slot attends to every position (future text and padding included)
  and every position attends to it. Generation must then recompute the whole sequence at every step, as
  the reference does.
- `causal`: a slot sees only itself and a text position never sees a later one, so training and
  generation compute the same function and the KV cache is exact.

Nothing of the library's decoder code is copied: hooks set `position_ids`, replace input embeddings,
silence learned position tables at prefix positions, swap each layer's `attention_mask` argument and
overwrite the slots' hidden states.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, replace

import torch
from torch import nn

from epalm.common.errors import ConfigError, did_you_mean
from epalm.models.connectors.placements import Placement
from epalm.models.language_models.frozen_lm import FrozenLanguageModel

MODES = ("causal", "epalm")


def resolve_layer_index(value: int | float, num_layers: int, name: str) -> int:
    """Absolute index from an absolute (>= 0), negative (from the end, clamped at 0) or fractional one."""
    if isinstance(value, float) and not value.is_integer():
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name}={value}: a fractional layer index must lie in (0, 1)")
        return round(value * num_layers)
    index = int(value)
    return max(0, num_layers + index) if index < 0 else index


@dataclass(frozen=True)
class InjectionPlan:
    """Which LM layer receives which of the K visual tokens."""

    start: int
    end: int
    num_tokens: int
    text_step: int
    layer_tokens: dict[int, int]

    @property
    def first_layer(self) -> int:
        return min(self.layer_tokens)


def plan_injection(
    start: int | float,
    end: int | float,
    num_tokens: int,
    num_layers: int,
    text_step: int = 1,
    select_higher_step: bool = False,
) -> InjectionPlan:
    """The reference's schedule: layer `idx` in `[start, end)` with `idx % text_step == 0` gets token
    `(idx - start) // step` clamped to K - 1, where `step = max(1, (end - start) // K)`."""
    s = resolve_layer_index(start, num_layers, "start_layer_idx")
    e = resolve_layer_index(end, num_layers, "end_layer_idx")
    if not 0 <= s < e <= num_layers:
        raise ConfigError(
            f"injection layers [{start}, {end}) resolve to [{s}, {e}), which is not a non-empty range "
            f"inside the LM's {num_layers} layers"
        )
    if num_tokens < 1:
        raise ConfigError(f"injected_hidden_states must be >= 1, got {num_tokens}")
    step = max(1, (e - s) // num_tokens)
    if select_higher_step:
        text_step = max(step, text_step)
    layer_tokens = {i: min((i - s) // step, num_tokens - 1) for i in range(s, e) if i % text_step == 0}
    if not layer_tokens:
        raise ConfigError(f"no layer in [{s}, {e}) is a multiple of text_step={text_step}: nothing would be injected")
    return InjectionPlan(s, e, num_tokens, text_step, layer_tokens)


def _argument_position(module: nn.Module, name: str) -> int | None:
    """Index of `name` among the positional parameters of `module.forward` (layers differ: GPT-2 passes
    the mask positionally, OPT and Llama by keyword)."""
    params = [p for p in inspect.signature(module.forward).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    names = [p.name for p in params]
    return names.index(name) if name in names else None


def _replace_argument(args: tuple, kwargs: dict, name: str, position: int | None, value) -> tuple[tuple, dict]:
    if name in kwargs or position is None or position >= len(args):
        kwargs[name] = value
        return args, kwargs
    args = args[:position] + (value,) + args[position + 1 :]
    return args, kwargs


def _read_argument(args: tuple, kwargs: dict, name: str, position: int | None):
    if name in kwargs:
        return kwargs[name]
    return args[position] if position is not None and position < len(args) else None


@dataclass
class Conditioning:
    """What one forward (or one generate call) adds to the text, already in the LM's widths.

    prompt: `(P, d_embed)` soft prompt, at positions `prompt_start .. prompt_start + P - 1` of the prefix.
    placement: where `rows` go (the connectors' placement, models/connectors/placements.py); None: no media.
    rows: the media tokens, shared by the batch (so beams need no copies): `(R, K, d_lm)` slots for layer
        injection, `(R, d_embed)` input tokens; `media_index` says which position holds which row.
    media_index: `(B, prefix_len + T0)` long over the prefix and the initial text: the row of `rows` a media
        position holds, -1 elsewhere. Media positions are in the prefix (one instance per sample, eP-ALM's
        layout: the slot at position 0, or input tokens after the prompt) or inside the text (placeholders the
        collator expanded, several instances per sample).
    prefix_len: positions before BOS.
    one_instance: the media are the prefix's (known to be present without reading the device).
    """

    prompt: torch.Tensor | None = None
    prompt_start: int = 0
    placement: Placement | None = None
    rows: torch.Tensor | None = None
    media_index: torch.Tensor | None = None
    prefix_len: int = 0
    one_instance: bool = False


def _in_dtype(cond: Conditioning, dtype: torch.dtype) -> Conditioning:
    """The conditioning's vectors in the LM's dtype (fp32 connector and prompt outputs into a half LM)."""
    def cast(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return tensor.to(dtype) if tensor is not None and tensor.is_floating_point() else tensor

    return replace(cond, prompt=cast(cond.prompt), rows=cast(cond.rows))


def _per_row(tensor: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """generate() repeats each sample num_beams times: repeat per-sample tensors to match."""
    if tensor is None or tensor.shape[0] == batch:
        return tensor
    return tensor.repeat_interleave(batch // tensor.shape[0], dim=0)


@dataclass
class _ForwardState:
    """What the hooks need for the forward pass now running (one generation step, or one training step)."""

    cond: Conditioning  # media_index repeated for beams
    mask_before: torch.Tensor  # additive (B, 1, q, kv), layers before the first injection layer
    mask_after: torch.Tensor  # additive (B, 1, q, kv), from the first injection layer on
    prefix_in_query: bool  # the whole sequence is among this pass's queries (no KV cache yet)
    position_keep: torch.Tensor  # (B, q, 1): 0 at prefix positions, where learned position tables are silenced
    media_index: torch.Tensor | None  # (B, q) long: the row of cond.rows at media positions, else -1


class VisualInjector:
    """Installs the hooks on a frozen LM; they act only inside `active(...)`."""

    def __init__(self, lm: FrozenLanguageModel, plan: InjectionPlan | None, mode: str):
        if mode not in MODES:
            raise ConfigError(f"model.injection_mode '{mode}' is not one of {MODES}{did_you_mean(mode, MODES)}")
        self.lm = lm
        self.plan = plan
        self.mode = mode
        self._cond: Conditioning | None = None
        self._state: _ForwardState | None = None
        self._handles = self._install()

    # --- public -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def active(self, cond: Conditioning):
        if cond.placement is not None and cond.placement.needs_plan and self.plan is None:
            raise ValueError(f"media of placement '{cond.placement.name}' need an injection plan")
        self._cond = _in_dtype(cond, self.lm.dtype)  # once per forward or generation, not per layer or step
        try:
            yield
        finally:
            self._cond = self._state = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --- hooks --------------------------------------------------------------------------------------
    def _install(self) -> list:
        model = self.lm.model
        handles = [
            model.register_forward_pre_hook(self._before_model, with_kwargs=True),
            model.get_input_embeddings().register_forward_hook(self._after_input_embeddings),
        ]
        if self.lm.position_table is not None:
            handles.append(self.lm.position_table.register_forward_hook(self._after_position_table))
        for index, layer in enumerate(self.lm.layers):
            handles.append(layer.register_forward_pre_hook(self._layer_hook(index, layer), with_kwargs=True))
        return handles

    def _before_model(self, module, args, kwargs):
        if self._cond is None:
            return None
        mask2d = kwargs.get("attention_mask")
        tokens = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        if tokens is None and args:
            tokens = args[0]
        if tokens is None or (mask2d is not None and mask2d.dim() != 2):
            raise ValueError("the injected LM must be called with input_ids and, if any, a 2D attention_mask")
        if mask2d is None:  # generate() drops an all-ones mask (no padding); the cache tells the past
            # transformers renamed `past_key_values` to `cache` (5.24): read whichever generate() passed.
            cache = kwargs.get("past_key_values", kwargs.get("cache"))
            past = cache.get_seq_length() if cache is not None else 0
            mask2d = torch.ones(tokens.shape[0], past + tokens.shape[1], dtype=torch.long, device=tokens.device)
        q_len = tokens.shape[1]
        past = mask2d.shape[1] - q_len
        cond = replace(self._cond, media_index=_per_row(self._cond.media_index, tokens.shape[0]))
        kwargs["position_ids"] = self._position_ids(mask2d, cond.prefix_len)[:, past:]
        self._state = self._forward_state(cond, mask2d.bool(), q_len, past)
        return args, kwargs

    def _position_ids(self, mask2d: torch.Tensor, prefix_len: int) -> torch.Tensor:
        """Text positions count text tokens only (the prefix does not shift them); prefix positions get 0."""
        text_mask = mask2d[:, prefix_len:].long()
        text_positions = torch.cumsum(text_mask, dim=1) * text_mask - 1
        text_positions = text_positions.clamp_min(self.lm.layout.pad_position_id)
        prefix = torch.zeros(mask2d.shape[0], prefix_len, dtype=torch.long, device=mask2d.device)
        return torch.cat([prefix, text_positions], dim=1)

    @staticmethod
    def _whole_index(cond: Conditioning, length: int) -> torch.Tensor | None:
        """`(B, length)` over the whole sequence: text generated after the initial input holds no media."""
        index = cond.media_index
        if index is None:
            return None
        after = index.new_full((index.shape[0], max(0, length - index.shape[1])), -1)
        return torch.cat([index, after], dim=1)[:, :length]

    def _forward_state(self, cond: Conditioning, mask2d: torch.Tensor, q_len: int, past: int) -> _ForwardState:
        device = mask2d.device
        length = mask2d.shape[1]
        queries = torch.arange(past, past + q_len, device=device)[:, None]
        keys = torch.arange(length, device=device)[None, :]
        allowed = (keys <= queries)[None] & mask2d[:, None, :]  # (B, q, kv): causal and not padding
        media_index = self._whole_index(cond, length)
        before = after = allowed
        if media_index is not None and cond.placement is not None and cond.placement.masks_as_slots:
            slots = media_index >= 0  # (B, kv)
            # Known without reading the device (no host sync) in the one-instance layout, where the prefix holds them.
            if cond.one_instance or bool(slots.any()):
                slot_keys = slots[:, None, :]  # (B, 1, kv)
                slot_queries = slots[:, past:, None]  # (B, q, 1)
                itself = (keys == queries)[None]  # (1, q, kv)
                before = allowed & (~slot_keys | itself)  # nobody reads a slot before it holds a visual token
                if self.mode == "epalm":
                    after = allowed | slot_keys | slot_queries  # every position reads a slot, a slot reads every one
                else:
                    after = allowed & (~slot_queries | itself)  # a slot sees only itself
        dtype = self.lm.dtype
        low = torch.finfo(dtype).min

        def additive(m: torch.Tensor) -> torch.Tensor:
            zero = torch.zeros((), dtype=dtype, device=device)
            return torch.where(m, zero, torch.full((), low, dtype=dtype, device=device))[:, None]

        keep = (torch.arange(past, past + q_len, device=device) >= cond.prefix_len).to(dtype)
        mask_before = additive(before)
        return _ForwardState(
            cond=cond,
            mask_before=mask_before,
            mask_after=mask_before if after is before else additive(after),
            prefix_in_query=past == 0,
            position_keep=keep[None, :, None].expand(mask2d.shape[0], -1, -1),
            media_index=media_index[:, past:] if media_index is not None else None,
        )

    def _after_input_embeddings(self, module, args, output):
        state = self._state
        if self._cond is None or state is None or not state.prefix_in_query:
            return None
        cond, batch, width = state.cond, output.shape[0], output.shape[2]
        if cond.prefix_len:
            # The prefix: the prompt where the layout puts it, zeros at its media positions (a slot's is masked
            # until the first injection layer overwrites it; input tokens are written below).
            prompt_len = cond.prompt.shape[0] if cond.prompt is not None else 0
            after = cond.prefix_len - cond.prompt_start - prompt_len
            pieces = [output.new_zeros(batch, cond.prompt_start, width)] if cond.prompt_start else []
            if cond.prompt is not None:
                pieces.append(cond.prompt.to(output.dtype)[None].expand(batch, -1, -1))
            if after:
                pieces.append(output.new_zeros(batch, after, width))
            output = torch.cat([*pieces, output[:, cond.prefix_len:]], dim=1)
        if cond.placement is not None and state.media_index is not None:
            output = cond.placement.write_embeddings(output, state.media_index, cond.rows)
        return output

    def _after_position_table(self, module, args, output):
        state = self._state
        if self._cond is None or state is None:
            return None
        return output * state.position_keep.to(output.dtype)

    def _layer_hook(self, index: int, layer: nn.Module):
        mask_position = _argument_position(layer, "attention_mask")
        hidden_position = _argument_position(layer, "hidden_states")
        token_index = self.plan.layer_tokens.get(index) if self.plan is not None else None
        before_injection = self.plan is not None and index < self.plan.first_layer

        def hook(module, args, kwargs):
            state = self._state
            if self._cond is None or state is None:
                return None
            mask = state.mask_before if before_injection else state.mask_after
            args, kwargs = _replace_argument(args, kwargs, "attention_mask", mask_position, mask)
            cond = state.cond
            if token_index is not None and state.prefix_in_query and cond.placement is not None \
                    and state.media_index is not None:
                hidden = _read_argument(args, kwargs, "hidden_states", hidden_position)
                hidden = cond.placement.write_layer(hidden, state.media_index, cond.rows, token_index)
                args, kwargs = _replace_argument(args, kwargs, "hidden_states", hidden_position, hidden)
            return args, kwargs

        return hook
