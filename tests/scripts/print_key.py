"""A script that prints its key in every way it can (the redaction test)."""

import base64
import os
import sys
import time
import urllib.parse

key = open(os.environ["QISKIT_IBM_TOKEN_FILE"]).read()
print("literal:", key)
print("base64:", base64.b64encode(key.encode()).decode())
print("url:", urllib.parse.quote(key, safe=""))
for c in "slow:" + key + "\n":  # one character at a time, flushed
    sys.stdout.write(c)
    sys.stdout.flush()
    time.sleep(0.001)
print("stderr:", key, file=sys.stderr)
print("done")
