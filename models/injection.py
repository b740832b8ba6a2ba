"""Injection of visual tokens into a frozen decoder through hooks, in two modes.

The decoder sees one extra sequence position 0 (the visual slot) from its first layer on, followed by
the soft prompt and the text: `[slot, prompt_1..P, BOS, text...]`. Before the first injection layer no
position may attend to the slot, so those layers compute exactly what they would compute without it
(the reference *prepends* the token there instead; same result, but a fixed length keeps the KV cache
and the library's generation loop working). At each injection layer the slot's hidden state is
replaced by the visual token of that layer.

Modes (layers from the first injection layer on):
- `epalm`: the reference's mask: the slot attends to every position (future text and padding
  included) and every position attends to it. Generation must then recompute the whole sequence at
  every step, as the reference does.
- `causal`: the ordinary causal mask: the slot sees only itself, so a text position never sees a
  later one, training and generation compute the same function, and the KV cache is exact.

Nothing of the library's decoder code is copied: hooks set `position_ids`, replace the prompt
positions' input embeddings, silence learned position tables at prefix positions, swap each layer's
`attention_mask` argument and overwrite the slot's hidden state.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
from torch import nn

from models.language_model import FrozenLanguageModel
from models.user_errors import ConfigError, did_you_mean

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
class _ForwardState:
    """What the hooks need for the forward pass now running (one generation step, or one training step)."""

    mask_before: torch.Tensor  # additive (B, 1, q, kv), layers before the first injection layer
    mask_after: torch.Tensor  # additive (B, 1, q, kv), from the first injection layer on
    prefix_in_query: bool  # the slot and prompt positions are among this pass's queries (no KV cache yet)
    position_keep: torch.Tensor  # (B, q, 1): 0 at prefix positions, where learned position tables are silenced


class VisualInjector:
    """Installs the hooks on a frozen LM; they act only inside `active(...)`."""

    def __init__(self, lm: FrozenLanguageModel, plan: InjectionPlan | None, mode: str, prompt_len: int):
        if mode not in MODES:
            raise ConfigError(f"model.injection_mode '{mode}' is not one of {MODES}{did_you_mean(mode, MODES)}")
        self.lm = lm
        self.plan = plan
        self.mode = mode
        self.slot_len = 1 if plan is not None else 0
        self.prompt_len = prompt_len
        self.prefix_len = self.slot_len + prompt_len
        self._visual: torch.Tensor | None = None
        self._prompt: torch.Tensor | None = None
        self._state: _ForwardState | None = None
        self._active = False
        self._handles = self._install()

    # --- public -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def active(self, visual: torch.Tensor | None, prompt: torch.Tensor | None):
        """visual: `(B, K, d_lm)` connector outputs (None when blind); prompt: `(P, d_embed)` or None."""
        if (visual is None) != (self.plan is None):
            raise ValueError("visual tokens must be given exactly when the model has an injection plan")
        self._visual, self._prompt, self._active = visual, prompt, True
        try:
            yield
        finally:
            self._visual = self._prompt = self._state = None
            self._active = False

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
        if not self._active:
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
        kwargs["position_ids"] = self._position_ids(mask2d)[:, past:]
        self._state = self._forward_state(mask2d.bool(), q_len, past)
        return args, kwargs

    def _position_ids(self, mask2d: torch.Tensor) -> torch.Tensor:
        """Text positions count text tokens only (the prefix does not shift them); prefix positions get 0."""
        text_mask = mask2d[:, self.prefix_len :].long()
        text_positions = torch.cumsum(text_mask, dim=1) * text_mask - 1
        text_positions = text_positions.clamp_min(self.lm.layout.pad_position_id)
        prefix = torch.zeros(mask2d.shape[0], self.prefix_len, dtype=torch.long, device=mask2d.device)
        return torch.cat([prefix, text_positions], dim=1)

    def _forward_state(self, mask2d: torch.Tensor, q_len: int, past: int) -> _ForwardState:
        device = mask2d.device
        queries = torch.arange(past, past + q_len, device=device)[:, None]
        keys = torch.arange(mask2d.shape[1], device=device)[None, :]
        allowed = (keys <= queries)[None] & mask2d[:, None, :]  # (B, q, kv): causal and not padding
        before = after = allowed
        if self.slot_len:
            slot_row = (queries == 0)[None]  # (1, q, 1)
            before = allowed.clone()
            before[:, :, 0] = slot_row[..., 0]  # nobody reads the slot before it holds a visual token
            if self.mode == "epalm":
                after = allowed.clone()
                after[:, :, 0] = True  # every position attends to the visual token ...
                after = after | slot_row  # ... and it attends to every position
        dtype = self.lm.dtype
        low = torch.finfo(dtype).min

        def additive(m: torch.Tensor) -> torch.Tensor:
            zero = torch.zeros((), dtype=dtype, device=device)
            return torch.where(m, zero, torch.full((), low, dtype=dtype, device=device))[:, None]

        keep = (torch.arange(past, past + q_len, device=device) >= self.prefix_len).to(dtype)
        mask_before = additive(before)
        return _ForwardState(
            mask_before=mask_before,
            mask_after=mask_before if after is before else additive(after),
            prefix_in_query=past == 0,
            position_keep=keep[None, :, None].expand(mask2d.shape[0], -1, -1),
        )

    def _after_input_embeddings(self, module, args, output):
        state = self._state
        if not self._active or state is None or not state.prefix_in_query or self.prefix_len == 0:
            return None
        batch, _, width = output.shape
        pieces = []
        if self.slot_len:
            # Placeholder: masked until the first injection layer overwrites it.
            pieces.append(output.new_zeros(batch, self.slot_len, width))
        if self.prompt_len:
            pieces.append(self._prompt.to(output.dtype)[None].expand(batch, -1, -1))
        pieces.append(output[:, self.prefix_len :])
        return torch.cat(pieces, dim=1)

    def _after_position_table(self, module, args, output):
        state = self._state
        if not self._active or state is None:
            return None
        return output * state.position_keep.to(output.dtype)

    def _layer_hook(self, index: int, layer: nn.Module):
        mask_position = _argument_position(layer, "attention_mask")
        hidden_position = _argument_position(layer, "hidden_states")
        token_index = self.plan.layer_tokens.get(index) if self.plan is not None else None
        before_injection = self.plan is not None and index < self.plan.first_layer

        def hook(module, args, kwargs):
            state = self._state
            if not self._active or state is None:
                return None
            mask = state.mask_before if before_injection else state.mask_after
            args, kwargs = _replace_argument(args, kwargs, "attention_mask", mask_position, mask)
            if token_index is not None and state.prefix_in_query:
                hidden = _read_argument(args, kwargs, "hidden_states", hidden_position)
                token = self._visual[:, token_index]
                if hidden.shape[0] != token.shape[0]:  # beams: generate() repeats each sample num_beams times
                    token = token.repeat_interleave(hidden.shape[0] // token.shape[0], dim=0)
                hidden = torch.cat([token[:, None].to(hidden.dtype), hidden[:, 1:]], dim=1)
                args, kwargs = _replace_argument(args, kwargs, "hidden_states", hidden_position, hidden)
            return args, kwargs

        return hook
