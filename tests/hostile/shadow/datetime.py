"""Named like the module the entry point imports when it cancels jobs on an abort (inside/cancel.py).
Whoever imports it says so on stderr, with its pid (1: the entry point), and gets an ImportError."""

import os

os.write(2, b"shadow datetime.py imported by pid %d\n" % os.getpid())
raise ImportError("the shadow datetime.py from /work")
