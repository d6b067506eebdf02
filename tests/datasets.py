"""Generated radiograph files in every format and layout the converter must take."""

from __future__ import annotations

import numpy as np
from PIL import Image

from phasefeat.tools.phantom import chest_phantom


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
            "huge.png": "exceeds the pixel limit"}


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


def write_hostile_files(folder, big_bytes: int) -> tuple[list[str], dict[str, str]]:
    """Every kind of file a conversion must survive, in ``folder``.

    Returns the names that must convert and ``{stored path: reason fragment}`` of those
    that must be failures rows (paths relative to ``folder``). ``big_bytes``: a file of that
    size is written to trip a smaller ``--max-bytes``.
    """
    import os
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    good, bad = [], {}
    u8 = np.rint(phantom(7) * 255).astype(np.uint8)
    Image.fromarray(u8).save(folder / "fine.png")
    Image.fromarray(u8).save(folder / "fine.gif")
    Image.fromarray(u8).save(folder / "fine.webp", lossless=True)
    write_dicom(folder / "scan0001", np.rint(phantom(8) * 4095).astype(np.uint16))  # no extension
    good += ["fine.png", "fine.gif", "fine.webp", "scan0001"]
    nan = phantom(9).astype(np.float32)
    nan[3, 3] = np.nan
    Image.fromarray(nan, mode="F").save(folder / "nan.tif")
    inf = phantom(9).astype(np.float32)
    inf[0, 0] = np.inf
    Image.fromarray(inf, mode="F").save(folder / "inf.tif")
    bad |= {"nan.tif": "NaN or infinite", "inf.tif": "NaN or infinite"}
    write_dicom(folder / "window0.dcm", np.rint(phantom(10) * 4095).astype(np.uint16), window=(2000, 0))
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 3)
    bad |= {"window0.dcm": "window width", "broken.dcm": "unreadable DICOM"}
    frames = [Image.fromarray(u8), Image.fromarray(255 - u8)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder / "tiny.png")
    (folder / "big.png").write_bytes(Image.fromarray(u8).tobytes() + b"\0" * big_bytes)
    bad |= {"anim.gif": "more than one frame", "tiny.png": "smaller than 8 pixels", "big.png": "size limit"}
    os.symlink(folder / "nowhere.png", folder / "dangling.png")
    os.symlink(folder / "loop.png", folder / "loop.png")
    os.symlink("/dev/null", folder / "device.png")
    os.mkfifo(folder / "fifo.png")
    bad |= {"dangling.png": "dangling symbolic link", "loop.png": "symbolic link loop",
            "device.png": "not a regular file (device)", "fifo.png": "not a regular file (FIFO)"}
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(folder / "s.png"))
        bad["s.png"] = "not a regular file (socket)"
    except OSError:  # a path too long for a socket address: leave that kind out
        pass
    finally:
        sock.close()
    raw = os.fsencode(folder) + b"/bad\xffname.png"
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT)
    os.write(fd, (folder / "fine.png").read_bytes())
    os.close(fd)
    bad["bad\\xffname.png"] = "not valid UTF-8"
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "up")  # a folder link back to its parent: a loop
    bad["sub/up/"] = "symbolic link loop"
    (folder / "notes.txt").write_text("not an image and not named like one: ignored\n")
    return good, bad


CLASSES = ["covid", "normal", "pneumonia"]  # the class names of tiny_store


def tiny_store(path, n=4, size=8, *, enh_dtype="uint8", virtual=False, masks=False, enh=None, seed=0,
               labels=None):
    """A store of ``n`` random samples (labels 0, 1, 2, 0, ... unless given) written by the product's own
    assembly, without converting images (fast). ``size``: a side, or ``(height, width)``."""
    from phasefeat import PhaseParams
    from phasefeat.io.assemble import assemble, write_piece

    height, width = (size, size) if np.isscalar(size) else size
    labels = np.arange(n) % 3 if labels is None else np.asarray(labels)
    rng = np.random.default_rng(seed)
    piece = {"labels": labels.astype(np.int32), "source_path": np.array([f"f{i}.png" for i in range(n)]),
             "patient_id": np.array([f"p{i}" if i % 2 == 0 else "" for i in range(n)]),
             "source": np.array(["a"] * n), "sha256": np.array([f"{i:064d}" for i in range(n)]),
             "orig_width": np.full(n, 20, np.int32), "orig_height": np.full(n, 30, np.int32),
             "orig_mode": np.array(["L"] * n),
             "cxr": rng.integers(0, 256, (n, height, width, 1), dtype=np.uint8),
             "enh": enh if enh is not None else rng.integers(0, 256, (n, height, width, 3)).astype(enh_dtype)}
    if masks:
        piece["mask"] = np.ones((n, height, width, 1), np.uint8)
        piece["has_mask"] = np.arange(n) % 2 == 0
    pieces = path.with_name(path.name + ".piece.npz")
    write_piece(pieces, piece)
    assemble(path, [pieces], shape=(height, width), cxr_dtype="uint8", enh_dtype=enh_dtype, class_names=CLASSES,
             failures=[("bad.png", "not an image")], virtual=virtual,
             attrs={"params_json": PhaseParams().to_json(), "library_versions": '{"numpy": "2"}'})
    pieces.unlink()
    return path
