"""Certificate serial numbers as the product writes and compares them: upper-case hex, no separators, no
leading zeros (the form in the certificates and revocations tables, the twin tags, reported properties and
audit rows). Pure.
"""

from __future__ import annotations

MAX_HEX_DIGITS = 40  # RFC 5280: serials are at most 20 octets


def serial_hex(number: int) -> str:
    return format(number, "X")


def parse_serial(value: object) -> int | None:
    """The serial as a number from hex text (colons and spaces allowed, as tools print it); None if not one."""
    if not isinstance(value, str):
        return None
    text = value.replace(":", "").replace(" ", "").strip()
    if not 1 <= len(text) <= MAX_HEX_DIGITS:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def normalise_serial(value: object) -> str | None:
    """The canonical hex form of a serial written any way; None when it is not a serial."""
    number = parse_serial(value)
    return None if number is None else serial_hex(number)


def serial_int(text: str) -> int:
    """The number of a serial read from our own records; ValueError when it is not one (never a silent 0)."""
    number = parse_serial(text)
    if number is None:
        raise ValueError(f"not a certificate serial number: {str(text)[:50]!r}")
    return number
