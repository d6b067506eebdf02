"""Generated radiograph files in every format and layout the converter must take."""

from __future__ import annotations

import numpy as np
from PIL import Image

from phasefeat.phantom import chest_phantom


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", *, bits_stored: int = 12,
                slope: float = 1.0, intercept: float = 0.0, window=None):
    """A minimal single-frame DICOM (explicit VR little endian) with 16-bit storage."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def phantom(seed: int, shape=(90, 70)) -> np.ndarray:
    return chest_phantom(shape, seed=seed, dtype="float64")


def write_all_formats(folder, seed0: int = 0) -> list[str]:
    """One file per supported format/mode in ``folder``; returns the names written."""
    folder.mkdir(parents=True, exist_ok=True)
    g = lambda k: phantom(seed0 + k)  # noqa: E731
    u8 = lambda k: np.rint(g(k) * 255).astype(np.uint8)  # noqa: E731
    written = {}
    Image.fromarray(u8(0)).save(folder / "grey8.png")
    Image.fromarray(np.rint(g(1) * 65535).astype(np.uint16)).save(folder / "grey16.png")
    Image.fromarray(np.stack([u8(2)] * 3, -1)).save(folder / "rgb.png")
    Image.fromarray(np.dstack([u8(3)] * 3 + [np.full(u8(3).shape, 255, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(u8(4)).convert("P").save(folder / "palette.png")
    Image.fromarray(u8(5)).save(folder / "grey.JPG", quality=95)
    Image.fromarray(np.stack([u8(6)] * 3, -1)).save(folder / "colour.jpeg", quality=95)
    Image.fromarray(u8(7)).save(folder / "grey.bmp")
    Image.fromarray(u8(8)).save(folder / "grey.tif")
    Image.fromarray(u8(9)).save(folder / "really-a-png.jpg", format="PNG")  # extension lies
    write_dicom(folder / "mono2.dcm", np.rint(g(10) * 4095).astype(np.uint16), "MONOCHROME2")
    write_dicom(folder / "mono1.dcm", np.rint((1 - g(11)) * 4095).astype(np.uint16), "MONOCHROME1",
                slope=2.0, intercept=-100.0, window=(4000, 9000))
    for name in sorted(p.name for p in folder.iterdir()):
        written[name] = True
    return sorted(written)


def write_bad_files(folder) -> dict[str, str]:
    """Broken files with image extensions; returns name -> expected reason fragment."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image\n")
    good = folder / "_tmp.png"
    Image.fromarray(np.rint(phantom(40) * 255).astype(np.uint8)).save(good)
    data = good.read_bytes()
    good.unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(folder / "huge.png")  # over a small limit
    return {"empty.png": "empty file", "notes.png": "not an image", "truncated.png": "truncated",
            "huge.png": "exceeds the limit"}


def class_folder_dataset(root, per_class: int = 3, with_bad: bool = False):
    """root/<Class Name>/images/*.png (+ masks/ to ignore), Kaggle style, mixed case and spaces."""
    names = {"COVID": "covid", "Normal": "normal", "Viral Pneumonia": "pneumonia"}
    k = 0
    for folder in names:
        images = root / folder / "images"
        images.mkdir(parents=True)
        (root / folder / "masks").mkdir()
        for i in range(per_class):
            Image.fromarray(np.rint(phantom(100 + k) * 255).astype(np.uint8)).save(images / f"{folder} {i}.png")
            Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / folder / "masks" / f"m{i}.png")
            k += 1
    if with_bad:
        write_bad_files(root / "Normal" / "images")
    (root / "README.txt").write_text("not a class folder\n")
    return names
