"""Reading radiographs: content-sniffed formats, bit depth, DICOM LUTs, bad files, fitting."""

import numpy as np
import pytest
from datasets import phantom, write_all_formats, write_bad_files, write_dicom
from PIL import Image

from phasefeat.io.imageio import ImageReadError, fit, read_image


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    write_all_formats(folder)
    return folder


@pytest.mark.parametrize(("name", "fmt", "bits", "seed"), [
    ("grey8.png", "PNG", 8, 0), ("grey16.png", "PNG", 16, 1), ("rgb.png", "PNG", 8, 2),
    ("rgba.png", "PNG", 8, 3), ("palette.png", "PNG", 8, 4), ("grey.JPG", "JPEG", 8, 5),
    ("colour.jpeg", "JPEG", 8, 6), ("grey.bmp", "BMP", 8, 7), ("grey.tif", "TIFF", 8, 8),
    ("really-a-png.jpg", "PNG", 8, 9), ("mono2.dcm", "DICOM", 16, 10), ("mono1.dcm", "DICOM", 16, 11),
])
def test_every_format_decodes_to_the_picture(formats, name, fmt, bits, seed):
    data = read_image(formats / name)
    assert data.format == fmt and data.bits == bits
    assert (data.width, data.height) == (70, 90)
    assert data.pixels.dtype == np.float32 and data.pixels.shape == (90, 70)
    truth = phantom(seed)
    tol = {8: 1 / 255 + 1e-6, 16: 1 / 4095 + 1e-6}[bits]
    if fmt == "JPEG":
        assert np.corrcoef(data.pixels.ravel(), truth.ravel())[0, 1] > 0.99
    else:
        # DICOM is rescaled by its actual output range; PNG/BMP/TIFF by the nominal one.
        scaled = (truth - truth.min()) / np.ptp(truth) if fmt == "DICOM" else truth
        assert np.abs(data.pixels - scaled).max() <= tol * (3 if fmt == "DICOM" else 1)


def test_sixteen_bit_precision_is_kept(formats):
    pixels = read_image(formats / "grey16.png").pixels
    assert len(np.unique(pixels)) > 256  # an 8-bit squash would leave at most 256 levels


def test_dicom_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    truth = np.rint(phantom(3) * 4000).astype(np.uint16)
    write_dicom(tmp_path / "m2.dcm", truth, "MONOCHROME2")
    write_dicom(tmp_path / "m1.dcm", 4000 - truth, "MONOCHROME1")
    m2 = read_image(tmp_path / "m2.dcm").pixels
    m1 = read_image(tmp_path / "m1.dcm").pixels
    assert np.abs(m1 - m2).max() < 1e-6
    assert read_image(tmp_path / "m1.dcm").mode == "DICOM MONOCHROME1 12-bit"


def test_dicom_window_is_applied(tmp_path):
    ramp = np.tile(np.linspace(0, 4000, 64), (32, 1)).astype(np.uint16)
    write_dicom(tmp_path / "w.dcm", ramp, window=(1000, 500))
    pixels = read_image(tmp_path / "w.dcm").pixels
    assert pixels[0, 0] == 0 and pixels[0, -1] == 1
    assert np.mean(pixels == 1) > 0.65  # everything above 1250 saturates (11 of 16 parts)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_bad_files(folder)


@pytest.mark.parametrize("name", ["empty.png", "notes.png", "truncated.png", "huge.png"])
def test_bad_files_give_one_line_reasons(bad, name):
    folder, expected = bad
    with pytest.raises(ImageReadError, match=expected[name]) as info:
        read_image(folder / name, max_pixels=250 * 250)
    assert "\n" not in str(info.value)


def test_missing_file_and_float_tiff(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")
    # 32-bit float TIFFs are scaled by their actual range.
    Image.fromarray(np.linspace(-5, 5, 256, dtype=np.float32).reshape(16, 16), mode="F").save(tmp_path / "f.tif")
    pixels = read_image(tmp_path / "f.tif").pixels
    assert pixels.min() == 0 and pixels.max() == 1


@pytest.mark.parametrize("how", ["stretch", "pad", "crop"])
@pytest.mark.parametrize("shape", [(90, 70), (70, 90), (64, 64)])
def test_fit_modes(how, shape):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    out = fit(image, 32, how)
    assert out.shape == (32, 32) and out.dtype == np.float32
    if how == "pad" and shape[0] != shape[1]:
        assert (out == 0).any()  # black borders
    if how == "crop" or shape[0] == shape[1]:
        assert (out != 0).all()


def test_fit_rejects_unknown_mode():
    with pytest.raises(ValueError, match="fit must be"):
        fit(np.zeros((8, 8), np.float32), 8, "zoom")
