"""Every image a user has opens right: real photographs (scikit-image's) saved in each kind of the issue's table,
decoded by the image modality as the upright 8-bit RGB picture a viewer shows; the same pixels reach the encoder,
the feature cache and the predictions page."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from epalm.common.errors import MediaDecodeError
from epalm.dataset.feature_cache import encode_items
from epalm.models.modalities import get_modality
from epalm.models.modalities.image.decode import image_size, load_image
from tests.real_photos import build_photo_set
from tests.tiny_models import TINY_VIT, tiny_model

DECODABLE = ["rgb_jpeg", "gray_jpeg", "cmyk_jpeg", "rgba_png", "palette_png", "bilevel_png", "la_png", "moon16",
             "tiny", "strip", "exif6"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return build_photo_set(tmp_path_factory.mktemp("photos"))


@pytest.mark.parametrize("name", DECODABLE)
def test_each_kind_decodes_to_the_picture_it_shows(photos, name):
    photo = photos[name]
    decoded = load_image(str(photo.path))
    assert decoded.mode == "RGB"
    pixels = np.asarray(decoded).astype(int)
    assert pixels.shape == photo.expected.shape, f"{photo.kind}: {decoded.size}"
    error = np.abs(pixels - photo.expected.astype(int))
    if photo.tolerance:  # JPEG: a small mean error
        assert error.mean() <= photo.tolerance, f"{photo.kind}: mean error {error.mean():.2f}"
    else:  # lossless: exact up to the rounding of the alpha blend
        assert error.max() <= 1, f"{photo.kind}: max error {error.max()}"


def test_a_16_bit_photograph_keeps_its_brightness(photos):
    """Today's convert("RGB") clips: 99.9 % of the moon's pixels become 255."""
    moon16, moon8 = np.asarray(load_image(str(photos["moon16"].path))), np.asarray(load_image(str(photos["moon8"].path)))
    assert (moon16 == 255).mean() < 0.01
    assert np.array_equal(moon16, moon8)  # the 16-bit file decodes to the pixels of its 8-bit export
    assert abs(moon16.mean() - 112) < 3  # the moon's mean brightness


def test_a_phone_photo_tagged_rotate_90_is_read_upright(photos):
    stored = Image.open(photos["exif6"].path)
    assert stored.size == (400, 600) and stored.getexif()[0x0112] == 6  # the file itself is sideways
    assert load_image(str(photos["exif6"].path)).size == (600, 400) == image_size(str(photos["exif6"].path))


def test_transparent_pixels_become_the_stated_background(photos):
    rgba = np.asarray(Image.open(photos["rgba_png"].path))
    transparent = rgba[..., 3] == 0
    assert transparent.any() and (rgba[transparent][:, :3] == 0).all()  # black stored under the hole
    decoded = np.asarray(load_image(str(photos["rgba_png"].path)))
    assert (decoded[transparent] == 255).all()
    black = np.asarray(load_image(str(photos["rgba_png"].path), background=(0, 0, 0)))
    assert (black[transparent] == 0).all()


@pytest.mark.parametrize("name,reason", [("truncated", "truncated"), ("empty", "empty file"),
                                         ("text", "UnidentifiedImageError")])
def test_broken_files_are_reported_with_their_path_and_reason(photos, name, reason):
    with pytest.raises(MediaDecodeError, match=reason) as error:
        load_image(str(photos[name].path))
    assert error.value.path == str(photos[name].path)


def test_header_sizes_without_decoding(photos):
    assert image_size(str(photos["strip"].path)) == (2000, 50)
    assert image_size(str(photos["tiny"].path)) == (16, 16)
    assert image_size(str(photos["truncated"].path)) == (640, 427)  # its header is intact: load_image rejects it
    for name in ("empty", "text"):
        with pytest.raises(MediaDecodeError):
            image_size(str(photos[name].path))
    with pytest.raises(MediaDecodeError, match="not found"):
        get_modality("image").probe(str(photos["rgb_jpeg"].path) + ".missing")


def test_the_encoder_the_feature_cache_and_the_page_see_the_same_pixels(photos, tmp_path):
    """Training, evaluation and chat read through the modality's preprocessor, the feature cache through
    encode_items, the predictions page through preview_html: a 16-bit moon must look like the 8-bit one in each."""
    model = tiny_model()
    modality = get_modality("image")
    preprocess = modality.preprocessor(model.encoder_for("image"), TINY_VIT, train=False)
    moon16, moon8 = str(photos["moon16"].path), str(photos["moon8"].path)
    assert torch.equal(preprocess(moon16), preprocess(moon8))
    with torch.no_grad():
        computed, errors = encode_items([photos["moon16"].path.name, photos["moon8"].path.name],
                                        photos["moon16"].path.parent, preprocess,
                                        lambda batch: model.encode(batch, "image"), batch_size=2, show_progress=False)
    assert not errors and torch.equal(computed["moon16.png"], computed["moon.png"])
    thumbnail = re.search(r'base64,([^"]+)"', modality.preview_html(moon16, tmp_path)).group(1)
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(thumbnail))).convert("L"))
    assert abs(shown.mean() - 112) < 5  # not a white square
