"""Every parameter of the local-phase enhancement in one frozen, hashable record.

The defaults and their provenance are documented in ``docs/algorithm.md``. A
``PhaseParams`` is hashable so filter banks can be cached by it, and it
serialises to JSON so every store and report can record exactly what made it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

__all__ = ["PhaseParams", "PRESETS", "DEFAULT_PRESET"]

FILTER_FAMILIES = ("log_gabor", "assd")
CHANNELS = ("lwpa", "lpe", "elea")
BORDERS = ("periodic", "reflect")
CLOSING_BORDERS = ("nearest", "wrap")
ELEA_SOURCES = ("lpe", "pe")
SCALINGS = ("minmax", "fixed")
#: The preset that ``PhaseParams()`` equals and every command uses unless told otherwise.
DEFAULT_PRESET = "qi2021"
#: Fields added after stores were first written, with the value that reproduces what earlier
#: versions computed. A complete parameter record without them is read with these values, and
#: ``to_dict`` leaves them out at these values, so the digests of earlier records stay the same.
LATER_FIELDS = {"assd_exponent": None, "scaling": "minmax", "scaling_percentile": 99.0,
                "scaling_margin": 16}
# Upper bounds that keep a typo (1e8 iterations, 1e5 scales) from running for days or
# exhausting memory; far above anything the method uses.
MAX_NSCALE = 16
MAX_BCCR_ITERATIONS = 64
MAX_CLOSING_SIZE = 63
#: The widest ASSD band-pass accepted, in octaves: a filter spanning a frequency ratio of 2**32 is
#: already flat over any image; far wider ones (hundreds of octaves) put the filter's half-amplitude
#: points below the smallest double, where its exponent can no longer be solved.
MAX_ASSD_BANDWIDTH = 32.0


@dataclasses.dataclass(frozen=True)
class PhaseParams:
    """Parameters of the monogenic filter bank and of the ELEA attenuation map.

    Parameters
    ----------
    filter_family : {"log_gabor", "assd"}
        Radial band-pass family: Kovesi's log-Gabor or Belaid & Boukerroui's
        alpha-scale-space derivative (ASSD).
    nscale : int
        Number of filter scales.
    min_wavelength : float
        Wavelength of the finest scale, in pixels at the working resolution.
    mult : float
        Ratio between successive wavelengths.
    sigma_onf : float
        Log-Gabor bandwidth parameter, in (0, 1). 0.65 is about 1.46 octaves.
    assd_alpha : float
        ASSD shape parameter alpha.
    assd_bandwidth : float
        ASSD half-amplitude bandwidth in octaves; fixes the ASSD exponent ``a``
        unless ``assd_exponent`` is given.
    assd_exponent : float or None
        The ASSD exponent ``a`` itself (overrides ``assd_bandwidth``). The lab's
        code hard-codes 1.838 (3.995 octaves at alpha 0.2).
    lowpass : tuple of (float, int) or None
        Butterworth low-pass ``(cutoff, order)`` applied to every band-pass,
        cutoff in cycles/pixel in (0, 0.5]. ``None`` turns it off.
    polarity : {0, 1, -1}
        Phase-energy polarity: 0 uses ``|even|``, +1 bright and -1 dark
        features only.
    elea_source : {"lpe", "pe"}
        Map that drives the attenuation estimate (paper: LPE; lab port: PE).
    kappa : float
        Atmospheric-light fraction: ``rho = round(kappa * max S)``.
    c0, c1 : float
        Boundary-constraint bounds, in 8-bit units.
    closing_size : int
        Side of the square structuring element of the closing of ``t_b``.
    closing_border : {"nearest", "wrap"}
        Border rule of the closing (``"nearest"`` is MATLAB ``imclose``).
    reg_lambda : float
        Weight of the data term of the contextual regularisation.
    sigma_w : float
        Width of the contextual weights (divides, as in Meng's code).
    bccr_iterations : int
        Outer half-quadratic iterations; beta grows by 2*sqrt(2) each time.
    delta : float
        Attenuation exponent of the inversion.
    eps : float
        Floor of the transmission map in the inversion.
    meng_compat : bool
        Reproduce the duplicated fifth mask of Meng's released code.
    channel_order : tuple of str
        Order of the three ENH channels, a permutation of
        ``("lwpa", "lpe", "elea")``.
    border : {"periodic", "reflect"}
        ``"periodic"`` filters the image as it is (circular FFT);
        ``"reflect"`` mirror-pads by ``2 * max wavelength`` and crops back.
    kovesi_odd_grid : bool
        Use the ``(k - N//2) / (N - 1)`` frequency axis of Kovesi's MATLAB
        code for odd sizes instead of the DFT's ``k / N``.
    scaling : {"minmax", "fixed"}
        How LwPA and the energies become 0..255. ``"minmax"`` (published):
        per-image min-max, so border artefacts and burned-in markers set the
        range. ``"fixed"``: LwPA by ``255 (LwPA + pi/2) / pi``; energies by
        ``127.5 (1 + x / q)`` clipped to 0..255, with ``q`` the
        ``scaling_percentile`` of ``|x|`` more than ``scaling_margin`` pixels
        from the border, so zero energy is always mid-grey.
    scaling_percentile : float
        Percentile in (50, 100] of ``|energy|`` that maps to 0 and 255.
    scaling_margin : int
        Border width (pixels) left out of that percentile.

    Notes
    -----
    ``PhaseParams()`` is the ``"qi2021"`` preset: the only public
    implementation of the Hacihaliloglu lab's pipeline, as documented in
    ``docs/algorithm.md``. ``PhaseParams.preset("kovesi")`` is the
    log-Gabor bank with the paper's formulas, whose parts cross-check exactly
    against public monogenic code.

    References
    ----------
    .. [1] P. Kovesi, "monofilt.m", MATLAB and Octave Functions for Computer
       Vision and Image Processing.
    .. [2] G. Meng et al., "Efficient image dehazing with boundary constraint
       and contextual regularization", ICCV 2013.
    .. [3] A. Belaid and D. Boukerroui, "alpha scale spaces filters for phase
       based edge detection in ultrasound images", Pattern Recognition 47(10),
       2014.
    """

    filter_family: str = "assd"
    nscale: int = 2
    min_wavelength: float = 25.0
    mult: float = 3.0
    sigma_onf: float = 0.65
    assd_alpha: float = 0.2
    assd_bandwidth: float = 4.0
    assd_exponent: float | None = 1.838
    lowpass: tuple[float, int] | None = (0.40, 10)
    polarity: int = 1
    elea_source: str = "pe"
    kappa: float = 0.7
    c0: float = 30.0
    c1: float = 300.0
    closing_size: int = 3
    closing_border: str = "nearest"
    reg_lambda: float = 2.0
    sigma_w: float = 0.5
    bccr_iterations: int = 6
    delta: float = 0.85
    eps: float = 1e-4
    meng_compat: bool = True
    channel_order: tuple[str, str, str] = ("lpe", "elea", "lwpa")
    border: str = "periodic"
    kovesi_odd_grid: bool = True
    scaling: str = "minmax"
    scaling_percentile: float = 99.0
    scaling_margin: int = 16

    def __post_init__(self):
        # Normalise JSON-ish inputs (lists) to hashable tuples before checking.
        if self.lowpass is not None:
            object.__setattr__(self, "lowpass", _as_lowpass(self.lowpass))
        object.__setattr__(self, "channel_order", tuple(self.channel_order))
        _validate(self)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PhaseParams:
        """Return a named parameter set, optionally with some fields changed.

        Parameters
        ----------
        name : {"qi2021", "kovesi", "assd_lpe"}
            ``"qi2021"`` (the default) reproduces the public port of the
            Hacihaliloglu lab's pipeline: ASSD bank of 2 scales at 25 and
            75 px, a = 1.838, low-pass (0.40, 10), polarity +1, ELEA driven by
            PE, Meng's filter bank, Kovesi's odd-size grid and the lab's channel
            order (LPE, ELEA, LwPA). ``"kovesi"`` is Kovesi's log-Gabor bank
            (3 scales, 4 px, x2, sigma_onf 0.65) with the paper's formulas
            (polarity 0, ELEA from LPE, order LwPA, LPE, ELEA).
            ``"assd_lpe"`` is the lab's ASSD bank with ELEA driven by LPE, as
            the paper's formula says.
        **overrides
            Fields to change on top of the preset.
        """
        if name in RENAMED_PRESETS:
            raise ValueError(RENAMED_PRESETS[name])
        try:
            fields = PRESETS[name]
        except KeyError:
            raise ValueError(
                f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}"
            ) from None
        return cls(**{**fields, **overrides})

    def preset_name(self) -> str:
        """Name of the preset these parameters equal, or ``"custom"``."""
        for name in PRESETS:
            if self == PhaseParams.preset(name):
                return name
        return "custom"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of every field.

        Fields added in later versions are left out while they hold the value
        that reproduces earlier versions, so earlier digests stay valid.
        """
        out = dataclasses.asdict(self)
        out["lowpass"] = None if self.lowpass is None else list(self.lowpass)
        out["channel_order"] = list(self.channel_order)
        for name, legacy in LATER_FIELDS.items():
            if out[name] == legacy:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhaseParams:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``.

        Missing fields take their defaults, except in a complete record made
        by an earlier version (every field but the later ones present): there
        the later fields take the values that reproduce what it computed.
        """
        if not isinstance(data, dict):
            raise ValueError(f"PhaseParams must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PhaseParams field(s): {', '.join(unknown)}")
        if known - set(LATER_FIELDS) <= set(data):
            data = {**LATER_FIELDS, **data}
        try:
            return cls(**data)
        except TypeError as exc:  # e.g. a list where a number belongs
            raise ValueError(f"invalid PhaseParams: {exc}") from None

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace variation)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PhaseParams:
        """Build from :meth:`to_json` text; malformed JSON raises ``ValueError``."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"PhaseParams JSON is not readable ({exc})") from None
        return cls.from_dict(data)

    def digest(self) -> str:
        """Stable SHA-256 hex digest of the canonical JSON form."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def replace(self, **changes: Any) -> PhaseParams:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def wavelengths(self) -> tuple[float, ...]:
        """Wavelength of each scale in pixels, finest first."""
        return tuple(self.min_wavelength * self.mult**s for s in range(self.nscale))


_LAB_ASSD_BANK = {"filter_family": "assd", "nscale": 2, "min_wavelength": 25.0, "mult": 3.0,
                  "assd_alpha": 0.2, "assd_bandwidth": 4.0, "lowpass": (0.40, 10), "polarity": 1}
PRESETS: dict[str, dict[str, Any]] = {
    "qi2021": {},
    # Kovesi's monofilt values with the paper's formulas: the defaults of phasefeat <= 0.1.
    "kovesi": {"filter_family": "log_gabor", "nscale": 3, "min_wavelength": 4.0, "mult": 2.0,
               "assd_exponent": None, "lowpass": (0.45, 15), "polarity": 0, "elea_source": "lpe",
               "meng_compat": False, "channel_order": CHANNELS, "kovesi_odd_grid": False},
    # What phasefeat 0.1 called "lab_assd": the lab's bank, the paper's ELEA source and order.
    "assd_lpe": {**_LAB_ASSD_BANK, "assd_exponent": None, "elea_source": "lpe",
                 "meng_compat": False, "channel_order": CHANNELS, "kovesi_odd_grid": False},
}
RENAMED_PRESETS = {
    "lab_assd": "preset 'lab_assd' was renamed 'assd_lpe': it has the lab's filter bank but drives "
                "ELEA by LPE; the lab's whole configuration is the preset 'qi2021' (the default)",
}


def _as_lowpass(value) -> tuple[float, int]:
    try:
        cutoff, order = value
    except (TypeError, ValueError):
        raise ValueError(f"lowpass must be (cutoff, order) or None, got {value!r}") from None
    return (float(cutoff), order)


def _finite_positive(p: PhaseParams, name: str) -> None:
    value = getattr(p, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")


def _positive_int(p: PhaseParams, name: str) -> None:
    value = getattr(p, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _one_of(p: PhaseParams, name: str, choices) -> None:
    value = getattr(p, name)
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _validate(p: PhaseParams) -> None:
    _one_of(p, "filter_family", FILTER_FAMILIES)
    _positive_int(p, "nscale")
    if p.nscale > MAX_NSCALE:
        raise ValueError(f"nscale must be at most {MAX_NSCALE}, got {p.nscale!r}")
    for name in ("min_wavelength", "mult", "assd_alpha", "assd_bandwidth", "kappa",
                 "reg_lambda", "sigma_w", "delta", "eps"):
        _finite_positive(p, name)
    if p.assd_alpha > 1:
        raise ValueError(f"assd_alpha must lie in (0, 1] (alpha scale spaces), got {p.assd_alpha!r}")
    if p.assd_bandwidth > MAX_ASSD_BANDWIDTH:
        raise ValueError(f"assd_bandwidth must be at most {MAX_ASSD_BANDWIDTH:g} octaves, got {p.assd_bandwidth!r}")
    if p.filter_family == "assd" and p.assd_exponent is None:
        from .maths.assd import assd_exponent

        assd_exponent(p.assd_alpha, p.assd_bandwidth)  # refuses a bandwidth this alpha cannot reach
    if p.min_wavelength < 2:
        raise ValueError(f"min_wavelength must be >= 2 pixels (Nyquist), got {p.min_wavelength!r}")
    if not 0 < p.sigma_onf < 1:
        raise ValueError(f"sigma_onf must lie in (0, 1), got {p.sigma_onf!r}")
    if p.lowpass is not None:
        cutoff, order = p.lowpass
        if not (math.isfinite(cutoff) and 0 < cutoff <= 0.5):
            raise ValueError(f"lowpass cutoff must lie in (0, 0.5], got {cutoff!r}")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"lowpass order must be an integer >= 1, got {order!r}")
    if p.polarity not in (0, 1, -1) or isinstance(p.polarity, bool):
        raise ValueError(f"polarity must be 0, 1 or -1, got {p.polarity!r}")
    _one_of(p, "elea_source", ELEA_SOURCES)
    if p.kappa > 1:
        raise ValueError(f"kappa must lie in (0, 1], got {p.kappa!r}")
    for name in ("c0", "c1"):
        value = getattr(p, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0 <= p.c0 < p.c1:
        raise ValueError(f"c0 and c1 must satisfy 0 <= c0 < c1, got c0={p.c0!r}, c1={p.c1!r}")
    _positive_int(p, "closing_size")
    if p.closing_size > MAX_CLOSING_SIZE:
        raise ValueError(f"closing_size must be at most {MAX_CLOSING_SIZE}, got {p.closing_size!r}")
    _one_of(p, "closing_border", CLOSING_BORDERS)
    if isinstance(p.bccr_iterations, bool) or not isinstance(p.bccr_iterations, int) \
            or not 0 <= p.bccr_iterations <= MAX_BCCR_ITERATIONS:
        raise ValueError(f"bccr_iterations must be an integer in 0..{MAX_BCCR_ITERATIONS}, "
                         f"got {p.bccr_iterations!r}")
    if not isinstance(p.meng_compat, bool):
        raise ValueError(f"meng_compat must be True or False, got {p.meng_compat!r}")
    if sorted(p.channel_order) != sorted(CHANNELS):
        raise ValueError(
            f"channel_order must be a permutation of {list(CHANNELS)}, got {list(p.channel_order)!r}"
        )
    _one_of(p, "border", BORDERS)
    if not isinstance(p.kovesi_odd_grid, bool):
        raise ValueError(f"kovesi_odd_grid must be True or False, got {p.kovesi_odd_grid!r}")
    if p.assd_exponent is not None:
        _finite_positive(p, "assd_exponent")
    _one_of(p, "scaling", SCALINGS)
    _finite_positive(p, "scaling_percentile")
    if not 50 < p.scaling_percentile <= 100:
        raise ValueError(f"scaling_percentile must lie in (50, 100], got {p.scaling_percentile!r}")
    if isinstance(p.scaling_margin, bool) or not isinstance(p.scaling_margin, int) \
            or p.scaling_margin < 0:
        raise ValueError(f"scaling_margin must be an integer >= 0, got {p.scaling_margin!r}")
