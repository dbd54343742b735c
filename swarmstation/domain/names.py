"""The one rule for names that become files and object keys: output files, model files, keys.

Pure: no I/O. Every place that turns an outside name into a path or key uses these functions, so
a name one layer accepts is never refused by the next one (a workflow that saves
``狐狸_00001_.png`` used to be accepted by the worker and refused by the object store).

A *segment* (one file or folder name) is accepted when, after NFC normalisation, it

- is not empty, ``.`` or ``..``;
- holds no ``/`` or ``\\`` (a segment never names a folder of its own);
- holds no control, format, surrogate, private-use or unassigned character (Unicode category
  ``C*``), and no line or paragraph separator;
- does not begin or end with whitespace (inner spaces are fine: ``a b.safetensors``);
- fits :data:`MAX_SEGMENT_BYTES` bytes of UTF-8 (what Linux file systems allow).

A *path* is ``/``-separated segments, relative, at most ``max_bytes`` bytes of UTF-8. Letters,
digits, marks, punctuation and symbols of every script are allowed.
"""

from __future__ import annotations

import unicodedata

from swarmstation.domain.errors import InvalidInput

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES",
    "BadName",
    "normalise_path",
    "normalise_segment",
    "safe_file_name",
]

MAX_SEGMENT_BYTES = 255  # NAME_MAX on ext4, xfs, btrfs
MAX_KEY_BYTES = 1024  # the longest S3 object key

# Output file names are kept shorter than a segment may be, so the key that holds them
# ("outputs/<job>/<output>/<name>") stays well inside MAX_KEY_BYTES.
MAX_OUTPUT_NAME_BYTES = 200


class BadName(InvalidInput):
    """A name that cannot become a file or key; the message says why, for people."""

    code = "invalid_name"


def _refused_char(c: str) -> bool:
    return unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")


def normalise_segment(name: str, *, what: str = "name") -> str:
    """The NFC form of one file name, or :class:`BadName`."""
    if not isinstance(name, str):
        raise BadName(f"{what} must be a string")
    norm = unicodedata.normalize("NFC", name)
    if not norm:
        raise BadName(f"{what} is empty")
    if norm in (".", ".."):
        raise BadName(f"{what} {norm!r} names no file")
    if "/" in norm or "\\" in norm:
        raise BadName(f"{what} {norm!r} contains a path separator")
    if any(_refused_char(c) for c in norm):
        raise BadName(f"{what} {norm!r} contains a control or invisible character")
    if norm != norm.strip():
        raise BadName(f"{what} {norm!r} begins or ends with whitespace")
    if len(norm.encode()) > MAX_SEGMENT_BYTES:
        raise BadName(f"{what} is longer than {MAX_SEGMENT_BYTES} bytes")
    return norm


def normalise_path(path: str, *, what: str = "name", max_bytes: int = MAX_KEY_BYTES) -> str:
    """The NFC form of a relative ``/``-separated path whose every segment passes
    :func:`normalise_segment`; empty, ``.`` and ``..`` segments are refused, not collapsed, so
    that a path has exactly one spelling."""
    if not isinstance(path, str):
        raise BadName(f"{what} must be a string")
    if not path:
        raise BadName(f"{what} is empty")
    if path.startswith("/"):
        raise BadName(f"{what} {path!r} is an absolute path")
    segments = [normalise_segment(part, what=what) for part in path.split("/")]
    norm = "/".join(segments)
    if len(norm.encode()) > max_bytes:
        raise BadName(f"{what} is longer than {max_bytes} bytes")
    return norm


def _fit_bytes(text: str, limit: int) -> str:
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


def _kept_in_file_names(c: str) -> bool:
    return c in "._-" or unicodedata.category(c)[0] in "LNM"


def safe_file_name(name: str, *, fallback: str = "output") -> str:
    """A file name that :func:`normalise_segment` accepts, made from whatever a program produced:
    the last path segment, NFC, keeping letters, digits and marks of every script and ``._-``;
    anything else (spaces, punctuation, controls) becomes ``_``, so the name needs no quoting in
    a URL or a shell. At most :data:`MAX_OUTPUT_NAME_BYTES` bytes, keeping the extension.
    ``狐狸_00001_.png`` is kept as it is."""
    base = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    cleaned = "".join(c if _kept_in_file_names(c) else "_" for c in base)
    if cleaned in ("", ".", ".."):
        cleaned = fallback
    stem, dot, ext = cleaned.rpartition(".")
    if dot and stem and len(ext.encode()) <= 20:
        cleaned = _fit_bytes(stem, MAX_OUTPUT_NAME_BYTES - len(ext.encode()) - 1) + "." + ext
    else:
        cleaned = _fit_bytes(cleaned, MAX_OUTPUT_NAME_BYTES)
    return normalise_segment(cleaned, what="file name")
