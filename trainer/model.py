"""The VGG16-based classifier of the study, with a width multiplier for small runs."""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["classifier", "vgg16_classifier", "DEFAULT_HEAD", "VGG16_BLOCKS", "OCCLUSIONS", "occlusion_mask",
           "occlusion_layer", "run_info_layer", "register_custom_objects", "HEAD_ACTIVATIONS"]

#: ``center`` blacks out the central box (lungs and heart), ``outside`` keeps only it; ``lungs``
#: and ``non-lungs`` do the same with each image's lung mask (stores converted with masks).
OCCLUSIONS = ("none", "center", "outside", "lungs", "non-lungs")
MASK_OCCLUSIONS = ("lungs", "non-lungs")

#: Filters of each VGG16 block (Simonyan & Zisserman, 2015, configuration D).
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: The head the study describes only as "layers added and activation functions changed".
# BatchNorm momentum 0.9, not Keras' 0.99: with the few hundred steps of a small run the
# moving statistics otherwise stay near their initial values and validation loss explodes.
#: Activations the added dense layer takes: Keras' names of element-wise activations, listed here so
#: that ``--help`` shows them and a wrong one is refused before the framework loads (a test checks
#: that Keras resolves every one).
HEAD_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "mish", "tanh", "sigmoid",
                    "hard_sigmoid", "hard_silu", "softplus", "softsign", "linear")
DEFAULT_HEAD = {"units": 256, "activation": "relu", "dropout": 0.5, "pooling": "avg",
                "bn_momentum": 0.9}


def occlusion_mask(height: int, width: int, mode: str, fraction: float) -> np.ndarray:
    """``(H, W, 1)`` uint8 mask of 0s and 1s: the pixels a model may see.

    Parameters
    ----------
    mode : {"none", "center", "outside"}
        ``center`` zeroes the central ``fraction`` x ``fraction`` box, so only the
        borders, corners and burned-in markers remain; ``outside`` zeroes
        everything but that box.
    fraction : float
        Side of the box as a share of the image side, in (0, 1).
    """
    if mode not in OCCLUSIONS:
        raise ValueError(f"occlusion must be one of {list(OCCLUSIONS)}, got {mode!r}")
    if mode in MASK_OCCLUSIONS:
        raise ValueError(f"occlusion {mode!r} uses each image's lung mask, not a box")
    if not 0 < fraction < 1:
        raise ValueError(f"occlusion fraction must lie in (0, 1), got {fraction!r}")
    mask = np.ones((height, width, 1), dtype=np.uint8)
    if mode == "none":
        return mask
    bh, bw = max(1, round(fraction * height)), max(1, round(fraction * width))
    top, left = (height - bh) // 2, (width - bw) // 2
    box = np.zeros_like(mask)
    box[top:top + bh, left:left + bw] = 1
    return 1 - box if mode == "center" else box


@functools.cache
def _occlusion_class():
    import keras

    @keras.saving.register_keras_serializable(package="trainer")
    class Occlusion(keras.layers.Layer):
        """Multiplies the input by a fixed mask (:func:`occlusion_mask`), in every split.

        Part of the saved model, so evaluation and saliency see exactly what training saw.
        """

        def __init__(self, mode="none", fraction=0.6, **kwargs):
            super().__init__(**kwargs)
            self.mode, self.fraction = mode, float(fraction)
            occlusion_mask(2, 2, mode, self.fraction)  # validate early

        def build(self, input_shape):
            h, w = int(input_shape[1]), int(input_shape[2])
            self.mask = keras.ops.convert_to_tensor(occlusion_mask(h, w, self.mode, self.fraction))

        def call(self, x):
            return x * keras.ops.cast(self.mask, x.dtype)

        def get_config(self):
            return {**super().get_config(), "mode": self.mode, "fraction": self.fraction}

    return Occlusion


def occlusion_layer(mode: str, fraction: float, name: str = "occlusion"):
    """The :class:`Occlusion` layer (registered for safe-mode loading)."""
    return _occlusion_class()(mode=mode, fraction=fraction, name=name)


@functools.cache
def _run_info_class():
    import keras

    @keras.saving.register_keras_serializable(package="trainer")
    class RunInfo(keras.layers.Layer):
        """Passes its input through; its config carries what the model was trained on.

        ``info`` holds the input kind (cxr/enh), the class (or source) names in output
        order, the target, the occlusion and the store's parameter digest, so that
        ``trainer evaluate`` can refuse a store the model does not fit.
        """

        def __init__(self, info=None, **kwargs):
            super().__init__(**kwargs)
            self.info = dict(info or {})

        def call(self, x):
            return x

        def get_config(self):
            return {**super().get_config(), "info": self.info}

    return RunInfo


def run_info_layer(info: dict, name: str = "run_info"):
    """The pass-through :class:`RunInfo` layer that stores ``info`` in the saved model."""
    return _run_info_class()(info=info, name=name)


def register_custom_objects() -> None:
    """Register every layer and loss the trainer saves, so any saved model loads in safe mode."""
    from .losses import weighted_cce_class

    _occlusion_class()
    _run_info_class()
    weighted_cce_class()


def _conv_base(x, width: float):
    import keras

    for b, block in enumerate(VGG16_BLOCKS, 1):
        for c, filters in enumerate(block, 1):
            x = keras.layers.Conv2D(max(1, round(filters * width)), 3, padding="same",
                                    activation="relu", name=f"block{b}_conv{c}")(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    return x


def vgg16_classifier(input_shape, n_classes: int, width: float = 1.0, **kwargs):
    """VGG16 convolutional base plus a classification head (see :func:`classifier`)."""
    return classifier("vgg16", input_shape, n_classes, width=width, **kwargs)


def classifier(model: str, input_shape, n_classes: int, width: float = 1.0, head: dict | None = None,
               weights: str | None = None, preprocessing: dict | None = None,
               name: str | None = None, occlude: tuple[str, float] | None = None,
               info: dict | None = None):
    """A convolutional base plus the classification head of the study.

    Parameters
    ----------
    model : str
        ``"vgg16"`` (built here, with a width multiplier) or one of
        :data:`trainer.backbones.BACKBONES` (``keras.applications``).
    input_shape : (H, W, C)
        C is 1 (CXR) or 3 (ENH).
    n_classes : int
    width : float
        Multiplier of every VGG16 filter count (1.0 is VGG16; 1/8 trains ~50x faster);
        other backbones take 1.0 only.
    head : dict, optional
        ``units``, ``activation``, ``dropout``, ``pooling`` (``"avg"`` or
        ``"max"``) and ``bn_momentum`` of the added layers; defaults to
        :data:`DEFAULT_HEAD`.
    weights : str, optional
        Path of the backbone's local ImageNet "notop" weights file; only at width 1.
        For 1-channel input the first convolution's RGB kernels are summed.
        Nothing is downloaded.
    preprocessing : dict, optional
        ``{"scale": s, "mean": [...], "std": [...]}``: the model first computes
        ``(x * s - mean) / std`` per channel, so batches can stay uint8 and the
        training-split statistics travel inside the saved model.
    occlude : (mode, fraction), optional
        Mask the input first (:func:`occlusion_mask`); ``None`` or mode
        ``"none"`` adds no layer.
    info : dict, optional
        What the model is trained on, saved with it (:func:`run_info_layer`).

    Returns
    -------
    keras.Model
        Softmax outputs of ``n_classes``.
    """
    import keras

    from .backbones import MODEL_NAMES, backbone

    head = {**DEFAULT_HEAD, **(head or {})}
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if width != 1.0 and model != "vgg16":
        raise ValueError(f"--width scales VGG16 only; {model} is built at its published width")
    if weights is not None and width != 1.0:
        raise ValueError("pretrained weights need width 1.0")
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(f"input_shape must be (H, W, 1) or (H, W, 3), got {tuple(input_shape)}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if info is not None:
        x = run_info_layer(info)(x)
    if occlude is not None and occlude[0] in ("center", "outside"):  # masks are applied to the data
        x = occlusion_layer(*occlude)(x)
    if preprocessing is not None:
        x = keras.layers.Rescaling(preprocessing["scale"], name="scale")(x)
        std = [float(v) for v in preprocessing["std"]]
        x = keras.layers.Normalization(mean=[float(v) for v in preprocessing["mean"]],
                                       variance=[v * v for v in std], name="standardise")(x)
    if model == "vgg16":
        x = _conv_base(x, width)
    else:
        x = backbone(model, input_shape, weights)(x)
    pool = keras.layers.GlobalAveragePooling2D if head["pooling"] == "avg" \
        else keras.layers.GlobalMaxPooling2D
    x = pool(name="head_pool")(x)
    x = keras.layers.Dense(head["units"], activation=head["activation"], name="head_dense")(x)
    x = keras.layers.BatchNormalization(momentum=head["bn_momentum"], name="head_bn")(x)
    x = keras.layers.Dropout(head["dropout"], name="head_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)
    built = keras.Model(inputs, outputs, name=name or f"{model}_classifier")
    if weights is not None and model == "vgg16":
        _load_imagenet(built, weights, input_shape)
    return built


def _load_imagenet(model, path: str, input_shape) -> None:
    import keras
    import numpy as np

    reference = keras.applications.VGG16(include_top=False, weights=path,
                                         input_shape=(*input_shape[:2], 3))
    for layer in reference.layers:
        if not layer.weights:
            continue
        values = layer.get_weights()
        if layer.name == "block1_conv1" and input_shape[-1] == 1:
            values[0] = values[0].sum(axis=2, keepdims=True).astype(np.float32)
        model.get_layer(layer.name).set_weights(values)
