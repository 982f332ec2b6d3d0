"""A fake container engine for unit tests of `Run` and `Batch`, in the style of docker-py's own
tests/unit/fake_api.py and fake_api_client.py: a real `docker.DockerClient` whose `APIClient` is real
too, except that its transport (requests.Session.request) is answered here. So the SDK's own code
runs (create arguments, models, attach_socket's raw socket, the wait endpoint read as a stream,
errors from HTTP status codes) and qsandbox's calls reach the engine as HTTP requests, whatever
helper function makes them.

Behind each started container's attach socket (a socketpair) a fake entry point runs in a thread.
It speaks qsandbox's real stream protocol: it reads mux frames from the launcher (the start message,
the INPUTS channel to its EOF, then control messages), and writes mux frames inside the engine's
8-byte attach framing on stdout (the entry point's own notes on stderr). What it does after the
hand-off is a `Behaviour` (print, send /output, exit with a code, hang until an abort or EOF,
ignore aborts); the key broker's helper containers (`run -m qsandbox.inside.broker OP ...`) answer
with `FakeEngine.broker`'s scripted JSON. When the entry point exits, the container is auto-removed
and the wait endpoint (condition=removed) answers with its exit code.

What a test reads back: `events` (one line per thing that happened, in order: "create NAME",
"inspect NAME", "wait NAME", "attach NAME", "start NAME", "key NAME", "inputs NAME", "abort NAME
REASON", "exit NAME CODE", "removed NAME", "gone NAME", "destroy NAME", "list containers", ...), and
per container what its entry point received (`Seen`). `lose()` / `come_back()` make the engine go
away mid-run (every request fails to connect, every stream breaks) and return.

Not faked: the hardening itself (inspect echoes what was asked for, or what `alter_inspect` makes of
it), the relay's channels (the entry point opens none), Podman's dialect, TLS and ssh transports,
the silence dead-man switch (a fake entry point waits for EOF instead), images being built.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import struct
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import docker
import requests
import requests.exceptions

from qsandbox import __version__
from qsandbox.common import handoff, mux

FAKE_API_VERSION = "1.45"
IMAGE_ID = "sha256:" + "f" * 64
ABORT_EXIT = {"interrupt": 130, "terminate": 143, "hangup": 129, "timeout": 124}  # inside/entry.py's
STREAM_WAIT = 60.0  # a fake stream that waits longer than this is a test's bug: it fails, never hangs


@dataclass
class Behaviour:
    """What the fake entry point does once the key and the inputs are in."""

    prints: list[tuple[int, bytes]] = field(default_factory=list)  # (mux.STDOUT or mux.STDERR, bytes)
    output: dict[str, bytes] | None = None  # /output's files, sent (as the real one) if the start asked
    exit_code: int = 0
    seconds: float = 0.0  # how long the script runs after printing (at most, with `until`)
    until: Callable[[], bool] | None = None  # with `seconds`: it ends as soon as this is true...
    at_least: float = 0.0  # ... and it has run this long
    hang: bool = False  # run until an abort (or EOF)
    honour_abort: bool = True  # False: an abort message is ignored (the launcher must force it)
    close_stream: bool = False  # close the stream after printing, then exit
    notes: list[bytes] = field(default_factory=list)  # the entry point's own stderr lines


@dataclass
class Seen:
    """What one container's entry point received from the launcher."""

    start: handoff.Start | None = None
    inputs: bytes = b""
    inputs_done: bool = False
    controls: list[object] = field(default_factory=list)  # after the hand-off: Alive, Abort, AccessToken
    eof: bool = False  # the launcher closed the stream

    @property
    def aborts(self) -> list[str]:
        return [m.reason for m in self.controls if isinstance(m, handoff.Abort)]

    @property
    def heartbeats(self) -> int:
        return sum(isinstance(m, handoff.Alive) for m in self.controls)

    def input_names(self) -> list[str]:
        with tarfile.open(fileobj=io.BytesIO(self.inputs), mode="r|") as tar:
            return [m.name for m in tar]


class _Gone(Exception):
    """The engine went away (lose()): the request fails as a broken connection."""


@dataclass
class FakeContainer:
    id: str
    name: str  # the name given, or broker:OP for the key broker's helpers, else helper-N
    body: dict[str, Any]  # the create request's JSON body
    state: str = "created"  # created, running, exited
    exit_code: int | None = None
    launcher_end: socket.socket | None = None
    inside_end: socket.socket | None = None
    removed: threading.Event = field(default_factory=threading.Event)
    seen: Seen = field(default_factory=Seen)
    entry: threading.Thread | None = None
    aborted: threading.Event = field(default_factory=threading.Event)
    abort_reason: str | None = None

    @property
    def cmd(self) -> list[str]:
        return list(self.body.get("Cmd") or [])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.body.get("Labels") or {})


class _WaitBody:
    """The wait endpoint's body (condition=removed): blocks until the container is gone."""

    def __init__(self, engine: FakeEngine, container: FakeContainer) -> None:
        self.engine, self.container, self._sent = engine, container, False

    def read(self, n: int = -1, **_: Any) -> bytes:
        if self._sent:
            return b""
        end = time.monotonic() + STREAM_WAIT
        while not self.container.removed.wait(0.05):
            if self.engine.is_lost:
                raise requests.exceptions.ChunkedEncodingError("the engine closed the connection")
            if time.monotonic() > end:
                raise AssertionError(f"fake engine: {self.container.name} was never removed")
        if self.engine.lost_with(self.container):
            raise requests.exceptions.ChunkedEncodingError("the engine closed the connection")
        self._sent = True
        return json.dumps({"StatusCode": self.container.exit_code or 0, "Error": None}).encode()


def _response(status: int, body: object = None, *, url: str = "", raw: Any = None) -> requests.Response:
    res = requests.Response()
    res.status_code = status
    res.url = url
    res.reason = {200: "OK", 201: "Created", 204: "No Content", 404: "Not Found", 409: "Conflict"}.get(status, "")
    res.headers = requests.structures.CaseInsensitiveDict({"Content-Type": "application/json"})
    res.encoding = "utf-8"
    if raw is not None:
        res.raw = raw
    else:
        res._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return res


def _missing(url: str, what: str) -> requests.Response:
    return _response(404, {"message": f"No such {what}"}, url=url)


def _matches(labels: dict[str, str], filters: dict[str, list[str]]) -> bool:
    for wanted in filters.get("label", []):
        key, eq, value = wanted.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


class _FakeAPIClient(docker.APIClient):
    """docker-py's APIClient with its transport answered by a FakeEngine (never a socket)."""

    engine: FakeEngine

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        return self.engine.answer(str(method), str(url), kwargs)


class FakeEngine:
    """The engine's state, its answers, and what happened, in order."""

    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.networks: dict[str, dict[str, Any]] = {}
        self.events: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.behaviours: dict[str, Behaviour] = {}  # by the script's file name (a.py), else `default`
        self.default = Behaviour()
        # The key broker: OP -> its JSON answer; `broker_calls` what it was asked: (op, keep ids, key).
        self.broker: dict[str, dict[str, Any]] = {
            "keys": {"ok": True, "keys": [{"id": "ApiKey-before-1"}, {"id": "ApiKey-before-2"}]},
            "revoke": {"ok": True, "id": "ApiKey-the-key", "made": [], "failed": []},
            "token": {"ok": True, "access_token": "fake.access.token", "expiration": int(time.time()) + 3600},
        }
        self.broker_calls: list[tuple[str, list[str], str]] = []
        # Hooks, by event ("create", "inspect", "attach", "start", "key", "inputs"), called with the
        # container before the engine acts (HTTP events: in the requesting thread).
        self.hooks: dict[str, Callable[[FakeContainer], None]] = {}
        self.alter_inspect: Callable[[FakeContainer, dict[str, Any]], None] | None = None
        self.leftover: list[dict[str, Any]] = []  # listed as this run's containers though gone (a leak)
        self.most_alive = 0  # most containers at once (created, not yet removed), helpers left out
        self.most_keyed = 0  # most sandboxes at once that hold the key (start received, not exited)
        self._keyed: set[str] = set()
        self._lock = threading.RLock()
        self._count = 0
        self._lost = threading.Event()
        self._lost_with: set[str] = set()
        self._all: list[FakeContainer] = []  # every container ever created, in order

    # -- what a test uses -----------------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        """A real DockerClient on a real APIClient, whose requests this engine answers."""
        client = docker.DockerClient(base_url="unix:///fake-engine.sock", version=FAKE_API_VERSION)
        api = _FakeAPIClient(base_url="unix:///fake-engine.sock", version="1.24")  # connect() negotiates
        api.engine = self
        client.api = api
        return client

    def say(self, event: str) -> None:
        with self._lock:
            self.events.append(event)

    def named(self, prefix: str) -> list[str]:
        """The events about containers whose name starts with `prefix`, without the name."""
        out = []
        for e in self.events:
            verb, _, rest = e.partition(" ")
            name, _, more = rest.partition(" ")
            if name.startswith(prefix):
                out.append(f"{verb} {more}".strip())
        return out

    def sandbox(self, script: str | None = None) -> FakeContainer:
        """The (one, or `script`'s) run sandbox this engine saw, gone or not."""
        found = [
            c for c in self._all if c.name.startswith("qsandbox-") and (script is None or self._script(c) == script)
        ]
        assert len(found) == 1, (
            f"expected one sandbox{f' for {script}' if script else ''}, saw {[c.name for c in found]}"
        )
        return found[0]

    def sandboxes(self) -> list[FakeContainer]:
        return [c for c in self._all if c.name.startswith("qsandbox-")]

    @property
    def is_lost(self) -> bool:
        return self._lost.is_set()

    def lost_with(self, c: FakeContainer) -> bool:
        return c.id in self._lost_with

    def lose(self) -> None:
        """The engine goes away (dockerd killed): requests fail, streams break, containers die."""
        with self._lock:
            self._lost.set()
            self.say("engine lost")
            for c in list(self.containers.values()):
                self._lost_with.add(c.id)
                self._kill(c, 137)

    def come_back(self) -> None:
        self.say("engine back")
        self._lost.clear()

    # -- the HTTP side --------------------------------------------------------------------------

    def answer(self, method: str, url: str, kwargs: dict[str, Any]) -> requests.Response:
        if self._lost.is_set():
            raise requests.exceptions.ConnectionError(f"fake engine is gone: {method} {url}")
        path = unquote(urlsplit(url).path)
        parts = path.strip("/").split("/")
        if parts and parts[0].startswith("v1."):
            parts = parts[1:]
        route = "/" + "/".join(parts)
        with self._lock:
            self.requests.append((method, route))
        params = dict(kwargs.get("params") or {})
        body = kwargs.get("data")
        if isinstance(body, str | bytes) and body:
            body = json.loads(body)
        return self._route(method, parts, params, body, url)

    def _route(self, method: str, parts: list[str], params: dict[str, Any], body: Any, url: str) -> requests.Response:
        head = parts[0] if parts else ""
        if head == "_ping":
            return _response(200, b"OK", url=url)
        if head == "version":
            return _response(200, self._version(), url=url)
        if head == "info":
            return _response(200, self._info(), url=url)
        if head == "images":
            return self._images(method, parts, url)
        if head == "containers":
            return self._containers(method, parts, params, body, url)
        if head == "networks":
            return self._networks(method, parts, params, body, url)
        raise AssertionError(f"fake engine: no answer for {method} /{'/'.join(parts)}")

    @staticmethod
    def _version() -> dict[str, Any]:
        return {
            "ApiVersion": FAKE_API_VERSION,
            "Version": "27.0.0-fake",
            "MinAPIVersion": "1.24",
            "Components": [{"Name": "Engine", "Version": "27.0.0-fake"}],
            "Os": "linux",
        }

    @staticmethod
    def _info() -> dict[str, Any]:
        return {
            "SecurityOptions": ["name=seccomp,profile=builtin", "name=cgroupns"],
            "LoggingDriver": "json-file",
            "Debug": False,
            "CgroupVersion": "2",
            "NCPU": 2,
            "OperatingSystem": "Fake Linux",
            "DockerRootDir": "/var/lib/docker",
        }

    def _images(self, method: str, parts: list[str], url: str) -> requests.Response:
        from qsandbox.launcher.core.settings import IMAGE, VERSION_LABEL
        from qsandbox.launcher.engine import image as image_mod

        attrs = {
            "Id": IMAGE_ID,
            "RepoTags": [IMAGE],
            "Size": 1_500_000_000,
            "Config": {"Labels": {VERSION_LABEL: __version__, image_mod.CONTEXT_LABEL: image_mod.context_digest()}},
        }
        if parts[1:] == ["json"]:
            return _response(200, [attrs], url=url)
        if parts[-1] == "json" and "/".join(parts[1:-1]) == IMAGE:
            return _response(200, attrs, url=url)
        return _missing(url, f"image: {'/'.join(parts[1:-1])}")

    def _containers(
        self, method: str, parts: list[str], params: dict[str, Any], body: Any, url: str
    ) -> requests.Response:
        if parts[1:] == ["json"]:
            return self._list_containers(params, url)
        if parts[1:] == ["create"]:
            return self._create(params.get("name"), body, url)
        with self._lock:
            c = self.containers.get(parts[1]) or next((c for c in self.containers.values() if c.name == parts[1]), None)
        action = parts[2] if len(parts) > 2 else ""
        if c is None:
            gone = next((c for c in self._all if c.id == parts[1]), None)
            if gone is not None:  # asked about after its removal: the launcher confirming it is gone
                self.say(f"{ {'json': 'gone', '': 'destroy-missing'}.get(action, action + '-missing') } {gone.name}")
            return _missing(url, f"container: {parts[1]}")
        if method == "DELETE":
            self.say(f"destroy {c.name}")
            self._kill(c, 137)
            return _response(204, b"", url=url)
        if action == "json":
            self._hook("inspect", c)
            self.say(f"inspect {c.name}")
            return _response(200, self._inspect(c), url=url)
        if action == "wait":
            self.say(f"wait {c.name}")
            return _response(200, url=url, raw=_WaitBody(self, c))
        if action == "attach":
            self._hook("attach", c)
            self.say(f"attach {c.name}")
            return self._attach(c, url)
        if action == "start":
            self._hook("start", c)
            self.say(f"start {c.name}")
            self._start(c)
            return _response(204, b"", url=url)
        raise AssertionError(f"fake engine: no answer for {method} /{'/'.join(parts)}")

    def _create(self, name: str | None, body: dict[str, Any], url: str) -> requests.Response:
        with self._lock:
            self._count += 1
            cid = f"{self._count:04d}" + "c" * 60
            if name is None:
                cmd = body.get("Cmd") or []
                name = f"broker:{cmd[3]}" if cmd[1:3] == ["-m", "qsandbox.inside.broker"] else f"helper-{self._count}"
            c = FakeContainer(cid, name, body)
            self._all.append(c)
            self.containers[cid] = c
            if name.startswith("qsandbox-"):
                self.most_alive = max(
                    self.most_alive, sum(x.name.startswith("qsandbox-") for x in self.containers.values())
                )
        self._hook("create", c)
        self.say(f"create {c.name}")
        return _response(201, {"Id": cid, "Warnings": []}, url=url)

    def _inspect(self, c: FakeContainer) -> dict[str, Any]:
        """What the engine reports: what was asked for, in inspect's shape (alter_inspect: otherwise)."""
        config = {k: v for k, v in c.body.items() if k not in ("HostConfig", "NetworkingConfig")}
        host = json.loads(json.dumps(c.body.get("HostConfig") or {}))
        mode = host.get("NetworkMode") or "bridge"
        attrs: dict[str, Any] = {
            "Id": c.id,
            "Name": "/" + c.name,
            "Image": IMAGE_ID,
            "Config": config,
            "HostConfig": host,
            "Mounts": [],
            "NetworkSettings": {"Networks": {} if mode == "none" else {mode: {}}},
            "State": {"Status": c.state, "Running": c.state == "running", "ExitCode": c.exit_code or 0},
        }
        if self.alter_inspect is not None:
            self.alter_inspect(c, attrs)
        return attrs

    def _list_containers(self, params: dict[str, Any], url: str) -> requests.Response:
        filters = json.loads(params.get("filters") or "{}")
        self.say("list containers")
        with self._lock:
            found = [
                {"Id": c.id, "Names": ["/" + c.name], "Labels": c.labels, "State": c.state}
                for c in self.containers.values()
                if _matches(c.labels, filters)
            ]
        found += [c for c in self.leftover if _matches(c.get("Labels") or {}, filters)]
        return _response(200, found, url=url)

    def _networks(
        self, method: str, parts: list[str], params: dict[str, Any], body: Any, url: str
    ) -> requests.Response:
        if method == "GET" and len(parts) == 1:
            filters = json.loads(params.get("filters") or "{}")
            self.say("list networks")
            with self._lock:
                found = [n for n in self.networks.values() if _matches(n.get("Labels") or {}, filters)]
            return _response(200, found, url=url)
        if parts[1:] == ["create"]:
            with self._lock:
                nid = f"net{len(self.networks):04d}" + "n" * 57
                self.networks[nid] = {
                    "Id": nid,
                    "Name": body["Name"],
                    "Labels": body.get("Labels") or {},
                    "Containers": {},
                }
            self.say(f"network create {body['Name']}")
            return _response(201, {"Id": nid, "Warning": ""}, url=url)
        with self._lock:
            net = self.networks.get(parts[1]) or next(
                (n for n in self.networks.values() if n["Name"] == parts[1]), None
            )
        if net is None:
            return _missing(url, f"network: {parts[1]}")
        if method == "DELETE":
            with self._lock:
                self.networks.pop(net["Id"], None)
            self.say(f"network remove {net['Name']}")
            return _response(204, b"", url=url)
        if parts[2:] == ["connect"]:
            net["Containers"][body["Container"]] = {}
            self.say(f"network connect {net['Name']}")
            return _response(200, b"", url=url)
        if parts[2:] == ["disconnect"]:
            net["Containers"].pop(body["Container"], None)
            return _response(200, b"", url=url)
        return _response(200, net, url=url)

    # -- the container's side -------------------------------------------------------------------

    def _hook(self, event: str, c: FakeContainer) -> None:
        hook = self.hooks.get(event)
        if hook is not None:
            hook(c)

    def _attach(self, c: FakeContainer, url: str) -> requests.Response:
        launcher_end, inside_end = socket.socketpair()
        c.launcher_end, c.inside_end = launcher_end, inside_end
        # As over a unix socket: docker-py finds the socket at response.raw._fp.fp.raw, the SocketIO
        # that makefile() gives (sandbox.attach then unwraps its _sock).
        sock_io = launcher_end.makefile("rb", buffering=0)

        class _Fp:
            fp = type("fp", (), {"raw": sock_io})()

        class _Raw:
            _fp = _Fp()

        return _response(200, url=url, raw=_Raw())

    def _start(self, c: FakeContainer) -> None:
        if c.inside_end is None:  # not attached: nothing could reach it (qsandbox always attaches)
            raise AssertionError(f"fake engine: {c.name} started without an attach stream")
        c.state = "running"
        c.entry = threading.Thread(target=self._entry_point, args=(c,), daemon=True, name=f"fake-entry-{c.name}")
        c.entry.start()

    def _kill(self, c: FakeContainer, code: int) -> None:
        """The container's processes end (killed, or the engine died): its stream closes, it is removed."""
        if c.inside_end is not None:
            with suppress(OSError):
                c.inside_end.shutdown(socket.SHUT_RDWR)
        self._exited(c, code)

    def _exited(self, c: FakeContainer, code: int) -> None:
        with self._lock:
            if c.state == "exited" or c.id not in self.containers:
                return
            was_running = c.state == "running"
            c.state, c.exit_code = "exited", code
            self._keyed.discard(c.id)
            if was_running:
                self.events.append(f"exit {c.name} {code}")
            # auto_remove: the daemon removes it as soon as it stops (and a forced removal does too)
            del self.containers[c.id]
            self.events.append(f"removed {c.name}")
        if c.inside_end is not None:
            # shutdown first: close() alone leaves the socket open while the stdin thread is in recv()
            for end in (lambda: c.inside_end.shutdown(socket.SHUT_RDWR), c.inside_end.close):  # type: ignore[union-attr]
                with suppress(OSError):
                    end()
        c.removed.set()

    def _entry_point(self, c: FakeContainer) -> None:  # noqa: C901 - the fake entry point: one frame loop, as the real one
        sock = c.inside_end
        assert sock is not None  # attached before start
        decoder = mux.Decoder()
        pending: list[mux.Frame] = []

        def next_frame() -> mux.Frame | None:
            while not pending:
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    return None
                pending.extend(decoder.feed(data))
            return pending.pop(0)

        def send(channel: int, payload: bytes, *, kind: mux.Type = mux.Type.DATA, stream: int = 1) -> None:
            data = mux.frame(kind, channel, payload) if stream == 1 else payload
            sock.sendall(struct.pack(">BxxxL", stream, len(data)) + data)

        try:
            first = next_frame()
            if first is None or first.type != mux.Type.CONTROL:
                with suppress(OSError):  # the launcher is gone: nobody reads the note
                    send(0, b"the launcher went away before the hand-off; nothing was run\n", stream=2)
                self._exited(c, 125)
                return
            start = handoff.decode(first.payload)
            if not isinstance(start, handoff.Start):  # an abort (or anything) before the key: recorded
                c.seen.controls.append(start)
                self.say(f"refused {c.name}")
                with suppress(OSError):
                    send(0, b"expected a start message\n", stream=2)
                self._exited(c, 125)
                return
            c.seen.start = start
            with self._lock:
                self._keyed.add(c.id)
                if c.name.startswith("qsandbox-"):
                    self.most_keyed = max(
                        self.most_keyed,
                        sum(
                            self.containers[k].name.startswith("qsandbox-") for k in self._keyed if k in self.containers
                        ),
                    )
            self.say(f"key {c.name}")
            self._hook("key", c)
            while True:
                f = next_frame()
                if f is None:
                    self._exited(c, 125)
                    return
                if f.channel == mux.INPUTS and f.type == mux.Type.DATA:
                    c.seen.inputs += f.payload
                elif f.channel == mux.INPUTS and f.type == mux.Type.EOF:
                    c.seen.inputs_done = True
                    break
            self.say(f"inputs {c.name}")
            self._hook("inputs", c)
            eof = threading.Event()

            def listen() -> None:
                while (f := next_frame()) is not None:
                    if f.type != mux.Type.CONTROL:
                        continue
                    msg = handoff.decode(f.payload)
                    c.seen.controls.append(msg)
                    if isinstance(msg, handoff.Abort):
                        self.say(f"abort {c.name} {msg.reason}")
                        if c.abort_reason is None:
                            c.abort_reason = msg.reason
                        c.aborted.set()
                c.seen.eof = True
                eof.set()
                c.aborted.set()  # wakes the script's wait

            threading.Thread(target=listen, daemon=True, name=f"fake-stdin-{c.name}").start()
            if c.name.startswith("broker:"):
                code = self._broker_answers(c, start, send)
            else:
                code = self._play(c, start, send, eof)
            self._exited(c, code)
        except OSError:  # the stream was cut (removed, engine lost)
            self._exited(c, 137)

    def _broker_answers(self, c: FakeContainer, start: handoff.Start, send: Callable[..., None]) -> int:
        op, keep = c.cmd[3], c.cmd[4:]
        self.broker_calls.append((op, keep, start.token))
        send(mux.STDOUT, json.dumps(self.broker[op]).encode() + b"\n")
        send(mux.STDOUT, b"", kind=mux.Type.EOF)
        return 0

    def _play(self, c: FakeContainer, start: handoff.Start, send: Callable[..., None], eof: threading.Event) -> int:
        b = self.behaviours.get(self._script(c), self.default)
        for note in b.notes:
            send(0, note, stream=2)
        for channel, data in b.prints:
            send(channel, data)
        if b.close_stream:
            c.inside_end.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            return b.exit_code
        code = b.exit_code
        if b.hang or b.seconds:
            began = time.monotonic()
            end = began + (STREAM_WAIT if b.hang else b.seconds)
            while time.monotonic() < end:
                if b.until is not None and b.until() and time.monotonic() >= began + b.at_least:
                    break
                c.aborted.wait(max(0.0, min(0.02 if b.until else 1e9, end - time.monotonic())))
                if eof.is_set():
                    return 137  # the dead-man switch: the launcher is gone, nothing more is sent
                if c.abort_reason is not None and b.honour_abort:
                    code = ABORT_EXIT[c.abort_reason]
                    break
                if c.aborted.is_set() and not b.honour_abort:
                    c.aborted.clear()
        if eof.is_set():
            return 137
        for channel in (mux.STDOUT, mux.STDERR):
            send(channel, b"", kind=mux.Type.EOF)
        if start.output and b.output is not None:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w|") as tar:
                for name, data in b.output.items():
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
            for chunk in mux.data_frames(mux.OUTPUT, buf.getvalue()):
                sock = c.inside_end
                assert sock is not None
                sock.sendall(struct.pack(">BxxxL", 1, len(chunk)) + chunk)
            send(mux.OUTPUT, b"", kind=mux.Type.EOF)
        return code

    @staticmethod
    def _script(c: FakeContainer) -> str:
        cmd = c.cmd
        return cmd[1].rsplit("/", 1)[-1] if len(cmd) > 1 else ""


@contextmanager
def engine_for(monkeypatch: Any) -> Iterator[FakeEngine]:
    """A FakeEngine that `docker.from_env` (so `engine.connect`) returns a client of."""
    fake = FakeEngine()
    monkeypatch.setattr(docker, "from_env", lambda *a, **k: fake.client())
    yield fake


def raise_signal_in_main(sig: signal.Signals) -> Callable[[FakeContainer], None]:
    """A hook that delivers `sig` to this process (the main thread runs its handler)."""

    def hook(_: FakeContainer) -> None:
        signal.raise_signal(sig)

    return hook
