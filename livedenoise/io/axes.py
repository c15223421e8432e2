"""Axis letters: what each means and which strings are valid (``TZCYX``, ``PTCYX``...)."""
from __future__ import annotations

from livedenoise.errors import InputDataError

#: Axis letters understood here, with their meaning (the tifffile / OME codes, plus P and K).
AXES: dict[str, str] = {
    "P": "position (stage position; one OME image series each)",
    "T": "time",
    "C": "channel",
    "Z": "focus (z)",
    "Y": "image rows",
    "X": "image columns",
    "I": "image index (an unspecified sequence)",
    "Q": "other",
    "R": "tile row",
    "K": "tile column",
    "A": "angle",
    "E": "wavelength (lambda)",
    "H": "lifetime / phase",
}
#: NDTiff (pycromanager / Micro-Manager) axis names and their letters.
NDTIFF_LETTERS: dict[str, str] = {"position": "P", "time": "T", "channel": "C", "z": "Z", "row": "R", "column": "K"}
#: Letters given to other NDTiff axis names, in order.
_SPARE_LETTERS = "QAEHI"


def validate_axes(axes: str, ndim: int | None = None, *, what: str = "--axes") -> str:
    """Return ``axes`` upper-cased if it is a valid axis string, else raise :class:`InputDataError`.

    Valid: letters from :data:`AXES`, each at most once, ending in ``YX``, ``P`` (if any) first,
    and exactly ``ndim`` letters when ``ndim`` is given.
    """
    text = str(axes).strip().upper()
    allowed = ", ".join(f"{k} ({v})" for k, v in AXES.items())
    unknown = sorted({a for a in text if a not in AXES})
    if unknown:
        raise InputDataError(f"{what} {axes!r} contains unknown axis letter(s) {', '.join(unknown)}; "
                             f"expected letters among {allowed}.")
    if len(set(text)) != len(text):
        raise InputDataError(f"{what} {axes!r} names an axis twice; each letter may appear once.")
    if not text.endswith("YX"):
        raise InputDataError(f"{what} {axes!r} must end with YX (the image rows and columns), e.g. TZCYX.")
    if "P" in text and not text.startswith("P"):
        raise InputDataError(f"{what} {axes!r} must have P (position) first, e.g. PTCYX.")
    if ndim is not None and len(text) != ndim:
        raise InputDataError(f"{what} {axes!r} names {len(text)} axes but the data have {ndim} dimensions.")
    return text


def example_axes(ndim: int) -> str:
    """A valid axis string of ``ndim`` letters, for messages that ask the user to declare axes: ``ZYX``, ``CZYX``,
    ``TCZYX``, then ``PTCZYX`` and further letters from :data:`AXES` (``PTCZAYX``...)."""
    lead = ndim - 2
    if lead <= 3:
        return "TCZ"[3 - lead:] + "YX"
    spare = [a for a in AXES if a not in "PTCZYX"]
    return "PTCZ" + "".join(spare[: lead - 4]) + "YX"
