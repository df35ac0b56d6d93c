"""Parsing and formatting of sizes and CPU lists, shared by the fleet file, the CLI and views."""

from __future__ import annotations

import re

from backends.errors import BadInput

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_KIB_PER = {"": 1, "K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}
MAX_KIB = 2**53  # 8 EiB: past any machine, and where a float stops counting KiB exactly


def parse_size_kib(text: str | int) -> int:
    """'512M', '2G', '1.5TiB' or a number of KiB → KiB; BadInput names what was wrong."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise BadInput(f"size {text} is negative", hint="give a size such as 512M or 4G")
        if text > MAX_KIB:
            raise BadInput(f"size {text} KiB is too large", hint="sizes go up to 8 EiB")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise BadInput(f"size {text!r} is not a size", hint="write it like 512M, 4G or 1T")
    number, unit = match.groups()
    kib = float(number) * _KIB_PER[unit.upper()]
    if not kib <= MAX_KIB:  # also catches inf, from a number too long for a float
        raise BadInput(f"size {str(text).strip()[:40]!r} is too large", hint="sizes go up to 8 EiB; write it like 4G")
    return int(kib)


def format_kib(kib: int | None) -> str:
    """KiB → a short human size ('31.5G'); None → '?'."""
    if kib is None:
        return "?"
    value = float(kib)
    for unit in ("K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if value >= 100 or unit == "K" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_bytes(count: int | None) -> str:
    return "?" if count is None else format_kib(count // 1024) if count >= 1024 else f"{count}B"


def parse_cpuset(text: str, *, strict: bool = True) -> tuple[int, ...]:
    """libvirt cpuset syntax ('0-3,^2,8') → sorted CPU ids.

    Strict (typed input): ValueError on a malformed part. Lenient (XML from a host): skip it.
    """
    include: set[int] = set()
    exclude: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        target = exclude if part.startswith("^") else include
        part = part.lstrip("^").strip()
        first, _, last = part.partition("-")
        first, last = first.strip(), last.strip()
        if not first.isdigit() or (last and not last.isdigit()) or int(last or first) < int(first or 0):
            if strict:
                raise ValueError(f"bad CPU list {text!r}: {part!r}")
            continue
        target.update(range(int(first), int(last or first) + 1))
    return tuple(sorted(include - exclude))


def format_cpuset(cpus: tuple[int, ...] | list[int]) -> str:
    """CPU ids → compact ranges ('0-3,8')."""
    out: list[str] = []
    ordered = sorted(set(cpus))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)
