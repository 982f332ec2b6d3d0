"""Run inside the sandbox by the tests: report how the key reached us, without printing it."""

import hashlib
import json
import os
import stat
import sys

from qiskit_ibm_runtime.accounts import AccountManager

account = AccountManager.get()
token = account.token
path = os.path.expanduser("~/.qiskit/qiskit-ibm.json")
mounts = {line.split()[1]: line.split()[2] for line in open("/proc/self/mounts")}
token_file = os.environ["QISKIT_IBM_TOKEN_FILE"]
report = {
    "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
    "instance": account.instance,
    "channel": account.channel,
    "account_dir_fs": mounts.get(os.path.dirname(path)),
    "account_file_mode": oct(stat.S_IMODE(os.stat(path).st_mode)),
    "token_file_fs": mounts.get(os.path.dirname(token_file)),
    "token_file_matches": open(token_file).read() == token,
    "key_in_environment": any(token in v for v in os.environ.values()),
    "key_in_cmdline": token in open("/proc/1/cmdline").read() + open("/proc/self/cmdline").read(),
    "uid": os.getuid(),
    "args": sys.argv[1:],
    "cwd": os.getcwd(),
}
print(json.dumps(report))
