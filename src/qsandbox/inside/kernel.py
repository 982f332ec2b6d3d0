"""The notebook's kernel: ipykernel in the image's Python, with the IAM token watch installed.

Started by inside/notebook.py through jupyter_client, which passes the token pipe's descriptor
down (QSANDBOX_TOKEN_FD), so the tokens the client obtains in the kernel are masked in the output
as they are for a script. In a lab (inside/jupyter.py), JupyterLab starts it and closes every
inherited descriptor: the tokens go to the file named by QSANDBOX_TOKEN_LOG instead, which the
entry point reads before the work goes back.
"""

from __future__ import annotations

import os


def main() -> None:
    fd = os.environ.pop("QSANDBOX_TOKEN_FD", None)
    log = os.environ.pop("QSANDBOX_TOKEN_LOG", None)
    if log and not fd:
        fd = str(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    if fd:
        from .tokenwatch import install

        install(int(fd))
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.launch_instance()


if __name__ == "__main__":
    main()
