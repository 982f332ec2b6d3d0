"""Text that came from the sandbox, made safe to print on a terminal (both sides use it).

A name, host or message the sandbox chose can carry terminal escapes: a forged closing line, a
window title, a clipboard write (OSC 52). Every such value qsandbox prints in its own lines goes
through `shown()`: characters that are not printable (C0 and C1 controls, DEL, Unicode format
characters such as bidirectional overrides, line and paragraph separators) are shown as escapes
(`\\x1b`, `\\u202e`), never sent.
"""

from __future__ import annotations


def shown(value: str) -> str:
    """`value` with every non-printable character written as a Python-style escape."""
    if value.isprintable():
        return value
    out = []
    for ch in value:
        if ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)
