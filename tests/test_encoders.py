"""Perception encoders: last-K CLS read-out, weight loading (timm files, original TimeSformer / AST), preprocessing."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from transformers import ASTConfig, ASTModel, TimesformerConfig, TimesformerModel

from epalm.models.encoders import ENCODERS, EncoderConfig, build_encoder

TIMM_ARCH = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)
TSF_ARCH = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32,
                patch_size=16)
TSF_HEADS = {"num_attention_heads": 2}  # the rest of a tiny original checkpoint's architecture is read off its shapes
AST_ARCH = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, patch_size=16,
                frequency_stride=8, time_stride=8)
AST_FRAMES, AST_MELS = 48, 32


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values everywhere (norms and biases included) so a mis-mapped weight changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale_like = p.ndim == 1 and "norm" in name and name.endswith("weight")
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if scale_like else 0.0))
    return model.eval()


def _final_norm_cls_per_block(blocks, norm, run) -> list[torch.Tensor]:
    """Independent reference: forward hooks on every block, CLS of each output through the final norm."""
    outputs = []
    def keep(module, inputs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    hooks = [b.register_forward_hook(keep) for b in blocks]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return [norm(o[:, 0]) for o in outputs]


def test_registry_has_the_three_encoders():
    assert {"timm_vit", "timesformer", "ast"} <= set(ENCODERS.names())


# ---------------------------------------------------------------- timm ViT


def test_timm_vit_returns_last_k_normed_cls_tokens():
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(type="timm_vit", name="vit_base_patch16_224", model_kwargs=TIMM_ARCH))
    assert (enc.modality, enc.hidden_size, enc.num_layers) == ("image", 32, 3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = enc(x, 2)
        features = enc.model.forward_features(x)
    assert tokens.shape == (2, 2, 32)
    torch.testing.assert_close(tokens[:, -1], features[:, 0])
    reference = _final_norm_cls_per_block(enc.model.blocks, enc.model.norm, lambda: enc.model(x))
    torch.testing.assert_close(tokens, torch.stack(reference[-2:], dim=1))
    with pytest.raises(ValueError, match="1..3"):
        enc(x, 4)


def test_timm_vit_loads_a_local_checkpoint_file(tmp_path):
    source = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7, **TIMM_ARCH)
    _randomise(source, seed=1)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)  # with its 7-class head, which the encoder drops
    enc = build_encoder(
        EncoderConfig(type="timm_vit", name="vit_base_patch16_224", checkpoint=str(path), model_kwargs=TIMM_ARCH)
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x, 1)[:, 0], source.forward_features(x)[:, 0])


def test_timm_vit_preprocessing_uses_the_encoders_or_clip_normalisation():
    cfg = dict(type="timm_vit", name="vit_base_patch16_224.augreg_in21k_ft_in1k", model_kwargs=TIMM_ARCH)
    own = build_encoder(EncoderConfig(**cfg))
    clip = build_encoder(EncoderConfig(**cfg, normalization="clip"))
    white = Image.new("RGB", (50, 30), (255, 255, 255))
    test_view = own.preprocessing(train=False)(white)
    assert test_view.shape == (3, 32, 32)  # squashed to S x S, not cropped
    torch.testing.assert_close(test_view, torch.ones(3, 32, 32))  # augreg ViT: mean 0.5, std 0.5
    clip_view = clip.preprocessing(train=False)(white)
    clip_mean, clip_std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    expected = (1 - torch.tensor(clip_mean)) / torch.tensor(clip_std)
    torch.testing.assert_close(clip_view[:, 0, 0], expected)
    torch.manual_seed(0)
    assert own.preprocessing(train=True)(white).shape == (3, 32, 32)
    fp_own, fp_clip = own.preprocessing_fingerprint(), clip.preprocessing_fingerprint()
    assert fp_own != fp_clip and fp_own["size"] == 32 and fp_own["interpolation"] == "bicubic"


def test_encoders_are_frozen_and_stay_in_eval_mode():
    enc = build_encoder(EncoderConfig(type="timm_vit", name="vit_base_patch16_224", model_kwargs=TIMM_ARCH))
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.model.training


def test_encoder_dtype_holds_the_frozen_weights_and_casts_the_media():
    """bf16 under bf16 mixed precision (as the LM): the same CLS tokens up to bf16 rounding; auto resolves like the
    LM's dtype, except that trainable LayerNorms keep the encoder in float32."""
    from epalm.training.accelerator_setup import resolve_weight_dtypes
    from epalm.training.run_config import RunConfig

    torch.manual_seed(0)
    fp32 = build_encoder(EncoderConfig(type="timm_vit", name="vit_base_patch16_224", model_kwargs=TIMM_ARCH))
    half = build_encoder(EncoderConfig(type="timm_vit", name="vit_base_patch16_224", model_kwargs=TIMM_ARCH,
                                       dtype="bfloat16"))
    half.load_state_dict(fp32.state_dict())
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    from tests.tiny_models import tiny_model

    model = tiny_model("opt", encoders={"image": EncoderConfig(type="timm_vit", name="vit_base_patch16_224",
                                                               model_kwargs=TIMM_ARCH, dtype="bfloat16")})
    model.encoder_for().load_state_dict(fp32.state_dict())
    media = torch.randn(2, 3, fp32.image_size, fp32.image_size)
    with torch.no_grad():
        expected = fp32(media, 2)
        got = model.encode(media)  # float32 media, cast to the encoder's dtype
    assert got.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(got.float(), expected, dim=-1).min() > 0.99
    with pytest.raises(ValueError, match="encoder dtype"):
        EncoderConfig(dtype="fp8")

    for unfreeze, expected_dtype in ((False, "bfloat16"), (True, "float32")):
        cfg = RunConfig()
        cfg.model.unfreeze_vision_layer_norm = unfreeze
        resolve_weight_dtypes(cfg, "bf16")  # what make_accelerator applies (an Accelerator is once per process)
        assert (cfg.model.lm.dtype, cfg.model.encoders["image"].dtype) == ("bfloat16", expected_dtype)


def test_encoder_config_is_strict():
    with pytest.raises(ValueError, match="unknown encoder config key"):
        EncoderConfig.from_dict({"type": "timm_vit", "nmae": "x"})
    with pytest.raises(ValueError, match="not both"):
        EncoderConfig(checkpoint="a.pth", pretrained=True)
    with pytest.raises(ValueError, match="normalization"):
        EncoderConfig(normalization="imagenet")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_encoder(EncoderConfig(type="ast", checkpoint="/nowhere.pth"))


# ---------------------------------------------------------------- TimeSformer


def _tiny_timesformer(num_frames: int, seed: int) -> TimesformerModel:
    torch.manual_seed(seed)
    return _randomise(TimesformerModel(TimesformerConfig(num_frames=num_frames, layer_norm_eps=1e-6, **TSF_ARCH)), seed)


def test_timesformer_returns_last_k_normed_cls_tokens():
    enc = build_encoder(EncoderConfig(type="timesformer", num_frames=4, model_kwargs=TSF_ARCH))
    assert (enc.modality, enc.hidden_size, enc.num_layers) == ("video", 32, 3)
    video = torch.randn(2, 3, 4, 32, 32)  # (B, C, T, H, W)
    with torch.no_grad():
        tokens = enc(video, 3)
        last = enc.model(pixel_values=video.transpose(1, 2)).last_hidden_state
    assert tokens.shape == (2, 3, 32)
    torch.testing.assert_close(tokens[:, -1], last[:, 0])
    reference = _final_norm_cls_per_block(enc.model.encoder.layer, enc.model.layernorm,
                                          lambda: enc.model(pixel_values=video.transpose(1, 2)))
    torch.testing.assert_close(tokens, torch.stack(reference, dim=1))
    with pytest.raises(ValueError, match="4"):
        enc(torch.randn(1, 3, 5, 32, 32), 1)


def _original_timesformer_layout(model: TimesformerModel) -> dict[str, torch.Tensor]:
    """The test's own inverse mapping: facebookresearch/TimeSformer key names, as its `.pyth` stores them."""
    sd = model.state_dict()
    out = {
        "model.cls_token": sd["embeddings.cls_token"],
        "model.pos_embed": sd["embeddings.position_embeddings"],
        "model.time_embed": sd["embeddings.time_embeddings"],
        "model.patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "model.patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "model.norm.weight": sd["layernorm.weight"],
        "model.norm.bias": sd["layernorm.bias"],
        "model.head.weight": torch.randn(5, 32),
        "model.head.bias": torch.randn(5),
    }
    names = {
        "norm1": "layernorm_before", "attn.qkv": "attention.attention.qkv", "attn.proj": "attention.output.dense",
        "temporal_norm1": "temporal_layernorm", "temporal_attn.qkv": "temporal_attention.attention.qkv",
        "temporal_attn.proj": "temporal_attention.output.dense", "temporal_fc": "temporal_dense",
        "norm2": "layernorm_after", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
    }
    for i in range(model.config.num_hidden_layers):
        for original, ours in names.items():
            for kind in ("weight", "bias"):
                out[f"model.blocks.{i}.{original}.{kind}"] = sd[f"encoder.layer.{i}.{ours}.{kind}"]
    return out


def test_timesformer_loads_the_original_pyth_layout(tmp_path, caplog):
    source = _tiny_timesformer(num_frames=4, seed=3)
    path = tmp_path / "TimeSformer_tiny.pyth"
    torch.save({"model_state": _original_timesformer_layout(source), "epoch": 15, "cfg": "yaml text"}, path)
    with caplog.at_level(logging.INFO):
        enc = build_encoder(EncoderConfig(type="timesformer", checkpoint=str(path), num_frames=4,
                                          model_kwargs=TSF_HEADS))
    assert "model.head.weight" not in caplog.text and "head.weight" in caplog.text  # the head is reported as unused
    video = torch.randn(2, 3, 4, 32, 32)
    reference = _final_norm_cls_per_block(source.encoder.layer, source.layernorm,
                                          lambda: source(pixel_values=video.transpose(1, 2)))
    with torch.no_grad():
        torch.testing.assert_close(enc(video, 2), torch.stack(reference[-2:], dim=1))

    # 8-frame clips from the 4-frame checkpoint: time embeddings resized by nearest neighbour
    enc8 = build_encoder(EncoderConfig(type="timesformer", checkpoint=str(path), num_frames=8,
                                       model_kwargs=TSF_HEADS))
    torch.testing.assert_close(enc8.model.embeddings.time_embeddings,
                               source.embeddings.time_embeddings.repeat_interleave(2, dim=1))
    with torch.no_grad():
        assert enc8(torch.randn(1, 3, 8, 32, 32), 1).shape == (1, 1, 32)


def test_timesformer_original_checkpoint_reports_unmapped_and_missing_keys(tmp_path, caplog):
    layout = _original_timesformer_layout(_tiny_timesformer(num_frames=4, seed=4))
    layout["model.blocks.0.mystery.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pyth"
    torch.save({"model_state": layout}, path)
    with caplog.at_level(logging.WARNING):
        build_encoder(EncoderConfig(type="timesformer", checkpoint=str(path), num_frames=4, model_kwargs=TSF_HEADS))
    assert "blocks.0.mystery.weight" in caplog.text
    del layout["model.blocks.2.temporal_fc.weight"]
    torch.save({"model_state": layout}, path)
    with pytest.raises(ValueError, match=r"encoder\.layer\.2\.temporal_dense\.weight"):
        build_encoder(EncoderConfig(type="timesformer", checkpoint=str(path), num_frames=4, model_kwargs=TSF_HEADS))


def test_timesformer_loads_a_transformers_folder_with_its_normalisation(tmp_path):
    import json

    source = _tiny_timesformer(num_frames=4, seed=7)
    source.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    enc = build_encoder(EncoderConfig(type="timesformer", name=str(tmp_path), pretrained=True, num_frames=4))
    assert enc.preprocessing_fingerprint()["mean"] == [0.5] * 3
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = source(pixel_values=video.transpose(1, 2)).last_hidden_state[:, 0]
        torch.testing.assert_close(enc(video, 1)[:, 0], expected)


def test_timesformer_video_preprocessing_is_one_draw_per_clip():
    enc = build_encoder(EncoderConfig(type="timesformer", num_frames=4, model_kwargs=TSF_ARCH))
    frame = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    clip = np.stack([frame] * 4)
    torch.manual_seed(0)
    train_view = enc.preprocessing(train=True)(clip)
    assert train_view.shape == (3, 4, 32, 32)
    for t in range(1, 4):  # same crop, flip and RandAugment ops for every frame
        torch.testing.assert_close(train_view[:, t], train_view[:, 0])
    grey = np.full((4, 20, 30, 3), 255, dtype=np.uint8)
    test_view = enc.preprocessing(train=False)(grey)
    torch.testing.assert_close(test_view, torch.full((3, 4, 32, 32), (1 - 0.45) / 0.225))
    assert enc.preprocessing_fingerprint()["num_frames"] == 4


# ---------------------------------------------------------------- AST


def _tiny_ast(seed: int) -> ASTModel:
    torch.manual_seed(seed)
    config = ASTConfig(max_length=AST_FRAMES, num_mel_bins=AST_MELS, layer_norm_eps=1e-6, **AST_ARCH)
    return _randomise(ASTModel(config), seed)


def _ast_config(checkpoint: str | None = None) -> EncoderConfig:
    return EncoderConfig(type="ast", checkpoint=checkpoint, audio_frames=AST_FRAMES, mel_bins=AST_MELS,
                         model_kwargs=AST_ARCH if checkpoint is None else
                         {"num_attention_heads": 2, "frequency_stride": 8, "time_stride": 8})


def test_ast_returns_last_k_normed_cls_tokens():
    enc = build_encoder(_ast_config())
    assert (enc.modality, enc.hidden_size, enc.num_layers) == ("audio", 32, 3)
    fbank = torch.randn(2, AST_FRAMES, AST_MELS)
    with torch.no_grad():
        tokens = enc(fbank, 2)
        last = enc.model(input_values=fbank).last_hidden_state
    assert tokens.shape == (2, 2, 32)
    torch.testing.assert_close(tokens[:, -1], last[:, 0])
    reference = _final_norm_cls_per_block(enc.model.layers, enc.model.layernorm, lambda: enc.model(input_values=fbank))
    torch.testing.assert_close(tokens, torch.stack(reference[-2:], dim=1))


def _original_ast_layout(model: ASTModel) -> dict[str, torch.Tensor]:
    """The test's own inverse mapping: YuanGongND/ast key names with fused qkv, as its `.pth` stores them."""
    sd = model.state_dict()
    out = {
        "module.v.cls_token": sd["embeddings.cls_token"],
        "module.v.dist_token": sd["embeddings.distillation_token"],
        "module.v.pos_embed": sd["embeddings.position_embeddings"],
        "module.v.patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "module.v.patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "module.v.norm.weight": sd["layernorm.weight"],
        "module.v.norm.bias": sd["layernorm.bias"],
        "module.v.head.weight": torch.randn(1000, 32), "module.v.head.bias": torch.randn(1000),
        "module.v.head_dist.weight": torch.randn(1000, 32), "module.v.head_dist.bias": torch.randn(1000),
        "module.mlp_head.0.weight": torch.randn(32), "module.mlp_head.0.bias": torch.randn(32),
        "module.mlp_head.1.weight": torch.randn(527, 32), "module.mlp_head.1.bias": torch.randn(527),
    }
    for i in range(model.config.num_hidden_layers):
        p, q = f"module.v.blocks.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            out[p + f"attn.qkv.{kind}"] = torch.cat([sd[q + f"attention.{x}_proj.{kind}"] for x in "qkv"])
            out[p + f"attn.proj.{kind}"] = sd[q + f"attention.o_proj.{kind}"]
            out[p + f"norm1.{kind}"] = sd[q + f"layernorm_before.{kind}"]
            out[p + f"norm2.{kind}"] = sd[q + f"layernorm_after.{kind}"]
            out[p + f"mlp.fc1.{kind}"] = sd[q + f"mlp.fc1.{kind}"]
            out[p + f"mlp.fc2.{kind}"] = sd[q + f"mlp.fc2.{kind}"]
    return out


def test_ast_loads_the_original_pth_layout(tmp_path, caplog):
    source = _tiny_ast(seed=5)
    path = tmp_path / "audioset_tiny.pth"
    torch.save(_original_ast_layout(source), path)
    with caplog.at_level(logging.INFO):
        enc = build_encoder(_ast_config(str(path)))
    assert "mlp_head.1.weight" in caplog.text and "head_dist.weight" in caplog.text
    fbank = torch.randn(2, AST_FRAMES, AST_MELS)
    reference = _final_norm_cls_per_block(source.layers, source.layernorm, lambda: source(input_values=fbank))
    with torch.no_grad():
        torch.testing.assert_close(enc(fbank, 3), torch.stack(reference, dim=1))


def test_ast_original_checkpoint_errors_name_the_problem(tmp_path, caplog):
    layout = _original_ast_layout(_tiny_ast(seed=6))
    layout["module.v.blocks.1.gamma"] = torch.ones(32)
    path = tmp_path / "a.pth"
    torch.save(layout, path)
    with caplog.at_level(logging.WARNING):
        build_encoder(_ast_config(str(path)))
    assert "v.blocks.1.gamma" in caplog.text
    wrong_length = EncoderConfig(type="ast", checkpoint=str(path), audio_frames=64, mel_bins=AST_MELS,
                                 model_kwargs={"num_attention_heads": 2, "frequency_stride": 8, "time_stride": 8})
    with pytest.raises(ValueError, match="pos_embed has"):
        build_encoder(wrong_length)
    del layout["module.v.blocks.1.attn.qkv.bias"]
    torch.save(layout, path)
    with pytest.raises(ValueError, match=r"layers\.1\.attention\.q_proj\.bias"):
        build_encoder(_ast_config(str(path)))


@pytest.mark.filterwarnings("ignore:At least one mel filter")
def test_ast_loads_a_transformers_folder_with_its_feature_extractor_stats(tmp_path):
    from transformers import ASTFeatureExtractor

    source = _tiny_ast(seed=8)
    source.save_pretrained(tmp_path)
    ASTFeatureExtractor(mean=-3.0, std=2.0).save_pretrained(tmp_path)
    enc = build_encoder(EncoderConfig(type="ast", name=str(tmp_path), pretrained=True, audio_frames=AST_FRAMES,
                                      mel_bins=AST_MELS))
    assert (enc.mean, enc.std) == (-3.0, 2.0)
    fbank = torch.randn(1, AST_FRAMES, AST_MELS)
    with torch.no_grad():
        torch.testing.assert_close(enc(fbank, 1)[:, 0], source(input_values=fbank).last_hidden_state[:, 0])


def test_ast_rejects_clip_normalisation():
    with pytest.raises(ValueError, match="AudioSet"):
        build_encoder(EncoderConfig(type="ast", normalization="clip", audio_frames=AST_FRAMES, mel_bins=AST_MELS,
                                    model_kwargs=AST_ARCH))


@pytest.mark.parametrize("type_name, name, how", [
    ("timm_pooled", "convnext_tiny", "timm's data config"), ("sensor_transformer", "sensor", "channel statistics"),
    ("clip_vision", "openai/clip-vit-base-patch32", "its processor says"),
    ("whisper_encoder", "openai/whisper-tiny", "its processor says")])
def test_encoders_with_their_own_normalisation_refuse_another_before_loading(type_name, name, how):
    with pytest.raises(ValueError, match=f"encoder type '{type_name}' .*{how}.*use normalization: encoder"):
        build_encoder(EncoderConfig(type=type_name, name=name, normalization="clip"))


def test_unreadable_original_checkpoint_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="broken.pth"):
        build_encoder(_ast_config(str(path)))
    torch.save({"model_state": {"model.blocks.0.attn.qkv.weight": torch.zeros(3, 1)}}, path)
    with pytest.raises(ValueError, match="not an original checkpoint"):
        build_encoder(EncoderConfig(type="timesformer", checkpoint=str(path)))
