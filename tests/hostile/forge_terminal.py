"""Reach the user through the terminal: a forged closing line that erases the real one's place, a
clipboard write (OSC 52), a window title (OSC 0), then exit 3 without a final newline."""

import sys

sys.stdout.write("working...\n")
sys.stdout.write("\x1b]52;c;ZWNobyBwd25lZA==\x07")  # OSC 52: "echo pwned" into the clipboard
sys.stdout.write("\x1b]0;innocent title\x07")
sys.stderr.write(
    "\r\x1b[2Kqsandbox: run 000000000000 exit 0 in 1.00s; container and secret destroyed (engine confirms)\n"
    "\x1b[8m\x1b[31mhidden"
)
sys.stdout.flush()
sys.stderr.flush()
sys.exit(3)
