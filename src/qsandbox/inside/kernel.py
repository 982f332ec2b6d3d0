"""The notebook's kernel: ipykernel in the image's Python, with the IAM token watch installed.

Started by inside/notebook.py through jupyter_client, which passes the token pipe's descriptor
down (QSANDBOX_TOKEN_FD), so the tokens the client obtains in the kernel are masked in the output
as they are for a script.
"""

from __future__ import annotations

import os


def main() -> None:
    fd = os.environ.pop("QSANDBOX_TOKEN_FD", None)
    if fd:
        from .tokenwatch import install

        install(int(fd))
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.launch_instance()


if __name__ == "__main__":
    main()
