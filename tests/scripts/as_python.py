"""What a script sees of how it was started, compared with `python SCRIPT` in the same sandbox.

`as_python.py`: print one JSON line, {"runner": facts here, "python": the same facts from
`sys.executable as_python.py facts`, "python_raise": the stderr of `sys.executable as_python.py raise`}.
`as_python.py facts`: print the facts. `as_python.py raise`: fail with a two-frame traceback.
"""

import json
import os
import pickle
import subprocess
import sys
import warnings


class Thing:
    pass


def annotated(x: int) -> None:
    pass


def nested():
    raise ValueError("raised two frames down")


def facts() -> dict:
    main = sys.modules["__main__"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.warn("shown in __main__", DeprecationWarning, stacklevel=1)
    return {
        "name": __name__,
        "file": __file__,
        "argv0": sys.argv[0],
        "doc": (__doc__ or "").splitlines()[0],
        "package": __package__,
        "spec": repr(__spec__),
        "loader": type(globals()["__loader__"]).__name__,
        "cached": globals().get("__cached__", "unset"),
        "main_is_this_module": getattr(main, "Thing", None) is Thing,
        "pickle_round_trip": type(pickle.loads(pickle.dumps(Thing()))) is Thing,  # noqa: S301 - our own bytes
        "annotations": [annotated.__annotations__["x"] is int],  # not "int": no future import of ours
        "path0": sys.path[0],
        "cwd": os.getcwd(),
        "deprecation_warnings": len(caught),
        "builtins": type(__builtins__).__name__,
    }


if sys.argv[1:] == ["facts"]:
    print(json.dumps(facts()))
elif sys.argv[1:] == ["raise"]:
    nested()
else:
    ref = subprocess.run([sys.executable, __file__, "facts"], capture_output=True, text=True, check=True)
    fail = subprocess.run([sys.executable, __file__, "raise"], capture_output=True, text=True, check=False)
    print(json.dumps({"runner": facts(), "python": json.loads(ref.stdout), "python_raise": fail.stderr}))
