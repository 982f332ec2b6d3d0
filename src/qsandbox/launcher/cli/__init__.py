"""The commands (layer 1 of the launcher): what the user types, checked before anything starts.

- `commands`: the click commands (run, batch, sweep, doctor, audit, images, revoke, build, config,
  platform) and the one error boundary;
- `options`: the one option set and settings builder shared by run and batch;
- `config`: defaults from the lab's and the user's config files and QSANDBOX_* variables.
"""

from .commands import main as main  # the console script's old address (qsandbox.launcher.cli:main) still works
