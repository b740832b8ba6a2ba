"""Tiny random stand-ins of every encoder family, built with the libraries' own config classes and saved to a folder
with their processor configs (nothing downloaded). `save_family(name, folder)` -> the `model.encoders` section that
reads it. Norm weights are perturbed: a fresh LayerNorm (weight 1, bias 0) is nearly idempotent, which would hide a
norm applied twice or not at all."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2)


def perturb_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
                module.weight.add_(0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.add_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return model.eval()


def _save(model: nn.Module, processor: Any, folder: Path) -> None:
    perturb_norms(model).save_pretrained(folder)
    processor.save_pretrained(folder)


def clip_vision(folder: Path) -> dict:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    _save(CLIPVisionModel(CLIPVisionConfig(**TINY, image_size=32, patch_size=8)),
          CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), folder)
    return {"type": "clip_vision", "name": str(folder), "pretrained": True}


def siglip_vision(folder: Path) -> dict:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    _save(SiglipVisionModel(SiglipVisionConfig(**TINY, image_size=32, patch_size=8)),
          SiglipImageProcessor(size={"height": 32, "width": 32}), folder)
    return {"type": "siglip_vision", "name": str(folder), "pretrained": True}


def dinov2(folder: Path) -> dict:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, image_size=32,
                          patch_size=8)
    _save(Dinov2Model(config), BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                 image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
          folder)
    return {"type": "dinov2", "name": str(folder), "pretrained": True}


def open_clip(folder: Path, trunk: str | None = None) -> dict:
    """An open_clip ViT of its own (trunk None) or around a timm ViT trunk (`test_vit3`: no CLS token, attention
    pooling, as SigLIP's), saved as a `local-dir:` folder."""
    import open_clip as library
    from safetensors.torch import save_file

    vision = ({"image_size": 160, "timm_model_name": trunk, "timm_model_pretrained": False, "timm_pool": "map",
               "timm_proj": "none"} if trunk else
              {"image_size": 32, "layers": 3, "width": 32, "head_width": 16, "patch_size": 8, "mlp_ratio": 2.0})
    config = {"embed_dim": 32 if not trunk else 64, "vision_cfg": vision,
              "text_cfg": {"context_length": 16, "vocab_size": 500, "width": 32, "heads": 2, "layers": 1}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": config, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    model = perturb_norms(library.create_model(f"local-dir:{folder}", load_weights=False))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return {"type": "open_clip", "name": f"local-dir:{folder}", "pretrained": True}


def timm_pooled(folder: Path) -> dict:
    """timm's own test ConvNeXt (4 stages, 160 px), its weights in a file."""
    import timm
    from safetensors.torch import save_file

    model = perturb_norms(timm.create_model("test_convnext", pretrained=False, num_classes=0))
    folder.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    return {"type": "timm_pooled", "name": "test_convnext", "checkpoint": str(folder / "model.safetensors")}


VOCAB = 100  # Whisper's decoder vocabulary: every special id must lie below it


def whisper_encoder(folder: Path) -> dict:
    """2 s windows: 200 mel frames, 100 encoder positions (the extractor and the model agree)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    config = WhisperConfig(vocab_size=VOCAB, d_model=32, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                           max_source_positions=100, max_target_positions=16, pad_token_id=VOCAB - 1,
                           bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1, decoder_start_token_id=VOCAB - 2,
                           begin_suppress_tokens=[VOCAB - 1], suppress_tokens=[])
    _save(WhisperModel(config), WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160,
                                                        chunk_length=2, n_fft=400), folder)
    return {"type": "whisper_encoder", "name": str(folder), "pretrained": True}


def clap_audio(folder: Path, fused: bool = True) -> dict:
    """HTS-AT with 2 stages over 64 mel bins, 1 s windows; fused (4 channels and `is_longer`) as
    laion/clap-htsat-fused, or not."""
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

    config = ClapAudioConfig(num_mel_bins=64, spec_size=64, patch_size=4, patch_stride=[4, 4], window_size=4,
                             patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32,
                             projection_dim=16, enable_fusion=fused, fusion_type="aff_2d" if fused else None,
                             mlp_ratio=2.0)
    extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=16000, hop_length=320, max_length_s=1,
                                     fft_window_size=640, frequency_min=50, frequency_max=8000,
                                     truncation="fusion" if fused else "rand_trunc", padding="repeatpad")
    _save(ClapAudioModelWithProjection(config), extractor, folder)
    return {"type": "clap_audio", "name": str(folder), "pretrained": True}


def wav2vec2(folder: Path, model_type: str = "wav2vec2", stable: bool = True) -> dict:
    """1 s clips (audio_frames 100); large-style ("stable layer norm", attention mask) unless `stable` is False."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    small = dict(TINY, conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                 vocab_size=32, do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group")
    config_class, model_class = (Wav2Vec2Config, Wav2Vec2Model) if model_type == "wav2vec2" else \
        (HubertConfig, HubertModel)
    _save(model_class(config_class(**small)),
          Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                   return_attention_mask=stable), folder)
    return {"type": "wav2vec2", "name": str(folder), "pretrained": True, "audio_frames": 100}


def hubert(folder: Path) -> dict:
    return wav2vec2(folder, "hubert", stable=False)


def videomae(folder: Path) -> dict:
    from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

    _save(VideoMAEModel(VideoMAEConfig(**TINY, image_size=32, patch_size=8, num_frames=4, tubelet_size=2)),
          VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), folder)
    return {"type": "videomae", "name": str(folder), "pretrained": True, "num_frames": 4}


def xclip_vision(folder: Path) -> dict:
    """A full X-CLIP model's folder (as microsoft/xclip-base-patch32): its vision tower is read out of it."""
    from transformers import VideoMAEImageProcessor, XCLIPConfig, XCLIPModel

    config = XCLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(TINY, image_size=32, patch_size=8, num_frames=4, mit_hidden_size=32,
                           mit_intermediate_size=64, mit_num_attention_heads=2),
        projection_dim=16, prompt_layers=1, prompt_attention_heads=2, prompt_projection_dim=32)
    _save(XCLIPModel(config), VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
          folder)
    return {"type": "xclip_vision", "name": str(folder), "pretrained": True, "num_frames": 4}


FAMILIES: dict[str, tuple[str, Callable[[Path], dict]]] = {  # name: (modality, builder)
    "clip_vision": ("image", clip_vision),
    "siglip_vision": ("image", siglip_vision),
    "dinov2": ("image", dinov2),
    "open_clip": ("image", open_clip),
    "open_clip_timm": ("image", lambda folder: open_clip(folder, trunk="test_vit3")),
    "timm_pooled": ("image", timm_pooled),
    "whisper_encoder": ("audio", whisper_encoder),
    "clap_audio": ("audio", clap_audio),
    "wav2vec2": ("audio", wav2vec2),
    "hubert": ("audio", hubert),
    "videomae": ("video", videomae),
    "xclip_vision": ("video", xclip_vision),
}


def save_family(name: str, folder: Path) -> dict:
    """Build family `name` tiny and random into `folder`; returns its `model.encoders.<modality>` section."""
    return FAMILIES[name][1](Path(folder))
