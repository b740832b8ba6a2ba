"""Local ViT weights are read by our loader (models/modalities/image/timm_vit.py), not by timm's file-type guessing, and the
encoder works with the oldest timm setup.py allows (1.0.3) and with 1.0.29, which misread the demo's file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from epalm.common.errors import DataFormatError
from epalm.models.encoders import EncoderConfig, build_encoder

REPO = Path(__file__).resolve().parent.parent
DEMO_VIT = REPO / "models" / "demo_weights" / "vit-demo" / "model.safetensors"
DEMO_ARCH = dict(img_size=48, patch_size=8, embed_dim=128, depth=4, num_heads=4)
TINY_ARCH = dict(patch_size=8, embed_dim=32, depth=3, num_heads=2)
OLDEST_TIMM = "1.0.3"  # the first timm on PyPI with VisionTransformer.forward_intermediates; setup.py's bound


def _demo_encoder(**extra):
    return build_encoder(EncoderConfig(type="timm_vit", name="vit_tiny_patch16_224", checkpoint=str(DEMO_VIT),
                                       model_kwargs=DEMO_ARCH, **extra))


def test_demo_vit_weights_are_the_files_tensors():
    stored = load_file(str(DEMO_VIT))
    loaded = _demo_encoder().model.state_dict()
    assert set(loaded) == set(stored)  # no classifier head on either side
    for name, tensor in stored.items():
        assert torch.equal(loaded[name], tensor), name


def test_training_script_checkpoint_with_a_head_and_another_image_size(tmp_path):
    """{"model": {"module.<name>": ...}} with a 7-class head, trained at 32 px, used at 48 px: the head is dropped
    and timm's own filter resizes the position table."""
    source = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=7, img_size=32, **TINY_ARCH)
    path = tmp_path / "vit.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    enc = build_encoder(EncoderConfig(type="timm_vit", name="vit_base_patch16_224", checkpoint=str(path),
                                      model_kwargs=dict(img_size=48, **TINY_ARCH)))
    assert enc.model.pos_embed.shape == (1, 1 + 6 * 6, 32) and source.pos_embed.shape == (1, 1 + 4 * 4, 32)
    assert torch.equal(enc.model.cls_token, source.cls_token)
    assert torch.equal(enc.model.blocks[2].mlp.fc2.weight, source.blocks[2].mlp.fc2.weight)


def test_a_checkpoint_of_another_architecture_is_an_error_naming_the_file(tmp_path):
    source = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=32,
                               **{**TINY_ARCH, "depth": 2})
    path = tmp_path / "two_blocks.safetensors"
    from safetensors.torch import save_file

    save_file(source.state_dict(), str(path))
    with pytest.raises(DataFormatError, match=r"two_blocks\.safetensors does not fit .*missing \['blocks\.2\."):
        build_encoder(EncoderConfig(type="timm_vit", name="vit_base_patch16_224", checkpoint=str(path),
                                    model_kwargs=dict(img_size=32, **TINY_ARCH)))
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not weights")
    with pytest.raises(DataFormatError, match=r"notes\.pth: not a safetensors file nor a torch checkpoint"):
        build_encoder(EncoderConfig(type="timm_vit", name="vit_base_patch16_224", checkpoint=str(garbage),
                                    model_kwargs=dict(img_size=32, **TINY_ARCH)))


PROBE = """
import json, sys, timm, torch
from PIL import Image
from tests.test_timm_loading import _demo_encoder
enc = _demo_encoder()
images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    tokens = enc(images, 2)
picture = Image.linear_gradient("L").convert("RGB").resize((70, 40))
pixels = enc.preprocessing(False)(picture)
enc.preprocessing(True)(picture)  # the training augmentation builds and runs too
print(json.dumps({"timm": timm.__version__, "tokens": tokens.tolist(), "pixels": pixels.tolist()}))
"""


@pytest.mark.parametrize("version", [OLDEST_TIMM, "1.0.29"])
def test_other_timm_versions_load_the_demo_vit_alike(tmp_path, version):
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              f"timm=={version}"], capture_output=True, text=True, timeout=300)
    if install.returncode != 0:
        pytest.skip(f"timm=={version} could not be installed (package index unreachable?): {install.stderr[-300:]}")
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert theirs["timm"] == version
    enc = _demo_encoder()
    with torch.no_grad():
        ours = enc(torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0)), 2)
    torch.testing.assert_close(torch.tensor(theirs["tokens"]), ours, rtol=1e-4, atol=1e-5)
    from PIL import Image

    picture = Image.linear_gradient("L").convert("RGB").resize((70, 40))
    torch.testing.assert_close(torch.tensor(theirs["pixels"]), enc.preprocessing(False)(picture))
