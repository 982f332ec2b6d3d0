"""The container engine (layer 3 of the launcher): nothing here knows what a run is.

- `client`: connect, describe, an engine lost and back;
- `preflight`: the host's and the engine's warnings;
- `sandbox`: a container's lifecycle (create and read back, attach, start, destroy), every
  helper's `start_service`, and what the engine still has;
- `image`: build and freshness; `offlinebase`: a base image without a registry;
  `deps`: images derived for a script's own dependencies;
- `localplatform`: the emulator and its networks.
"""
