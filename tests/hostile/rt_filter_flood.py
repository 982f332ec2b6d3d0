"""Red team: output made for the terminal filter's slow path, on the launcher's terminal: every
64-byte piece holds an escape sequence, a C1 control, a split UTF-8 character or an SGR whose
parameters run past the filter's limit, so no chunk takes the plain-text path. Writes
`MEGABYTES` MiB (argument) in many small writes, then one line saying how much was written."""

import os
import sys

pieces = [
    b"\x1b[31mred\x1b[0m plain text here ",
    b"\xc2\x9b2J\xc2\x9d0;title\x07",  # 8-bit CSI and OSC in UTF-8
    b"\x1b]52;c;" + b"A" * 40 + b"\x1b\\",
    b"\x1b[" + b"1;" * 40 + b"m",
    b"\xe2\x82",  # the first two bytes of a euro sign; the next piece begins with the third
    b"\xac\x1b[8mconcealed?\x1b[0m\r\x08\x7f",
]
unit = b"".join(pieces)
unit = (unit * (4096 // len(unit) + 1))[:4096]
total = int(sys.argv[1]) << 20
written = 0
while written < total:
    written += os.write(1, unit[: 64 + written % 512])  # small writes of varying size
os.write(1, b"\x07\x1b\\" + f"\nwritten {written}\n".encode())  # BEL, ST: every state ends
