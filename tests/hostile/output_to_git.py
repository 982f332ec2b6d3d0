"""Plant a git hook and a shell start-up file through /output."""

import os

os.makedirs("/output/.git/hooks")
with open("/output/.git/hooks/pre-commit", "w") as f:
    f.write("#!/bin/sh\ntouch /tmp/qsandbox-hook-ran\n")
os.chmod("/output/.git/hooks/pre-commit", 0o755)
with open("/output/.bashrc", "w") as f:
    f.write("echo pwned\n")
with open("/output/README.md", "w") as f:
    f.write("overwritten\n")
with open("/output/result.txt", "w") as f:
    f.write("ok\n")
print("planted")
