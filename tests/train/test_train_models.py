"""Backbone registry, weight resolution, model shapes, frozen BatchNorm, and augmentation."""

import os
from pathlib import Path

import numpy as np
import pytest

from ecgedge.device.dsp import SpectrogramConfig
from ecgedge.device.errors import EcgEdgeError
from ecgedge.train import augment, models

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / ".." / "shared" / "weights" / "imagenet"
WEIGHTS = Path(os.environ.get("ECGEDGE_WEIGHTS") or SHARED_WEIGHTS)


# ---------------------------------------------------------------------------------------------
# Registry and weights


@pytest.mark.skipif(not (WEIGHTS / "SHA256SUMS").is_file(), reason=f"no ImageNet weights at {WEIGHTS}")
def test_registry_hashes_match_the_weights_sha256sums():
    sums = dict(line.split()[::-1] for line in (WEIGHTS / "SHA256SUMS").read_text().splitlines() if line.strip())
    for backbone in models.BACKBONES.values():
        assert sums[backbone.file] == backbone.sha256, backbone.name


def test_weights_resolution(tmp_path):
    coral = models.get_backbone("mobilenet_v1_0.25_128")
    keras_own = models.get_backbone("mobilenet_v1_0.25_224")
    assert models.resolve_weights(coral, "none") is None
    # Absent files: Keras' own weights fall back to its download, converted ones say what to do.
    assert models.resolve_weights(keras_own, "imagenet", tmp_path) == "imagenet"
    with pytest.raises(EcgEdgeError, match=f"ImageNet weights for mobilenet_v1_0.25_128 not found at {tmp_path}"):
        models.resolve_weights(coral, "imagenet", tmp_path)
    (tmp_path / coral.file).write_bytes(b"not the weights")
    with pytest.raises(EcgEdgeError, match="has sha256 .*, expected a2ed8d24"):
        models.resolve_weights(coral, "imagenet", tmp_path)
    with pytest.raises(EcgEdgeError, match="weights file .*missing.h5 does not exist"):
        models.resolve_weights(coral, str(tmp_path / "missing.h5"))
    with pytest.raises(EcgEdgeError, match="unknown backbone 'resnet50'"):
        models.get_backbone("resnet50")


def test_block_index_and_fine_tune_option():
    assert models.block_index("conv1_bn", "v1") == 0
    assert models.block_index("conv_pw_13_relu", "v1") == 13
    assert models.block_index("block_16_project", "v2") == 17
    assert models.block_index("Conv_1_bn", "v2") == 18
    assert models.block_index("input_layer", "v1") is None
    assert [models.parse_fine_tune(v) for v in (None, False, True, "all", "3", 0)] == [0, 0, "all", "all", 3, 0]
    with pytest.raises(EcgEdgeError, match="fine_tune must be a number of blocks or 'all', got 'some'"):
        models.parse_fine_tune("some")


def test_input_scaling_maps_the_data_range_to_unit_range():
    images = np.linspace(-7.0, 1.0, 1001, dtype=np.float32).reshape(1, 1001, 1, 1)
    scaling = models.input_scaling(images, 0.0, 100.0)
    assert scaling == {"center": -3.0, "half_range": 4.0}


# ---------------------------------------------------------------------------------------------
# The model


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_build_model_shapes_and_scaling(keras, channels):
    model = models.build_model("mobilenet_v1_0.25_128", (32, 48, channels), 4, weights="none",
                               scaling={"center": -3.0, "half_range": 4.0})
    assert model.input_shape == (None, 32, 48, channels)
    assert model.output_shape == (None, 4)
    x = np.random.default_rng(0).uniform(-7, 1, size=(2, 32, 48, channels)).astype(np.float32)
    proba = model.predict(x, verbose=0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    scaled = keras.Model(model.input, model.get_layer("input_scaling").output).predict(x, verbose=0)
    np.testing.assert_allclose(scaled, (x + 3.0) / 4.0, rtol=1e-5, atol=1e-6)
    assert models.feature_extractor(model).output_shape == (None, 256)


@pytest.mark.skipif(not (WEIGHTS / models.get_backbone("mobilenet_v1_0.25_128").file).is_file(),
                    reason=f"no ImageNet weights at {WEIGHTS}")
def test_quantization_noise_acts_in_training_only_and_keeps_batchnorm_frozen(keras):
    def features(quant_noise):
        model = models.build_model("mobilenet_v1_0.25_128", (64, 64, 3), 3, weights="imagenet",
                                   fine_tune="all", quant_noise=quant_noise, weights_directory=WEIGHTS)
        return model.get_layer("backbone")

    quiet, noisy = features(0.0), features(2.0)
    noise = [layer for layer in noisy.layers if isinstance(layer, keras.layers.GaussianNoise)]
    relus = [layer for layer in quiet.layers if isinstance(layer, keras.layers.ReLU)]
    assert len(noise) == len(relus) == 27
    assert noise[0].stddev == pytest.approx(2.0 * models.RELU6_INT8_STEP / np.sqrt(12.0))
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 64, 64, 3)).astype(np.float32)
    reference = np.asarray(quiet(x, training=False))
    assert reference.std() > 0.1
    np.testing.assert_allclose(noisy(x, training=False), reference, rtol=1e-5, atol=1e-5)
    # training=True changes nothing but the noise: BatchNorm keeps its moving statistics.
    np.testing.assert_allclose(quiet(x, training=True), reference, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(noisy(x, training=True)) - reference).max() > 1e-3


@pytest.mark.parametrize("name, fine_tune, blocks", [
    ("mobilenet_v1_0.25_128", 0, set()),
    ("mobilenet_v1_0.25_128", 2, {12, 13}),
    ("mobilenet_v1_0.25_128", "all", set(range(14))),
    ("mobilenet_v2_1.0_224", 1, {18}),
])
def test_fine_tune_unfreezes_the_last_blocks_and_never_batchnorm(keras, name, fine_tune, blocks):
    backbone = models.get_backbone(name)
    model = models.build_model(name, (32, 32, 3), 3, weights="none", fine_tune=fine_tune)
    net = model.get_layer("backbone")
    trained = {models.block_index(layer.name, backbone.family)
               for layer in net.layers if layer.trainable and layer.weights}
    assert trained == blocks
    batch_norms = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)
    # The head always trains.
    assert model.get_layer("probabilities").trainable


@pytest.mark.skipif(not (WEIGHTS / models.get_backbone("mobilenet_v1_0.25_128").file).is_file(),
                    reason=f"no ImageNet weights at {WEIGHTS}")
def test_imagenet_weights_load_from_disk(keras):
    model = models.build_model("mobilenet_v1_0.25_128", (128, 128, 3), 4, weights="imagenet",
                               weights_directory=WEIGHTS)
    reference = keras.applications.MobileNet(
        input_shape=(128, 128, 3), alpha=0.25, include_top=False,
        weights=str(WEIGHTS / models.get_backbone("mobilenet_v1_0.25_128").file))
    for got, want in zip(model.get_layer("backbone").get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# Augmentation and sampling


def test_augment_windows_is_seeded_and_changes_what_the_image_sees():
    x = np.sin(2 * np.pi * 1.2 * np.arange(4 * 360) / 360.0)[None].repeat(3, axis=0)
    a = augment.augment_windows(x, 360.0, np.random.default_rng(7))
    b = augment.augment_windows(x, 360.0, np.random.default_rng(7))
    c = augment.augment_windows(x, 360.0, np.random.default_rng(8))
    assert a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Standardisation in window_image removes plain gain, not the in-window modulation.
    cfg = SpectrogramConfig(fs=128.0, window_s=4.0, hop=16, channels=((64, 64),), n_freq=32)
    assert not np.allclose(augment.images_of(a, 360.0, cfg), augment.images_of(x, 360.0, cfg))


def test_shift_fills_the_edge_by_reflection():
    x = np.arange(6, dtype=float)[None]
    np.testing.assert_array_equal(augment._shift(x, np.array([2])), [[2, 1, 0, 1, 2, 3]])
    np.testing.assert_array_equal(augment._shift(x, np.array([-1])), [[1, 2, 3, 4, 5, 4]])


def test_no_augmentation_strength_leaves_windows_unchanged():
    x = np.random.default_rng(0).normal(size=(2, 500))
    zero = augment.AugmentConfig(wander=0, noise=0, modulation=0, shift_s=0)
    np.testing.assert_allclose(augment.augment_windows(x, 250.0, np.random.default_rng(0), zero), x)
    with pytest.raises(EcgEdgeError, match="augmentation noise must be >= 0, got -1"):
        augment.AugmentConfig(noise=-1).validate()


def test_balanced_indices_cap_each_class_and_weights_balance():
    y = np.array([0] * 50 + [1] * 8 + [2] * 20)
    idx = augment.balanced_indices(y, 10, np.random.default_rng(0))
    assert np.bincount(y[idx]).tolist() == [10, 8, 10]
    assert len(set(idx.tolist())) == len(idx)
    weights = augment.balanced_class_weights(y[idx], 4)
    assert weights == pytest.approx({0: 28 / 30, 1: 28 / 24, 2: 28 / 30})


def test_epoch_batch_depends_only_on_seed_and_epoch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 512)).astype(np.float32)
    y = np.repeat([0, 1, 2], 4)
    cfg = SpectrogramConfig(fs=128.0, window_s=4.0, hop=16, channels=((64, 64),), n_freq=32)
    kw = dict(max_per_class=3, augment=augment.AugmentConfig())
    a_images, a_y = augment.epoch_batch(x, y, 128.0, cfg, seed=5, epoch=2, **kw)
    b_images, b_y = augment.epoch_batch(x, y, 128.0, cfg, seed=5, epoch=2, **kw)
    c_images, _ = augment.epoch_batch(x, y, 128.0, cfg, seed=5, epoch=3, **kw)
    assert a_images.shape == (9, 32, 32, 1) and a_images.dtype == np.float32
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_y, b_y)
    assert np.bincount(a_y).tolist() == [3, 3, 3]
    assert not np.array_equal(a_images, c_images)
