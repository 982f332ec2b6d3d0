"""What every layer of the launcher shares (layer 4, the lowest): it imports no other layer.

- `settings`: a run's settings (the user's frozen intent) and the one hardening spec;
- `units`: sizes and durations as the docker CLI takes them;
- `needs`: a script's own dependencies (PEP 723, --requirements), parsed;
- `credentials`: the key's sources, and the `Secret` that never prints itself.
"""
