# The qsandbox sandbox image: a venv with the pinned Qiskit stack and qsandbox's in-container
# entry point, owned by root and run as a fixed non-root uid on a read-only root filesystem.
#
# BASE_IMAGE defaults to a public Python image. Machines without a registry build an offline base
# first (scripts/offline-base.sh) and pass it: `qsandbox build --base-image qsandbox-base:bookworm`.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

# Fixed uid/gid: the launcher mounts the secret tmpfs with this owner (uid=/gid= options).
ARG SANDBOX_UID=10001
RUN groupadd --gid ${SANDBOX_UID} sandbox \
 && useradd --uid ${SANDBOX_UID} --gid ${SANDBOX_UID} --home-dir /home/sandbox --create-home \
      --shell /usr/sbin/nologin sandbox

ENV VIRTUAL_ENV=/opt/qsandbox \
    PATH=/opt/qsandbox/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8

# Dependencies first, from pyproject.toml's extras, so editing src/ does not reinstall Qiskit.
# The stub package only lets pip resolve the project; the real one is installed below.
# (README.md is a stub here too, so editing the docs does not invalidate this layer either.)
# /build goes at the end of this layer: pip builds the project in place, and a build/lib left
# here with the stub's __init__.py (newer than the real one, which keeps the checkout's mtime)
# would be what setuptools installs below, since it copies into build/lib only newer files.
COPY pyproject.toml /build/
RUN python3 -m venv /opt/qsandbox \
 && mkdir -p /build/src/qsandbox && echo '__version__ = "0"' > /build/src/qsandbox/__init__.py \
 && touch /build/README.md \
 && /opt/qsandbox/bin/pip install --no-compile "/build[sandbox,platform]" \
 && /opt/qsandbox/bin/pip uninstall -y qsandbox \
 && rm -rf /build

# The real package: a wheel built in a /build that holds only this layer's copy of the source,
# then installed, so what is installed is exactly src/. The checkout's own egg-info (from an
# editable install) goes first: setuptools reads an existing SOURCES.txt into the file list.
COPY pyproject.toml README.md /build/
COPY src/ /build/src/
RUN rm -rf /build/src/*.egg-info \
 && /opt/qsandbox/bin/pip wheel --no-deps --wheel-dir /tmp/wheel /build \
 && /opt/qsandbox/bin/pip install --no-deps --no-compile /tmp/wheel/qsandbox-*.whl \
 && rm -rf /build /tmp/wheel \
 # Compile every .py once here: with a read-only root nothing could be cached at run time.
 && python3 -m compileall -q -j 0 /opt/qsandbox "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" >/dev/null \
 && /opt/qsandbox/bin/python -c "import qiskit_ibm_runtime, qiskit_aer, qsandbox.inside.entry"

USER ${SANDBOX_UID}:${SANDBOX_UID}
WORKDIR /home/sandbox
ENTRYPOINT ["/opt/qsandbox/bin/python", "-m", "qsandbox.inside.entry"]
