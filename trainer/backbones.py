"""Convolutional backbones from ``keras.applications`` beside the study's VGG16.

Each backbone is built without its top and without its own input preprocessing (the
classifier's scaling and standardisation layers come first, so saved models take the
stored uint8 values whatever the backbone), for 1-channel CXR or 3-channel ENH input.
``--weights FILE`` loads local ImageNet weights (nothing is downloaded); for one channel
the first convolution's RGB kernels are summed, as for VGG16.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BACKBONES", "MODEL_NAMES", "backbone", "load_weights"]

#: name -> (keras.applications constructor, extra keyword arguments)
BACKBONES = {
    "resnet50": ("ResNet50", {}),
    "densenet121": ("DenseNet121", {}),
    "efficientnetv2b0": ("EfficientNetV2B0", {"include_preprocessing": False}),
    "mobilenetv3small": ("MobileNetV3Small", {"include_preprocessing": False}),
    "convnexttiny": ("ConvNeXtTiny", {"include_preprocessing": False}),
}
#: Every ``--model`` the trainer builds: the study's VGG16 (with a width multiplier) and the above.
MODEL_NAMES = ("vgg16", *BACKBONES)


def _build(name: str, input_shape, weights=None):
    import keras

    constructor, extra = BACKBONES[name]
    return getattr(keras.applications, constructor)(include_top=False, weights=weights,
                                                    input_shape=tuple(input_shape), **extra)


def backbone(name: str, input_shape, weights: str | None = None):
    """The convolutional part of ``name`` for ``input_shape``, with local ImageNet weights if given."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    model = _build(name, input_shape)
    model.name = f"{name}_backbone"
    if weights is not None:
        load_weights(model, _build(name, (*input_shape[:2], 3), weights=weights))
    return model


def load_weights(target, reference) -> None:
    """Copy ``reference``'s weights into ``target`` layer by layer.

    Kernels that take 3 input channels in the reference and 1 in the target (the first
    convolution of a 1-channel model) are summed over the colour axis.
    """
    for ref_layer, layer in zip(reference.layers, target.layers, strict=True):
        values = ref_layer.get_weights()
        if not values:
            continue
        mine = layer.get_weights()
        adapted = []
        for v, m in zip(values, mine, strict=True):
            if v.shape != m.shape and v.ndim == 4 and v.shape[2] == 3 and m.shape[2] == 1:
                v = v.sum(axis=2, keepdims=True).astype(np.float32)
            if v.shape != m.shape:
                raise ValueError(f"weights of {ref_layer.name} have shape {v.shape}, the model needs {m.shape}")
            adapted.append(v)
        layer.set_weights(adapted)
