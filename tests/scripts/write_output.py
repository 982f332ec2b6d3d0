import pathlib

pathlib.Path("/output/result.txt").write_text("hello from the sandbox\n")
try:
    pathlib.Path("/work/not-allowed.txt").write_text("x")
    print("work dir writable")
except OSError as e:
    print("work dir read-only:", e.strerror)
