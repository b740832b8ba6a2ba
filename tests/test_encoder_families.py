"""Every encoder family read through its own library: each readout against what the library itself computes, the
preprocessing its processor makes, readout pooling, and the one-line errors of a missing processor config, a section
under the wrong modality and a CLS readout of an encoder without one."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from epalm.common.command_line import run_command
from epalm.common.errors import ConfigError
from epalm.models.encoders import EncoderConfig, build_encoder
from epalm.models.encoders.readouts import pool_patch_tokens
import epalm.training.run as entry
from tests.tiny_encoders import FAMILIES, save_family
from tests.tiny_run import tiny_config

IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
WAVE = (0.3 * np.sin(np.arange(24000) / 7.0)).astype(np.float32)  # 1.5 s at 16 kHz, as the demo's clips
FRAMES = np.random.default_rng(1).integers(0, 256, (4, 32, 40, 3), dtype=np.uint8)
ITEMS = {"image": IMAGE, "audio": WAVE, "video": FRAMES}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: save_family(name, root / name) for name in FAMILIES}


def _encoder_and_input(folders, name):
    encoder = build_encoder(EncoderConfig.from_dict(folders[name]))
    media = encoder.preprocessing(train=False)(ITEMS[FAMILIES[name][0]])[None]
    return encoder, media


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def _hidden_states(model, **inputs):
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True)


@pytest.mark.parametrize("name", ["clip_vision", "dinov2", "siglip_vision"])
def test_image_towers_read_what_the_library_computes(folders, name):
    from transformers import AutoModel

    encoder, pixels = _encoder_and_input(folders, name)
    library = AutoModel.from_pretrained(folders[name]["name"]).eval()  # loaded on its own, beside ours
    out = _hidden_states(library, pixel_values=pixels)
    norm = library.layernorm if name == "dinov2" else library.post_layernorm
    prefix = 0 if name == "siglip_vision" else 1
    with torch.no_grad():
        if "cls" in encoder.readouts:
            _close(encoder(pixels, 1, "cls")[:, 0], out.pooler_output)  # the library's pooled CLS
        _close(encoder(pixels, 2, "mean")[:, 0], norm(out.hidden_states[-2][:, prefix:]).mean(1))
        _close(encoder(pixels, 1, "mean")[:, 0], norm(out.hidden_states[-1])[:, prefix:].mean(1))
        assert torch.equal(encoder(pixels, 2, "patches"), out.hidden_states[-2][:, prefix:])  # LLaVA's layer -2
    assert ("cls" in encoder.readouts) is (name != "siglip_vision")


def test_open_clip_towers_read_what_open_clip_computes(folders):
    encoder, pixels = _encoder_and_input(folders, "open_clip")
    visual = encoder.model
    with torch.no_grad():
        features = visual.forward_intermediates(pixels, intermediates_only=False)["image_features"]
        _close(encoder(pixels, 1, "cls")[:, 0] @ visual.proj, features)  # open_clip's pooled embedding
    timm_encoder, pixels = _encoder_and_input(folders, "open_clip_timm")
    trunk = timm_encoder.model.trunk
    assert timm_encoder.readouts == ("mean", "patches") and pixels.shape[-1] == 160  # SigLIP-style: no CLS
    with torch.no_grad():
        _close(timm_encoder(pixels, 1, "mean")[:, 0], trunk.forward_features(pixels)[:, trunk.num_prefix_tokens:].mean(1))


def test_timm_cnn_stages_are_pooled_and_padded(folders):
    encoder, pixels = _encoder_and_input(folders, "timm_pooled")
    model = encoder.model
    assert encoder.num_layers == 4 and [g[0] for g in encoder.grids] == [40, 20, 10, 5]
    with torch.no_grad():
        final = model.forward_features(pixels)
        means = encoder(pixels, 3, "mean")
        _close(means[:, -1], model.forward_head(final, pre_logits=True))  # timm's pooled embedding, head norm in
        second_last = model.forward_intermediates(pixels, indices=2, intermediates_only=True)[0]
        width = second_last.shape[1]
        _close(means[:, 1, :width], second_last.mean((2, 3)))
        assert torch.all(means[:, 1, width:] == 0)  # a narrower stage, zero-padded to the widest
        patches = encoder(pixels, 1, "patches")
    _close(patches, final.flatten(2).transpose(1, 2))
    assert encoder.features_per_instance("patches", 2) == 100  # stage -2: a 10 x 10 grid


def test_audio_towers_read_what_the_library_computes(folders):
    from transformers import ClapAudioModelWithProjection, HubertModel, WhisperModel

    encoder, mel = _encoder_and_input(folders, "whisper_encoder")
    whisper = WhisperModel.from_pretrained(folders["whisper_encoder"]["name"]).encoder.eval()
    out = _hidden_states(whisper, input_features=mel)
    with torch.no_grad():  # its last hidden state is already normed: not twice
        _close(encoder(mel, 1, "mean")[:, 0], out.last_hidden_state.mean(1))
        _close(encoder(mel, 2, "mean")[:, 0], whisper.layer_norm(out.hidden_states[-2]).mean(1))
        assert torch.equal(encoder(mel, 1, "patches"), out.last_hidden_state)

    encoder, features = _encoder_and_input(folders, "clap_audio")
    clap = ClapAudioModelWithProjection.from_pretrained(folders["clap_audio"]["name"]).audio_model.eval()
    assert features.shape[1:] == (4, 52, 64) and features[0, 0, -1, 0] == 1  # fused: 4 channels, is_longer packed
    out = _hidden_states(clap, input_features=features[:, :, :-1], is_longer=torch.tensor([[True]]))
    with torch.no_grad():
        _close(encoder(features, 1, "mean")[:, 0], out.pooler_output)  # CLAP's own pooled output

    encoder, values = _encoder_and_input(folders, "hubert")  # base style: no final norm, no mask given
    hubert = HubertModel.from_pretrained(folders["hubert"]["name"]).eval()
    with torch.no_grad():
        _close(encoder(values, 1, "mean")[:, 0], hubert(values[:, 0]).last_hidden_state.mean(1))


def test_wav2vec2_mean_leaves_the_padding_out(folders):
    from transformers import Wav2Vec2Model

    encoder = build_encoder(EncoderConfig.from_dict(folders["wav2vec2"]))
    short = encoder.preprocessing(train=False)(WAVE[:8000])  # 0.5 s of a 1 s clip: padded, masked
    assert short.shape == (2, 16000) and short[1].sum() == 8000
    model = Wav2Vec2Model.from_pretrained(folders["wav2vec2"]["name"]).eval()
    with torch.no_grad():
        last = model(short[None, 0], attention_mask=short[None, 1].long()).last_hidden_state  # normed (stable)
        valid = int(model._get_feat_extract_output_lengths(torch.tensor(8000)))
        _close(encoder(short[None], 1, "mean")[:, 0], last[:, :valid].mean(1))
        assert not torch.allclose(encoder(short[None], 1, "mean")[:, 0], last.mean(1))


def test_video_towers_read_what_the_library_computes(folders):
    from transformers import VideoMAEModel, XCLIPModel

    encoder, clip = _encoder_and_input(folders, "videomae")
    assert clip.shape == (1, 4, 3, 32, 32) and encoder.patch_layout == (2, 4, 4)
    videomae = VideoMAEModel.from_pretrained(folders["videomae"]["name"]).eval()
    with torch.no_grad():  # mean-pooling checkpoints have no norm after the blocks
        _close(encoder(clip, 1, "mean")[:, 0], videomae(clip).last_hidden_state.mean(1))

    encoder, clip = _encoder_and_input(folders, "xclip_vision")
    tower = XCLIPModel.from_pretrained(folders["xclip_vision"]["name"]).vision_model.eval()
    with torch.no_grad():
        per_frame = tower(pixel_values=clip.flatten(0, 1)).pooler_output  # post_layernorm(CLS) of each frame
        _close(encoder(clip, 1, "cls")[:, 0], per_frame.mean(0, keepdim=True))
        assert encoder(clip, 1, "patches").shape == (1, 4 * 16, 32)


def test_training_preprocessing_varies_and_test_preprocessing_repeats(folders):
    encoder = build_encoder(EncoderConfig.from_dict(folders["clip_vision"]))
    test, train = encoder.preprocessing(train=False), encoder.preprocessing(train=True)
    assert torch.equal(test(IMAGE), test(IMAGE))
    torch.manual_seed(0)
    assert not torch.equal(train(IMAGE), test(IMAGE))
    clap = build_encoder(EncoderConfig.from_dict(folders["clap_audio"]))
    long_clip = np.random.default_rng(2).normal(0, 0.1, 40000).astype(np.float32)  # 2.5 s: random crops
    assert torch.equal(clap.preprocessing(False)(long_clip), clap.preprocessing(False)(long_clip))


def test_patch_tokens_pool_to_a_square_grid():
    tokens = torch.arange(2 * 16 * 3, dtype=torch.float32).view(2, 16, 3)
    pooled = pool_patch_tokens(tokens, (4, 4), 4)
    grid = tokens.view(2, 4, 4, 3)
    _close(pooled[:, 0], grid[:, :2, :2].mean((1, 2)))  # the top-left 2 x 2 patches
    _close(pooled[:, 3], grid[:, 2:, 2:].mean((1, 2)))
    _close(pool_patch_tokens(tokens, (16,), 2)[:, 1], tokens[:, 8:].mean(1))
    video = torch.randn(1, 2 * 16, 3)
    _close(pool_patch_tokens(video, (2, 4, 4), 1)[:, 0], video.mean(1))
    for bad in (5, 0, 17):
        with pytest.raises(ConfigError, match="patch_tokens"):
            pool_patch_tokens(tokens, (4, 4), bad)


# --- the command line: one `error:` line each ------------------------------------------------------------
@pytest.fixture(scope="module")
def run_setup(tmp_path_factory):
    from tests.tiny_run import build_tiny_setup

    return build_tiny_setup(tmp_path_factory.mktemp("setup"))


def _error_line(capsys, setup, tmp_path, encoders: dict, *extra: str) -> str:
    config = tiny_config(setup, tmp_path / "c.yaml")
    argv = ["--config", str(config), "--output_dir", str(tmp_path / "run"), *extra]
    for modality, section in encoders.items():
        argv += ["--set", f"model.encoders={{{modality}: {section}}}"]
    assert run_command(entry.main, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# What each family reads its preprocessing from (timm's comes with the model: its weight file instead).
PROCESSOR_FILES = {"open_clip": "open_clip_config.json", "open_clip_timm": "open_clip_config.json",
                   "timm_pooled": "model.safetensors"}
WRONG = {"image": "audio", "audio": "video", "video": "image"}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_missing_processor_config_is_one_error_line(folders, run_setup, tmp_path, capsys, name):
    section = dict(folders[name])
    missing = PROCESSOR_FILES.get(name, "preprocessor_config.json")
    key = "checkpoint" if name == "timm_pooled" else "name"
    source = section[key].removeprefix("local-dir:")
    folder = tmp_path / "copy"
    shutil.copytree(Path(source).parent if key == "checkpoint" else source, folder)
    (folder / missing).unlink()
    section[key] = section[key].replace(str(Path(source).parent if key == "checkpoint" else source), str(folder))
    line = _error_line(capsys, run_setup, tmp_path, {FAMILIES[name][0]: section}, "--set", "model.readout=mean")
    assert missing in line and str(folder) in line


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_section_under_the_wrong_modality_is_one_error_line(folders, run_setup, tmp_path, capsys, name):
    modality = FAMILIES[name][0]
    line = _error_line(capsys, run_setup, tmp_path, {WRONG[modality]: folders[name]})
    assert f"model.encoders.{WRONG[modality]}: type '{folders[name]['type']}' reads {modality}, not" in line


def test_a_missing_model_config_is_one_error_line(folders, run_setup, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(folders["videomae"]["name"], folder)
    (folder / "config.json").unlink()
    line = _error_line(capsys, run_setup, tmp_path, {"video": {**folders["videomae"], "name": str(folder)}},
                       "--set", "model.readout=mean")
    assert "config.json" in line and str(folder) in line


def test_a_cls_readout_of_an_encoder_without_one_is_one_error_line(folders, run_setup, tmp_path, capsys):
    line = _error_line(capsys, run_setup, tmp_path, {"image": folders["siglip_vision"]})
    assert "model.readout 'cls'" in line and "has no CLS token" in line and "mean, patches" in line


def test_the_fingerprint_is_the_processors_whole_config(folders, tmp_path):
    """The feature cache's key: every family's fingerprint is JSON, and a processor changed in its folder changes it."""
    import json

    from epalm.dataset.feature_cache import cache_key

    for name, section in folders.items():
        encoder = build_encoder(EncoderConfig.from_dict(section))
        assert cache_key({"type": section["type"]}, encoder.preprocessing_fingerprint(), 1), name
    copy = tmp_path / "clip"
    shutil.copytree(folders["clip_vision"]["name"], copy)
    config = json.loads((copy / "preprocessor_config.json").read_text())
    (copy / "preprocessor_config.json").write_text(json.dumps({**config, "image_mean": [0.5, 0.5, 0.5]}))
    before = build_encoder(EncoderConfig.from_dict(folders["clip_vision"])).preprocessing_fingerprint()
    after = build_encoder(EncoderConfig(type="clip_vision", name=str(copy), pretrained=True)).preprocessing_fingerprint()
    assert before["processor"]["image_mean"] != after["processor"]["image_mean"]
