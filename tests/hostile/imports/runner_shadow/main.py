"""/work holds a `qsandbox` package beside this script, which never imports it. The control: a
fresh interpreter started in /work (python's rule: the working directory first) does find it."""

import os
import subprocess
import sys

print("script ran", flush=True)
env = dict(os.environ, SHADOW_ROLE="control")
subprocess.run([sys.executable, "-c", "import qsandbox"], cwd="/work", env=env, check=False)
print("control done", flush=True)
