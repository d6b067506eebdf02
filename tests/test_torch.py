"""ENH as a PyTorch/MONAI transform, a store in a DataLoader, and the examples of docs/pytorch.md."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from phasefeat import PhaseParams, enhance
from phasefeat.tools.phantom import chest_phantom
from phasefeat.tools.transforms import Enhance, EnhanceD

torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[torch]')")
if "tensorflow" in sys.modules:  # collected beside the Keras tests
    pytest.skip("TensorFlow is loaded: torch's Triton (pulled in by torchvision and MONAI) crashes beside it; "
                "`make test` runs this file in a process of its own", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
IMAGE = chest_phantom((72, 64), seed=4, dtype="float32")


@pytest.mark.parametrize("out", ["float", "uint8"])
def test_numpy_layouts_equal_enhance(out):
    want = enhance(IMAGE, out=out)  # (H, W, 3)
    t = Enhance(out=out)
    assert np.array_equal(t(IMAGE), want)
    assert np.array_equal(t(IMAGE[None]), want.transpose(2, 0, 1))
    batch = np.stack([IMAGE, IMAGE[::-1].copy()])[:, None]
    assert np.array_equal(t(batch), enhance(batch[:, 0], out=out).transpose(0, 3, 1, 2))


@pytest.mark.parametrize("shape", [(72, 64), (1, 72, 64), (2, 1, 72, 64)])
def test_torch_cpu_tensors_come_back_as_tensors_channels_first(shape):
    image = torch.from_numpy(np.broadcast_to(IMAGE, shape).copy())
    enh = Enhance()(image)
    assert isinstance(enh, torch.Tensor) and enh.device.type == "cpu" and enh.dtype == torch.float32
    expected = enhance(IMAGE)
    if len(shape) < 4:
        assert tuple(enh.shape) == (3, 72, 64)
        assert np.array_equal(enh.numpy(), expected.transpose(2, 0, 1))
    else:
        assert tuple(enh.shape) == (2, 3, 72, 64)
        assert np.array_equal(enh[1].numpy(), expected.transpose(2, 0, 1))


def test_preset_and_errors():
    kovesi = Enhance(PhaseParams.preset("kovesi"), out="uint8")
    assert np.array_equal(kovesi(IMAGE[None]), enhance(IMAGE, PhaseParams.preset("kovesi"),
                                                       out="uint8").transpose(2, 0, 1))
    with pytest.raises(ValueError, match=re.escape("(H, W), (1, H, W) or (N, 1, H, W)")):
        Enhance()(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(TypeError, match="NumPy array, a CuPy array or a torch tensor"):
        Enhance()([[0.0]])
    with pytest.raises(ValueError, match="out must be"):
        Enhance(out="png")
    with pytest.raises(KeyError, match="'image' not in the data"):
        EnhanceD("image")({"label": 1})


def test_dictionary_form_transforms_only_its_keys():
    data = EnhanceD(keys=["image"], out="uint8")({"image": torch.from_numpy(IMAGE[None].copy()), "label": 2})
    assert data["label"] == 2 and tuple(data["image"].shape) == (3, 72, 64)
    assert data["image"].dtype == torch.uint8


@pytest.mark.gpu
def test_cuda_tensors_stay_on_the_gpu_and_match_the_cpu():
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    image = torch.from_numpy(IMAGE[None].copy()).cuda()
    enh = Enhance()(image)
    assert enh.is_cuda and tuple(enh.shape) == (3, 72, 64)
    cpu = Enhance()(image.cpu())
    assert float((enh.cpu() - cpu).abs().max()) < 1e-4


def test_the_cuda_path_hands_tensors_to_cupy_by_dlpack(cupy_standin):
    """The branch for CUDA tensors, run on the stand-in: a CPU tensor that says it is on CUDA goes
    through ``cupy.from_dlpack``, ENH on the (stand-in) device and ``torch.from_dlpack`` back."""

    class OnCuda(torch.Tensor):
        @property
        def is_cuda(self):
            return True

    calls = []
    real = cupy_standin.from_dlpack
    cupy_standin.from_dlpack = lambda t: calls.append(type(t)) or real(t)
    try:
        image = torch.from_numpy(IMAGE[None].copy()).as_subclass(OnCuda)
        enh = Enhance()(image)
    finally:
        cupy_standin.from_dlpack = real
    assert calls, "the CUDA branch was not taken"
    assert isinstance(enh, torch.Tensor) and tuple(enh.shape) == (3, 72, 64)
    cpu = Enhance()(torch.from_numpy(IMAGE[None].copy()))
    assert float((enh.as_subclass(torch.Tensor) - cpu).abs().max()) < 1e-4


def test_store_in_a_dataloader_reads_every_sample_once_per_epoch(store):
    from torch.utils.data import DataLoader

    from phasefeat.io.store import open_store
    from phasefeat.tools.torch_data import StoreDataset

    dataset = StoreDataset(store, what="enh")
    with open_store(store) as s:
        n, labels, first = len(s), s.labels, s.read(0)
    assert len(dataset) == n
    image, label = dataset[0]
    assert image.shape == (3, *first.shape[:2]) and np.array_equal(image, first.transpose(2, 0, 1))
    # A second field carries each sample's index through the workers: every index exactly once.
    indexed = IndexedStore(dataset)
    loader = DataLoader(indexed, batch_size=7, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # two epochs
        seen = []
        for images, batch_labels, index in loader:
            assert images.dtype == torch.uint8 and images.shape[1] == 3
            assert np.array_equal(batch_labels.numpy(), labels[index.numpy()])
            seen += index.tolist()
        assert sorted(seen) == list(range(n))


class IndexedStore:
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, k):
        return (*self.dataset[k], k)


def _examples() -> list[tuple[str, str]]:
    text = (REPO / "docs" / "pytorch.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return [(re.search(r"^(?:import|from) (\w+)", b, re.M).group(1) if "monai" in b or "torchvision" in b
             else "torch", b) for b in blocks]


@pytest.mark.parametrize("k", range(len(_examples())))
def test_docs_examples_run(k, store, capsys):
    needs = {"monai": "monai", "torchvision": "torchvision"}
    _, code = _examples()[k]
    for module in needs:
        if re.search(rf"^(?:import|from) {module}", code, re.M):
            pytest.importorskip(module)
    namespace = {"STORE": str(store), "torch": torch}
    exec(compile(code, f"docs/pytorch.md example {k}", "exec"), namespace)
    assert capsys.readouterr().out.strip()  # every example prints what it made
