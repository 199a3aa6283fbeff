"""Reading ACDC's per-patient ``Info.cfg`` (headerless ``Key: value`` lines).

Used by ``medseg prepare acdc`` (:mod:`data_prep.acdc`, to index ED/ES frames) and by
``medseg evaluate --acdc`` (to find each patient's ED and ES frames). Imports only the standard
library and :mod:`medseg.errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.errors import InputError

__all__ = ["parse_info_cfg"]

_INT_KEYS = ("ED", "ES", "NbFrame")
_FLOAT_KEYS = ("Height", "Weight")


def parse_info_cfg(path: str | Path) -> dict[str, Any]:
    """Parse a headerless ``Info.cfg``: ``{"ED": int, "ES": int, "Group": str, "Height": float,
    "NbFrame": int, "Weight": float}`` (ED/ES/NbFrame required; the others may be missing -> None).

    ED and ES are 1-based frame numbers, Height is in cm, Weight in kg. Lines are ``Key: value``
    (``Key = value`` too); blank lines, ``#`` comments and an INI ``[section]`` line are ignored.
    Raises InputError ``bad_info_cfg`` naming the key (``not_found`` / ``permission`` when the
    file cannot be read).
    """
    p = Path(path)
    where = str(p)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputError("not_found", "Info.cfg not found", path=where) from None
    except OSError as e:
        raise InputError("permission", f"cannot read Info.cfg ({e.strerror})", path=where) from e
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            key, sep, value = line.partition("=")
        if not sep:
            raise InputError(
                "bad_info_cfg", f"Info.cfg line {line!r} is not 'Key: value'", path=where
            )
        values[key.strip()] = value.strip()
    out: dict[str, Any] = {}
    for key in _INT_KEYS:
        if key not in values:
            raise InputError("bad_info_cfg", f"Info.cfg has no {key!r}", path=where)
        out[key] = _number(values[key], key, where, int)
    for key in _FLOAT_KEYS:
        out[key] = _number(values[key], key, where, float) if key in values else None
    out["Group"] = values.get("Group")
    for key in ("ED", "ES"):
        if not 1 <= out[key] <= max(out["NbFrame"], 1):
            raise InputError(
                "bad_info_cfg",
                f"Info.cfg {key}={out[key]} is outside frames 1..{out['NbFrame']}",
                path=where,
            )
    return out


def _number(text: str, key: str, where: str, kind: type) -> Any:
    try:
        value = float(text)
    except ValueError:
        raise InputError(
            "bad_info_cfg", f"Info.cfg {key}={text!r} is not a number", path=where
        ) from None
    if kind is int:
        if value != int(value):
            raise InputError(
                "bad_info_cfg", f"Info.cfg {key}={text!r} is not a whole number", path=where
            )
        return int(value)
    return value
