"""ENH as a transform for PyTorch, torchvision and MONAI pipelines.

:class:`Enhance` takes what such pipelines pass around (NumPy arrays, CuPy arrays, torch
tensors on the CPU or a CUDA device) in the layouts they use, and gives back the same kind of
array on the same device. CUDA tensors reach CuPy through DLPack, without a copy through the
host. :class:`EnhanceD` is the dictionary form MONAI's ``Compose`` expects. torch is
imported only when a tensor arrives.

Layouts: ``(H, W)`` gives ``(H, W, 3)`` for arrays and ``(3, H, W)`` for tensors;
channels-first ``(1, H, W)`` gives ``(3, H, W)`` and ``(N, 1, H, W)`` gives
``(N, 3, H, W)``, whatever the kind.
"""

from __future__ import annotations

import sys

from ..params import PhaseParams

__all__ = ["Enhance", "EnhanceD"]


def _kind(image) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(image, torch.Tensor):  # MONAI's MetaTensor too
        return "torch"
    module = type(image).__module__.split(".")[0]
    if module == "cupy":
        return "cupy"
    if module == "numpy":
        return "numpy"
    raise TypeError(f"Enhance takes a NumPy array, a CuPy array or a torch tensor, got {type(image).__name__}")


class Enhance:
    """ENH = [LwPA, LPE, ELEA] of a radiograph, as a pipeline transform.

    Parameters
    ----------
    params : PhaseParams, optional
        Defaults to ``PhaseParams()`` (the ``qi2021`` preset).
    out : {"float", "uint8"}
        Values in [0, 1] (float32), or 0..255 (uint8).

    Examples
    --------
    >>> enh = Enhance()(torch.rand(1, 256, 256))   # doctest: +SKIP
    >>> enh.shape                                  # doctest: +SKIP
    torch.Size([3, 256, 256])
    """

    def __init__(self, params: PhaseParams | None = None, out: str = "float"):
        if out not in ("float", "uint8"):
            raise ValueError(f"out must be 'float' or 'uint8', got {out!r}")
        self.params = params or PhaseParams()
        self.out = out

    def __repr__(self) -> str:
        return f"Enhance(preset={self.params.preset_name()!r}, out={self.out!r})"

    def __call__(self, image):
        kind = _kind(image)
        if kind == "torch":
            return self._torch(image)
        return self._array(image, channels_last=True)

    def _array(self, image, channels_last: bool):
        from ..maths.features import enhance

        ndim = image.ndim
        if ndim == 2:
            enh = enhance(image, self.params, out=self.out)  # (H, W, 3)
            return enh if channels_last else enh.transpose(2, 0, 1)
        if ndim == 3 and image.shape[0] == 1:
            return enhance(image[0], self.params, out=self.out).transpose(2, 0, 1)
        if ndim == 4 and image.shape[1] == 1:
            return enhance(image[:, 0], self.params, out=self.out).transpose(0, 3, 1, 2)
        raise ValueError(f"Enhance takes (H, W), (1, H, W) or (N, 1, H, W) images, got shape {tuple(image.shape)}")

    def _torch(self, tensor):
        import torch

        if tensor.is_cuda:
            import cupy

            with cupy.cuda.Device(tensor.device.index or 0):
                result = self._array(cupy.from_dlpack(tensor.detach()), channels_last=False)
                return torch.from_dlpack(cupy.ascontiguousarray(result))
        array = tensor.detach().numpy()  # shares memory with the tensor
        if array.dtype not in ("uint8", "uint16", "float32", "float64"):
            array = array.astype("float32")
        return torch.from_numpy(self._array(array, channels_last=False).copy())


class EnhanceD:
    """Dictionary form for MONAI: ENH of ``data[key]`` for every key, the rest passed through.

    Parameters
    ----------
    keys : str or sequence of str
    params, out
        As :class:`Enhance`.
    """

    def __init__(self, keys, params: PhaseParams | None = None, out: str = "float"):
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.enhance = Enhance(params, out)

    def __call__(self, data):
        data = dict(data)
        for key in self.keys:
            if key not in data:
                raise KeyError(f"EnhanceD: key {key!r} not in the data (keys: {sorted(data)})")
            data[key] = self.enhance(data[key])
        return data
