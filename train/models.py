"""MobileNet backbones with ImageNet weights from disk, and the spectrogram classifier built on them.

The model's input is the float image of :func:`ecgedge.device.dsp.window_image`; the scaling to
MobileNet's ``[-1, 1]`` input range is a fixed ``Rescaling`` layer inside the model (a Keras
``Normalization`` layer would break full-int8 conversion), so the TFLite input is exactly the
spectrogram the device computes.

The converted Coral weights have their batch norms folded into the convolutions (see the
weights' PROVENANCE.md): every BatchNormalization layer therefore stays frozen and runs in
inference mode, also while the last blocks are fine-tuned.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgedge.device.bundle import sha256_file
from ecgedge.device.errors import EcgEdgeError

DEFAULT_WEIGHTS_DIR = "~/.cache/ecgedge/weights"


@dataclass(frozen=True)
class Backbone:
    """One ImageNet MobileNet that ecgedge knows how to load from disk.

    Attributes
    ----------
    name : registry name, ``mobilenet_v{1,2}_{alpha}_{resolution}``.
    family : "v1" (``keras.applications.MobileNet``) or "v2" (``MobileNetV2``).
    alpha : width multiplier.
    resolution : input side (pixels) the ImageNet weights were trained at.
    file : file name of the no-top weights in ECGEDGE_WEIGHTS.
    sha256 : hex digest of ``file`` (from the weights' SHA256SUMS).
    keras_download : True when ``file`` is Keras' own ImageNet weights, so Keras'
        ``weights="imagenet"`` download gives the same network when the file is absent.
    n_blocks : blocks that ``fine_tune`` counts, numbered 0 (stem) .. n_blocks - 1 (last).
    """

    name: str
    family: str
    alpha: float
    resolution: int
    file: str
    sha256: str
    keras_download: bool = False

    @property
    def n_blocks(self):
        return 14 if self.family == "v1" else 19


BACKBONES = {
    b.name: b
    for b in (
        Backbone(
            "mobilenet_v1_0.25_128", "v1", 0.25, 128,
            "mobilenet_v1_0.25_128_imagenet_from_coral_quant_tflite_no_top.h5",
            "a2ed8d241b8c82dbec7484c8bfe602edd19c1a9ac1852d6af41619bdb4d7235e",
        ),
        Backbone(
            "mobilenet_v1_0.5_160", "v1", 0.5, 160,
            "mobilenet_v1_0.5_160_imagenet_from_coral_quant_tflite_no_top.h5",
            "48b99bd4d853b281b9ee8c6eb9a52df4608e5f8cade8011840d963d4d54f14af",
        ),
        Backbone(
            "mobilenet_v1_0.75_192", "v1", 0.75, 192,
            "mobilenet_v1_0.75_192_imagenet_from_coral_quant_tflite_no_top.h5",
            "2ae4693e19f79f38090cf58f23ad2a7bb391c2eabd74afb445986095e34d00bd",
        ),
        Backbone(
            "mobilenet_v1_0.25_224", "v1", 0.25, 224,
            "mobilenet_v1_0.25_224_imagenet_no_top.h5",
            "f0fdeff8663e559511685641be84f4cecc649c9c50bc0c005bf78d8fde2e16c4",
            keras_download=True,
        ),
        Backbone(
            "mobilenet_v2_1.0_224", "v2", 1.0, 224,
            "mobilenet_v2_1.0_224_imagenet_from_coral_tf2_ptq_tflite_no_top.h5",
            "d0f567a9ed9278dc3bcd717d25ad9bf4dc6a163e534c00059ab3267e04a540e0",
        ),
    )
}


def get_backbone(name):
    """Return the registered :class:`Backbone` called ``name``."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise EcgEdgeError(
            f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}"
        ) from None


def weights_dir(path=None):
    """The folder of ImageNet weight files: ``path`` > ECGEDGE_WEIGHTS > ``~/.cache/ecgedge/weights``."""
    return Path(path or os.environ.get("ECGEDGE_WEIGHTS") or DEFAULT_WEIGHTS_DIR).expanduser()


def resolve_weights(backbone, weights, directory=None):
    """Turn the ``--weights`` choice into what ``keras.applications`` takes.

    Parameters
    ----------
    backbone : Backbone.
    weights : "imagenet", "none" (or None) for random init, or a path to an .h5 file.
    directory : folder of weight files; default :func:`weights_dir`.

    Returns
    -------
    str path of a verified weights file, the string "imagenet" (Keras downloads its own copy;
    only for backbones whose file is Keras' own) or None (random init).
    """
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights).lower() != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EcgEdgeError(f"weights file {path} does not exist; give an .h5 file, 'imagenet' or 'none'")
        return str(path)
    path = weights_dir(directory) / backbone.file
    if path.is_file():
        digest = sha256_file(path)
        if digest != backbone.sha256:
            raise EcgEdgeError(
                f"{path} has sha256 {digest}, expected {backbone.sha256}; the file is corrupt "
                "or not the one ecgedge registers: replace it from the shared weights folder"
            )
        return str(path)
    if backbone.keras_download:
        return "imagenet"
    raise EcgEdgeError(
        f"ImageNet weights for {backbone.name} not found at {path}; Keras has no download of "
        f"these converted Coral weights: copy {backbone.file} there or set ECGEDGE_WEIGHTS "
        "to the folder that holds it (or use --weights none)"
    )


def input_scaling(images, low_q=0.1, high_q=99.9):
    """Fixed constants that map log-magnitude images to about [-1, 1].

    Parameters
    ----------
    images : ndarray of shape (n, rows, cols, channels), float32 -- spectrogram images.
    low_q, high_q : percentiles (0..100) of all pixels that land on -1 and +1.

    Returns
    -------
    dict with ``center`` and ``half_range`` (floats, rounded to 4 decimals): the model computes
    ``(x - center) / half_range``.
    """
    lo, hi = np.percentile(np.asarray(images, dtype=np.float64), [low_q, high_q])
    half_range = max((hi - lo) / 2.0, 1e-6)
    return {"center": round(float((hi + lo) / 2.0), 4), "half_range": round(float(half_range), 4)}


def _backbone_network(backbone, input_shape, weights):
    import keras

    application = keras.applications.MobileNet if backbone.family == "v1" else keras.applications.MobileNetV2
    return application(input_shape=input_shape, alpha=backbone.alpha, include_top=False, weights=weights)


RELU6_INT8_STEP = 6.0 / 255.0
"""The int8 step of every ReLU6 activation: TFLite quantizes them over [0, 6] whatever the data."""


def with_quantization_noise(net, strength, seed):
    """The same MobileNet V1 backbone with Gaussian noise after every ReLU6, in training only.

    int8 rounding adds an error of up to half a step (``RELU6_INT8_STEP``) to each activation;
    the idea is a network that learns decisions such noise does not flip. Measured on
    mitdb-rhythm4 it did not: int8 agreement and the records CV score both went down (README),
    so it is off by default. The noise layers are identities at inference, so the converted
    model has no extra ops.

    Parameters
    ----------
    net : the Keras MobileNet V1 application model (a plain chain of layers).
    strength : float, noise standard deviation in units of the rounding noise of one int8 step
        (``RELU6_INT8_STEP / sqrt(12)``); 0 returns ``net`` unchanged.
    seed : int.
    """
    import keras

    if strength == 0:
        return net
    stddev = strength * RELU6_INT8_STEP / np.sqrt(12.0)
    inputs = keras.Input(shape=net.input_shape[1:], name=net.layers[0].name)
    x = inputs
    for layer in net.layers[1:]:
        x = layer(x)
        if isinstance(layer, keras.layers.ReLU):
            x = keras.layers.GaussianNoise(stddev, seed=seed, name=f"{layer.name}_qnoise")(x)
    return keras.Model(inputs, x, name=net.name)


def _to_three_channels(x, n_channels, seed):
    """Images with other than 3 channels become 3: repeated if 1, a learned 1x1 mix otherwise."""
    import keras

    if n_channels == 3:
        return x
    if n_channels == 1:
        return keras.layers.Concatenate(axis=-1, name="repeat_to_rgb")([x, x, x])
    return keras.layers.Conv2D(
        3, 1, name="mix_to_rgb", kernel_initializer=keras.initializers.GlorotUniform(seed=seed)
    )(x)


_V1_BLOCK = re.compile(r"conv_(?:dw|pw|pad)_(\d+)")
_V2_BLOCK = re.compile(r"block_(\d+)_")


def block_index(layer_name, family):
    """Block number of a backbone layer: 0 = stem, then one per depthwise/pointwise block.

    MobileNet V1 has blocks 0..13 (``conv1``, then ``conv_dw_i``/``conv_pw_i``); MobileNetV2 has
    0..18 (``Conv1``, ``expanded_conv``, ``block_1`` .. ``block_16``, and the final ``Conv_1``).
    Returns None for layers without weights of their own block (input, ...).
    """
    if family == "v1":
        m = _V1_BLOCK.match(layer_name)
        if m:
            return int(m.group(1))
        return 0 if layer_name.startswith("conv1") else None
    m = _V2_BLOCK.match(layer_name)
    if m:
        return int(m.group(1)) + 1
    if layer_name.startswith("expanded_conv"):
        return 1
    if layer_name.startswith(("Conv1", "bn_Conv1")):
        return 0
    if layer_name.startswith(("Conv_1", "out_relu")):
        return 18
    return None


def parse_fine_tune(value):
    """Normalise the ``fine_tune`` option: 0 (frozen backbone), a block count, or "all".

    Accepts False/None/0, True/"all", or an int / digit string.
    """
    if value is None or value is False:
        return 0
    if value is True or str(value).lower() == "all":
        return "all"
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise EcgEdgeError(f"fine_tune must be a number of blocks or 'all', got {value!r}") from None
    if n < 0:
        raise EcgEdgeError(f"fine_tune must be >= 0 blocks, got {n}")
    return n


def set_backbone_trainable(model, backbone, fine_tune):
    """Unfreeze the last ``fine_tune`` blocks of the backbone inside ``model``; BatchNorm stays frozen.

    Parameters
    ----------
    model : keras.Model from :func:`build_model`.
    backbone : Backbone.
    fine_tune : 0 (all frozen), a number of last blocks, or "all".

    Returns
    -------
    int, the number of backbone layers now trainable.
    """
    import keras

    n = parse_fine_tune(fine_tune)
    first = 0 if n == "all" else backbone.n_blocks - n
    net = model.get_layer("backbone")
    net.trainable = True
    n_trainable = 0
    for layer in net.layers:
        block = block_index(layer.name, backbone.family)
        trainable = n != 0 and block is not None and block >= first
        if isinstance(layer, keras.layers.BatchNormalization):
            trainable = False
        layer.trainable = trainable
        n_trainable += int(trainable and bool(layer.weights))
    return n_trainable


def build_model(backbone, image_shape, n_classes, weights="imagenet", fine_tune=0, dropout=0.2,
                seed=0, scaling=None, weights_directory=None, quant_noise=0.0):
    """The spectrogram classifier: scaling, MobileNet backbone, pooling, dropout, softmax.

    Parameters
    ----------
    backbone : str or Backbone -- registry name, e.g. "mobilenet_v1_0.25_128".
    image_shape : (rows, cols, channels) of the float spectrogram image.
    n_classes : int, >= 2.
    weights : "imagenet", "none" or a path (see :func:`resolve_weights`).
    fine_tune : 0 (frozen backbone), number of last blocks to train, or "all".
    dropout : float in [0, 1), before the dense layer.
    seed : int, seeds the dense (and channel-mixing) initialisers and dropout.
    scaling : dict ``{"center", "half_range"}`` from :func:`input_scaling`; the model computes
        ``(x - center) / half_range``. Default: center -3, half_range 4 (log magnitudes of a
        unit-variance window lie within about [-7, 1]).
    weights_directory : folder of weight files; default ECGEDGE_WEIGHTS.
    quant_noise : float >= 0, see :func:`with_quantization_noise`; MobileNet V1 only (V2 has
        residual branches, not a chain), ignored for V2.

    Returns
    -------
    keras.Model mapping (batch, *image_shape) float32 to (batch, n_classes) probabilities; the
    backbone is the nested model named "backbone", always called in inference mode.
    """
    import keras

    bb = backbone if isinstance(backbone, Backbone) else get_backbone(backbone)
    image_shape = tuple(int(v) for v in image_shape)
    if len(image_shape) != 3 or min(image_shape[:2]) < 32:
        raise EcgEdgeError(f"MobileNet needs an image of shape (rows>=32, cols>=32, channels), got {image_shape}")
    if n_classes < 2:
        raise EcgEdgeError(f"a classifier needs at least 2 classes, got {n_classes}")
    if not 0 <= dropout < 1:
        raise EcgEdgeError(f"dropout must be in [0, 1), got {dropout}")
    scaling = scaling or {"center": -3.0, "half_range": 4.0}
    resolved = resolve_weights(bb, weights, weights_directory)

    inputs = keras.Input(shape=image_shape, name="spectrogram")
    x = keras.layers.Rescaling(
        1.0 / scaling["half_range"], offset=-scaling["center"] / scaling["half_range"], name="input_scaling"
    )(inputs)
    x = _to_three_channels(x, image_shape[2], seed)
    net = _backbone_network(bb, image_shape[:2] + (3,), resolved)
    net.name = "backbone"
    if bb.family == "v1":
        net = with_quantization_noise(net, quant_noise, seed)
    # BatchNorm stays in inference mode (set_backbone_trainable freezes it); the noise layers,
    # if any, see the training flag.
    x = net(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", name="probabilities",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
    )(x)
    model = keras.Model(inputs, outputs, name=f"ecgedge_{bb.name}")
    set_backbone_trainable(model, bb, fine_tune)
    return model


def feature_extractor(model):
    """The pooled backbone features of a :func:`build_model` model: (batch, *image) -> (batch, d)."""
    import keras

    return keras.Model(model.inputs, model.get_layer("pool").output, name="features")
