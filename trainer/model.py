"""The VGG16-based classifier of the study, with a width multiplier for small runs."""

from __future__ import annotations

__all__ = ["vgg16_classifier", "DEFAULT_HEAD", "VGG16_BLOCKS"]

#: Filters of each VGG16 block (Simonyan & Zisserman, 2015, configuration D).
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: The head the study describes only as "layers added and activation functions changed".
# BatchNorm momentum 0.9, not Keras' 0.99: with the few hundred steps of a small run the
# moving statistics otherwise stay near their initial values and validation loss explodes.
DEFAULT_HEAD = {"units": 256, "activation": "relu", "dropout": 0.5, "pooling": "avg",
                "bn_momentum": 0.9}


def _conv_base(x, width: float):
    import keras

    for b, block in enumerate(VGG16_BLOCKS, 1):
        for c, filters in enumerate(block, 1):
            x = keras.layers.Conv2D(max(1, round(filters * width)), 3, padding="same",
                                    activation="relu", name=f"block{b}_conv{c}")(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    return x


def vgg16_classifier(input_shape, n_classes: int, width: float = 1.0, head: dict | None = None,
                     weights: str | None = None, preprocessing: dict | None = None,
                     name: str = "vgg16_classifier"):
    """VGG16 convolutional base plus a classification head.

    Parameters
    ----------
    input_shape : (H, W, C)
        C is 1 (CXR) or 3 (ENH).
    n_classes : int
    width : float
        Multiplier of every filter count (1.0 is VGG16; 1/8 trains ~50x faster).
    head : dict, optional
        ``units``, ``activation``, ``dropout``, ``pooling`` (``"avg"`` or
        ``"max"``) and ``bn_momentum`` of the added layers; defaults to
        :data:`DEFAULT_HEAD`.
    weights : str, optional
        Path of local ImageNet VGG16 "notop" weights (``.h5``); only for width 1.
        For 1-channel input the first convolution's RGB kernels are summed.
        Nothing is downloaded.
    preprocessing : dict, optional
        ``{"scale": s, "mean": [...], "std": [...]}``: the model first computes
        ``(x * s - mean) / std`` per channel, so batches can stay uint8 and the
        training-split statistics travel inside the saved model.

    Returns
    -------
    keras.Model
        Softmax outputs of ``n_classes``.
    """
    import keras

    head = {**DEFAULT_HEAD, **(head or {})}
    if weights is not None and width != 1.0:
        raise ValueError("pretrained weights need width 1.0")
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(f"input_shape must be (H, W, 1) or (H, W, 3), got {tuple(input_shape)}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if preprocessing is not None:
        x = keras.layers.Rescaling(preprocessing["scale"], name="scale")(x)
        std = [float(v) for v in preprocessing["std"]]
        x = keras.layers.Normalization(mean=[float(v) for v in preprocessing["mean"]],
                                       variance=[v * v for v in std], name="standardise")(x)
    x = _conv_base(x, width)
    pool = keras.layers.GlobalAveragePooling2D if head["pooling"] == "avg" \
        else keras.layers.GlobalMaxPooling2D
    x = pool(name="head_pool")(x)
    x = keras.layers.Dense(head["units"], activation=head["activation"], name="head_dense")(x)
    x = keras.layers.BatchNormalization(momentum=head["bn_momentum"], name="head_bn")(x)
    x = keras.layers.Dropout(head["dropout"], name="head_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        _load_imagenet(model, weights, input_shape)
    return model


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
