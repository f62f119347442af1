"""Decoding caption (and settings) files: the one place that turns their bytes into text.

UTF-8 (with or without a byte-order mark) and UTF-16 with a byte-order mark (little or big endian) are
recognised; anything else is refused with a message naming the file, never "repaired" with U+FFFD.
A caller that knows the file's encoding passes it by name (`encoding="cp1252"`). A caption larger than
`MAX_CAPTION_BYTES` is refused too: real captions are a line of tags, a few hundred bytes.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

__all__ = ["MAX_CAPTION_BYTES", "CaptionFileError", "check_encoding_name", "decode_text", "read_caption_file"]

MAX_CAPTION_BYTES = 64 * 1024

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


class CaptionFileError(ValueError):
    """A caption (or text) file cannot be used as it is; the message names the file and what to do."""


def check_encoding_name(name: str) -> str:
    """`name` if Python knows that text encoding, else a ValueError saying so."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r} (e.g. utf-8, cp1252, latin-1, shift_jis)") from None
    return name


def decode_text(data: bytes, source: str | os.PathLike, encoding: str | None = None, *,
                hint: str = "") -> str:
    """The text of a file's bytes. Without `encoding`: UTF-8 (a BOM is dropped) or UTF-16 with a BOM;
    anything else raises CaptionFileError naming `source`, followed by `hint` (what the user can do)."""
    hint = f"; {hint}" if hint else ""
    if encoding:
        check_encoding_name(encoding)
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as e:
            raise CaptionFileError(f"{source}: not {encoding} text ({e.reason} at byte {e.start}){hint}") from None
        return text.removeprefix("\ufeff")
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(name)
            except UnicodeDecodeError as e:
                raise CaptionFileError(f"{source}: starts with a {name.upper()} byte-order mark but is not "
                                       f"{name.upper()} text ({e.reason} at byte {e.start}){hint}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CaptionFileError(f"{source}: not UTF-8 text (byte 0x{data[e.start]:02x} at {e.start} is "
                               f"{e.reason}){hint}") from None
    if "\x00" in text:
        raise CaptionFileError(f"{source}: holds NUL bytes (UTF-16 without a byte-order mark, or not text){hint}")
    return text


def read_caption_file(path: str | os.PathLike, encoding: str | None = None, *, hint: str = "") -> str | None:
    """A caption file's text (None when there is none), decoded by `decode_text`; a file over
    MAX_CAPTION_BYTES is refused before it is read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CAPTION_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_CAPTION_BYTES:
        raise CaptionFileError(too_large_message(path))
    return decode_text(data, path, encoding, hint=hint)


def too_large_message(source: str | os.PathLike) -> str:
    return (f"{source}: caption over {MAX_CAPTION_BYTES // 1024} KB (a caption is one line of tags); "
            "refused: shorten it or remove it")
