"""The sensor modality, a whole plugin in one file: multi-channel 1-D traces (`.npy`) and their encoder.

    model:
      encoders:
        sensor: {type: sensor_transformer, checkpoint: models/demo_weights/sensor-demo/model.safetensors,
                  model_kwargs: {channels: 3, length: 3072, window: 128, hop: 64, width: 96, depth: 3, heads: 4}}

What a plugin declares (docs/sensor_modality.md walks through it): the modality (name "sensor", placeholder
`<sensor>`, chat data key "sensors"), how a file decodes (a float `(channels, samples)` NumPy array, anything
else a MediaDecodeError naming the file and what was expected), how the predictions page previews one (a
small line plot), and its encoder, registered as "sensor_transformer": a tiny 1-D transformer with a CLS
token over the trace's short-time spectra, built from torch's own `torch.stft` and `nn.TransformerEncoderLayer`. Nothing else in the
repository names this file: the modality and encoder registries import every module of models/modalities/.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from torch import nn

from epalm.common.config_io import from_dict
from epalm.common.errors import ConfigError, DataFormatError, MediaDecodeError
from epalm.models.encoders.base import ENCODERS, PerceptionEncoder, require_own_normalization
from epalm.models.encoders.config import EncoderConfig
from epalm.models.modalities.base import FILE_NOT_FOUND, Modality, register_modality
from epalm.models.modalities.previews import png_data_uri

PREVIEW_SIZE = (192, 64)
PREVIEW_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


@dataclass
class SensorEncoderOptions:
    """`model.encoders.sensor.model_kwargs` of the sensor_transformer encoder.

    channels, length: the trace's channels and samples (longer traces are cropped, shorter ones padded).
    window, hop: the short-time Fourier transform making one token per frame (Hann window of `window` samples,
    every `hop`). width, depth, heads, mlp_ratio: the transformer's."""

    channels: int = 3
    length: int = 3072
    window: int = 128
    hop: int = 64
    width: int = 96
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0

    def __post_init__(self) -> None:
        for key in ("channels", "length", "window", "hop", "width", "depth", "heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.encoders.sensor.model_kwargs.{key} must be >= 1, got {getattr(self, key)}")
        if self.window > self.length or self.width % self.heads:
            raise ConfigError(f"sensor_transformer: window {self.window} must fit in length {self.length} and "
                              f"width {self.width} must be a multiple of heads {self.heads}")

    @property
    def frames(self) -> int:
        return 1 + (self.length - self.window) // self.hop

    @property
    def bins(self) -> int:
        return self.window // 2 + 1

    @classmethod
    def of(cls, cfg: EncoderConfig) -> SensorEncoderOptions:
        return from_dict(cls, dict(cfg.model_kwargs), "model.encoders.sensor.model_kwargs")


def load_sensor_trace(path: str, channels: int) -> np.ndarray:
    """A `.npy` file holding a float `(channels, samples)` array -> float32; MediaDecodeError otherwise."""
    try:
        with open(path, "rb") as handle:
            trace = np.load(handle, allow_pickle=False)
    except FileNotFoundError:
        raise MediaDecodeError(path, FILE_NOT_FOUND) from None
    except (ValueError, OSError, EOFError) as error:
        raise MediaDecodeError(path, f"not a NumPy .npy array without pickles ({error})") from None
    if not isinstance(trace, np.ndarray) or trace.dtype.kind not in "fiu":
        raise MediaDecodeError(path, f"expected a numeric array, got dtype {getattr(trace, 'dtype', type(trace))}")
    if trace.ndim != 2 or trace.shape[0] != channels or trace.shape[1] < 1:
        raise MediaDecodeError(path, f"expected shape ({channels}, samples), got {trace.shape}")
    if not np.all(np.isfinite(trace)):
        raise MediaDecodeError(path, "the trace contains NaN or infinite values")
    return trace.astype(np.float32)


class SensorTransform:
    """`(channels, samples)` -> `(channels, length)` tensor normalised per channel. Longer traces are cropped (the
    middle at test time, a random window in training), shorter ones padded with their last value."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, length: int, train: bool):
        self.mean, self.std = mean.float().view(-1, 1), std.float().view(-1, 1)
        self.length, self.train = length, train

    def __call__(self, trace: np.ndarray) -> torch.Tensor:
        samples = trace.shape[1]
        if samples > self.length:
            start = (samples - self.length) // 2
            if self.train:
                start = int(torch.randint(0, samples - self.length + 1, (1,)))
            trace = trace[:, start:start + self.length]
        elif samples < self.length:
            trace = np.pad(trace, ((0, 0), (0, self.length - samples)), mode="edge")
        return (torch.from_numpy(np.ascontiguousarray(trace)) - self.mean) / self.std


@register_modality
class SensorModality(Modality):
    name, placeholder, data_key = "sensor", "<sensor>", "sensors"

    def decode(self, path: str, train: bool, rng: np.random.Generator | None, encoder_cfg: EncoderConfig) -> Any:
        return load_sensor_trace(path, SensorEncoderOptions.of(encoder_cfg).channels)

    def preview_html(self, path: str, page_dir) -> str:
        try:
            trace = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return super().preview_html(path, page_dir)
        return f'<img alt="{html.escape(str(path))}" src="{png_data_uri(trace_plot(trace))}">'


def trace_plot(trace: np.ndarray) -> Image.Image:
    """One line per channel (up to 4 colours, then repeated), scaled to the trace's own range."""
    width, height = PREVIEW_SIZE
    image = Image.new("RGB", PREVIEW_SIZE, "white")
    draw = ImageDraw.Draw(image)
    low, high = float(np.min(trace)), float(np.max(trace))
    scale = (height - 4) / (high - low) if high > low else 0.0
    xs = np.linspace(0, width - 1, trace.shape[1])
    for channel, values in enumerate(trace):
        ys = height - 2 - (values - low) * scale
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=PREVIEW_COLOURS[channel % len(PREVIEW_COLOURS)])
    return image


@ENCODERS.register("sensor_transformer")
class SensorEncoder(PerceptionEncoder):
    """One token per short-time spectrum (the log magnitudes of every channel, a Linear to `width`) + CLS + learned
    positions, `depth` pre-norm transformer blocks, a final LayerNorm. A spectrum, not raw samples, per token: a
    low vibration's cycle is longer than a frame, and what a caption says (pitch, its contour, harmonics) is in it.

    The per-channel mean / std the transform normalises with are buffers, saved with the weights."""

    modality = "sensor"

    def __init__(self, options: SensorEncoderOptions, name: str = "sensor_transformer"):
        super().__init__()
        self.name = name
        self.options = options
        self.hidden_size, self.num_layers = options.width, options.depth
        self.frame = nn.Linear(options.channels * options.bins, options.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, options.width))
        self.position = nn.Parameter(torch.zeros(1, 1 + options.frames, options.width))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(options.width, options.heads, int(options.width * options.mlp_ratio),
                                       dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
            for _ in range(options.depth))
        self.norm = nn.LayerNorm(options.width)
        self.register_buffer("channel_mean", torch.zeros(options.channels))
        self.register_buffer("channel_std", torch.ones(options.channels))
        self.register_buffer("window", torch.hann_window(options.window), persistent=False)
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, media: torch.Tensor, num_tokens: int, readout: str = "cls") -> torch.Tensor:
        if not 1 <= num_tokens <= self.num_layers:
            raise ValueError(f"num_tokens (injected_hidden_states) must be in 1..{self.num_layers}, got {num_tokens}")
        if readout not in self.readouts:
            raise ValueError(f"readout must be one of {self.readouts}, got {readout!r}")
        expected = (self.options.channels, self.options.length)
        if media.ndim != 3 or tuple(media.shape[1:]) != expected:
            raise ValueError(f"expected traces (B, {expected[0]}, {expected[1]}), got {tuple(media.shape)}")
        hidden = torch.cat([self.cls_token.expand(len(media), -1, -1), self.frame(self.spectra(media))], 1)
        hidden = hidden + self.position
        outputs = []
        for block in self.blocks:
            hidden = block(hidden)
            outputs.append(hidden)
        read = [self.norm(h[:, 0]) if readout == "cls" else self.norm(h[:, 1:]).mean(1) for h in outputs[-num_tokens:]]
        return torch.stack(read, dim=1)

    def spectra(self, media: torch.Tensor) -> torch.Tensor:
        """`(B, channels, length)` -> `(B, frames, channels * bins)`: log(1 + |STFT|) of each channel."""
        batch, channels, length = media.shape
        stft = torch.stft(media.reshape(batch * channels, length).float(), self.options.window, self.options.hop,
                          window=self.window, center=False, return_complex=True)
        magnitude = stft.abs().log1p().to(media.dtype)  # (B * C, bins, frames)
        return magnitude.view(batch, channels, self.options.bins, -1).permute(0, 3, 1, 2).flatten(2)

    def preprocessing(self, train: bool) -> Callable[[Any], torch.Tensor]:
        """`(channels, samples)` float array (from `load_sensor_trace`) -> `(channels, length)`."""
        return SensorTransform(self.channel_mean, self.channel_std, self.options.length, train)

    def preprocessing_fingerprint(self) -> dict:
        return {"encoder": "sensor_transformer", "name": self.name, "length": self.options.length,
                "window": self.options.window, "hop": self.options.hop,
                "mean": [round(v, 6) for v in self.channel_mean.tolist()],
                "std": [round(v, 6) for v in self.channel_std.tolist()]}

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> SensorEncoder:
        if cfg.pretrained:
            raise ConfigError("encoder type 'sensor_transformer' has no library weights: give `checkpoint` "
                              "(a .safetensors file) instead of `pretrained: true`")
        require_own_normalization(cfg, "sensor_transformer", "normalises with its own channel statistics")
        encoder = SensorEncoder(SensorEncoderOptions.of(cfg), cfg.name or str(cfg.checkpoint or "random-init"))
        if cfg.checkpoint:
            state = load_file(cfg.checkpoint)
            try:
                encoder.load_state_dict(state)
            except RuntimeError as error:  # missing, unexpected or differently shaped tensors
                detail = " ".join(line.strip() for line in str(error).splitlines()[1:3])
                raise DataFormatError(f"{cfg.checkpoint}: not a sensor_transformer checkpoint of model_kwargs "
                                      f"{cfg.model_kwargs}: {detail[:300]}") from None
        return encoder.eval()

