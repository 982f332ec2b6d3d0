"""The relay (issue 24), against the real engine: a default `--platform ibm` sandbox has network
mode `none`, and its only way out is the launcher, which lets through exactly the allowed names on
443. Every hostile case has its control in the same test: the listener it must not reach is up,
and reachable from an ordinary container (or the launcher's machine), before and after.

Listeners are the test's own, on this machine (the launcher's machine), each answering with its
own name, so a test sees exactly which one a connection reached. Where a name must not reach the
launcher's resolver, the test owns that resolver (relay_helpers.RESOLVER_OWNED_LAUNCHER) and reads
every name it was asked. Hostile scripts: tests/hostile/relay_*.py.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import IO

import pytest
from relay_helpers import (
    HOSTILE,
    Listener,
    UdpListener,
    bridge_gateway,
    closing_line,
    connect_to,
    control,
    digest_of,
    finish,
    host_address,
    listeners,
    results,
    run_containers,
    run_launcher,
    run_objects,
    stand_in,
    start_launcher,
    vm_hwm,
    wait_until,
)

from qsandbox.common import mux
from qsandbox.launcher.core.settings import LABEL
from qsandbox.launcher.run import relay as relay_mod

pytestmark = pytest.mark.docker
SHARED_ENGINE = bool(os.environ.get("QSANDBOX_TESTS_SHARED_ENGINE"))


@pytest.fixture(scope="module")
def standin(image, docker_client, tmp_path_factory):
    with stand_in(docker_client, image, tmp_path_factory.mktemp("standin"), []) as s:
        yield s


@pytest.fixture
def allowed() -> Iterator[Listener]:
    with listeners("allowed") as (listener,):
        yield listener


def allow(listener: Listener, name: str = "allowed.test") -> list[str]:
    """--allow-host NAME, sent to `listener` on this machine (--connect-to) by 127.0.0.2: the
    tests' resolver may send 127.0.0.1 elsewhere."""
    return ["--allow-host", name, *connect_to(name, "127.0.0.2", listener.port)]


class Lines:
    """A launcher's stdout, read live into a list, and its stderr, each by a thread of its own."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.err: list[str] = []
        self.proc = proc
        self.threads = [
            threading.Thread(target=self._read, args=(proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self.err), daemon=True),
        ]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(pipe: IO[str], into: list[str]) -> None:
        for line in pipe:
            into.append(line.rstrip("\n"))

    def wait(self, timeout: float = 600) -> tuple[int, str]:
        """The launcher's exit code and its stderr, once it and both pipes ended."""
        code = self.proc.wait(timeout)
        for t in self.threads:
            t.join(60)
        return code, "\n".join(self.err)

    def has(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def count(self, prefix: str) -> int:
        return sum(line.startswith(prefix) for line in list(self.lines))

    def text(self) -> str:
        return "\n".join(self.lines)


# -- the sandbox's own network ---------------------------------------------------------------------


def test_a_default_run_has_network_mode_none_and_no_network_object(
    docker_client, image, canary, tmp_path, popen, allowed
):
    """Done-when of issue 24: the run's only container has NetworkMode `none` and no network of the
    run exists while it runs; the control: the script, meanwhile, reaches an allowed listener
    through the relay (held open until the checks are made)."""
    marker = secrets.token_hex(8)
    script = tmp_path / "hold.py"
    script.write_text(
        "import os, socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', 3128))\n"
        "s.sendall(b'CONNECT allowed.test:443 HTTP/1.1\\r\\n\\r\\n')\n"
        "print(s.recv(100).split(b'\\r\\n')[0].decode(), flush=True)\n"
        "s.sendall(b'hold net\\n')\n"
        "print(s.recv(100).decode().strip(), flush=True)\n"
    )
    networks_before = {n["Id"] for n in docker_client.api.networks(filters={"label": LABEL})}
    proc = start_launcher(popen, canary, *allow(allowed), str(script), marker)
    wait_until(lambda: allowed.count("hold net") == 1, 120, "the script's channel reached the listener")
    (attrs,) = run_containers(docker_client, marker)
    run_id = attrs["Config"]["Labels"][LABEL]
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    assert list(attrs["NetworkSettings"]["Networks"]) == ["none"]
    assert [o for o in run_objects(docker_client, run_id) if not o.startswith("container")] == []
    assert len(run_objects(docker_client, run_id)) == 1  # its only container
    new = [
        n["Name"]
        for n in docker_client.api.networks(filters={"label": LABEL})
        if n["Id"] not in networks_before
        and (n.get("Labels") or {}).get("qsandbox.version") == attrs["Config"]["Labels"].get("qsandbox.version")
    ]
    if not SHARED_ENGINE:  # another engineer's run on a shared engine may make networks of its own
        assert new == [], new
    allowed.release()
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.splitlines() == ["HTTP/1.1 200 Connection established", "released net"]
    assert run_objects(docker_client, run_id) == []


def test_no_raw_route_out_while_an_ordinary_container_has_them(docker_client, image, canary, popen, standin):
    """Raw TCP to this machine (its address and the engine's gateway), to a public-looking address
    (the stand-in's, 198.51.100.0/24), UDP, a DNS query to a resolver of ours and to the sandbox's
    own nameservers, with and without the proxy variables: all fail at once (ENETUNREACH) from the
    sandbox. Control, before and after: the same script from ordinary containers reaches each."""
    tcp, udp = Listener("host"), UdpListener()
    try:
        host, gateway = host_address(), bridge_gateway(docker_client)

        def targets(phase: str, public: bool) -> str:
            found = [
                [f"{phase}-tcp-host", "tcp", host, tcp.port],
                [f"{phase}-tcp-gateway", "tcp", gateway, tcp.port],
                [f"{phase}-udp-host", "udp", host, udp.port],
                [f"{phase}-udp-gateway", "udp", gateway, udp.port],
                [f"{phase}-dns-gateway", "dns", gateway, udp.port],
            ]
            if public:
                found.append([f"{phase}-tcp-public", "tcp", standin.address, 443])
            return json.dumps(found)

        def controls(phase: str) -> None:
            got = results(control(docker_client, image, HOSTILE / "relay_raw.py", targets(phase, False)))
            got |= results(
                control(
                    docker_client,
                    image,
                    HOSTILE / "relay_raw.py",
                    json.dumps([[f"{phase}-tcp-public", "tcp", standin.address, 443]]),
                    network=standin.network,
                )
            )
            for kind in ("tcp-host", "tcp-gateway", "tcp-public"):
                assert got[f"{phase}-{kind}"] == "REACHED", (phase, got)
            for kind in ("udp-host", "udp-gateway", "dns-gateway"):
                assert got[f"{phase}-{kind}"] == "SENT", (phase, got)
            wait_until(lambda: tcp.heard(f"{phase}-tcp-host") and tcp.heard(f"{phase}-tcp-gateway"), 30, "tcp control")
            wait_until(
                lambda: all(udp.heard(f"{phase}-{k}") for k in ("udp-host", "udp-gateway", "dns-gateway")), 30, "udp"
            )

        controls("before")
        code, out, err = run_launcher(popen, canary, str(HOSTILE / "relay_raw.py"), targets("sandbox", True))
        assert code == 0, err
        got = results(out)
        assert got["interfaces"] == "lo", out
        labels = [json.loads(targets("sandbox", True))[i][0] for i in range(6)]
        for label in labels:
            assert got[label] == "ENETUNREACH", (label, out)
            if "tcp" in label:
                assert got[f"{label} (no proxy variables)"] == "ENETUNREACH", (label, out)
        assert got["system resolver"] == "gaierror", out
        assert [v for k, v in got.items() if k.startswith("nameserver")] in (["ENETUNREACH"], ["ENETUNREACH"] * 2), out
        controls("after")
        assert not tcp.heard("sandbox"), tcp.firsts()
        assert not udp.heard("sandbox"), udp.datagrams
        assert "egress refused" not in closing_line(err)
    finally:
        tcp.close()
        udp.close()


# -- what the launcher lets through -----------------------------------------------------------------

LOOKALIKES = [  # label, request line: each must get 403 (400 where said), and reach no listener
    ("not allowed", "CONNECT exfil.test:443 HTTP/1.1"),
    ("suffix", "CONNECT allowed.test.exfil.test:443 HTTP/1.1"),
    ("prefix", "CONNECT exfilallowed.test:443 HTTP/1.1"),
    ("subdomain", "CONNECT x.allowed.test:443 HTTP/1.1"),
    ("two trailing dots", "CONNECT allowed.test..:443 HTTP/1.1"),
    ("other port", "CONNECT allowed.test:8443 HTTP/1.1"),
    ("port 0443", "CONNECT allowed.test:0443 HTTP/1.1"),
    ("port twice", "CONNECT allowed.test:443:443 HTTP/1.1"),
    ("no port", "CONNECT allowed.test HTTP/1.1"),
    ("userinfo", "CONNECT user@allowed.test:443 HTTP/1.1"),
    ("userinfo to another", "CONNECT allowed.test@exfil.test:443 HTTP/1.1"),
    ("ipv4 literal", "CONNECT 127.0.0.1:443 HTTP/1.1"),
    ("ipv4 decimal", "CONNECT 2130706433:443 HTTP/1.1"),
    ("ipv4 short", "CONNECT 127.1:443 HTTP/1.1"),
    ("ipv4 hex", "CONNECT 0x7f.0.0.1:443 HTTP/1.1"),
    ("ipv6 literal", "CONNECT [::1]:443 HTTP/1.1"),
    ("ipv6 bare", "CONNECT ::1:443 HTTP/1.1"),
    ("ipv6 mapped", "CONNECT [::ffff:127.0.0.1]:443 HTTP/1.1"),
    ("percent dot", "CONNECT allowed%2etest:443 HTTP/1.1"),
    ("percent letter", "CONNECT %61llowed.test:443 HTTP/1.1"),
    ("tab", "CONNECT allowed.test\t:443 HTTP/1.1"),
    ("newline", "CONNECT allowed.test\n:443 HTTP/1.1"),
    ("nul", "CONNECT allowed.test\x00.exfil.test:443 HTTP/1.1"),
    ("ideographic dot", "CONNECT allowed\u3002test:443 HTTP/1.1"),
    ("cyrillic e", "CONNECT allowed.t\u0435st:443 HTTP/1.1"),
    ("scheme in target", "CONNECT https://allowed.test:443 HTTP/1.1"),
    ("plain http", "GET http://allowed.test/ HTTP/1.1"),
    ("plain http to exfil", "GET http://exfil.test/x HTTP/1.1"),
    ("plain http on 443", "GET http://allowed.test:443/ HTTP/1.1"),
    ("plain https uri", "GET https://allowed.test/ HTTP/1.1"),
]
REACH_ALLOWED = [  # normalised to the allowed name: must reach exactly the allowed listener
    ("control", "CONNECT allowed.test:443 HTTP/1.1"),
    ("upper case", "CONNECT ALLOWED.TEST:443 HTTP/1.1"),
    ("trailing dot", "CONNECT allowed.test.:443 HTTP/1.1"),
    ("mixed case and dot", "CONNECT Allowed.Test.:443 HTTP/1.1"),
]
BAD_REQUEST = [  # not a proxy request at all: 400
    ("origin form", "GET / HTTP/1.1"),
    ("lower-case method", "connect exfil.test:443 HTTP/1.1"),
]


def test_only_the_allowed_name_on_443_is_relayed(docker_client, image, canary, popen, tmp_path):
    """CONNECT to a name not allowed, an allowed name on another port, look-alikes (suffix, prefix,
    subdomain, dots, userinfo, IPv4 and IPv6 literals in several spellings, percent-encoding,
    control characters, Unicode dots), plain-HTTP absolute URIs: 403 inside, and no connection
    anywhere. Each has teeth: every look-alike name and literal is sent to the exfil listener by
    --connect-to and by the launcher's resolver (which the test owns), so only the launcher's
    refusal keeps it from there. Upper case and a trailing dot normalise to the allowed name and
    reach exactly the allowed listener. The control: an ordinary container reaches the exfil
    listener before and after; the launcher asks its resolver for no name at all."""
    with listeners("allowed", "exfil") as (good, exfil):
        lookalike_names = ["exfil.test", "allowed.test.exfil.test", "exfilallowed.test", "x.allowed.test"]
        resolve = {
            n: ("127.0.0.1", exfil.port)
            for n in [
                *lookalike_names,
                "ALLOWED.TEST",
                "allowed.test.",
                "Allowed.Test.",
                "allowed.test",
                "127.0.0.1",
                "2130706433",
                "127.1",
                "::1",
            ]
        }
        log = tmp_path / "resolver.log"
        redirects = [o for n in lookalike_names for o in connect_to(n, "127.0.0.1", exfil.port)]
        gateway = bridge_gateway(docker_client)

        def reach_exfil(phase: str) -> None:
            got = results(
                control(
                    docker_client, image, HOSTILE / "relay_raw.py", json.dumps([[phase, "tcp", gateway, exfil.port]])
                )
            )
            assert got[phase] == "REACHED"
            wait_until(lambda: exfil.heard(phase), 30, f"the exfil listener heard the {phase} control")

        reach_exfil("before")
        cases = [*REACH_ALLOWED, *LOOKALIKES, *BAD_REQUEST]
        code, out, err = run_launcher(
            popen,
            canary,
            *allow(good),
            *redirects,
            str(HOSTILE / "relay_connect.py"),
            json.dumps(cases),
            resolve=resolve,
            resolve_log=log,
        )
        assert code == 0, err
        got = results(out)
        for label, _ in REACH_ALLOWED:
            assert got[label] == f"200 heard-by allowed: hello {label}", (label, out)
        for label, _ in LOOKALIKES:
            assert got[label].startswith("403 "), (label, got[label])
        for label, _ in BAD_REQUEST:
            assert got[label].startswith("400 "), (label, got[label])
        # Data reached the allowed listener from the four allowed spellings only (the plain-HTTP
        # requests on 443 open empty connections there: the next test).
        assert sorted(f for f in good.firsts() if f) == sorted(f"hello {label}" for label, _ in REACH_ALLOWED)
        reach_exfil("after")
        controls = [f"{p}{s}" for p in ("before", "after") for s in ("", " (no proxy variables)")]
        assert sorted(exfil.firsts()) == sorted(controls), "the launcher connected to the exfil listener"
        asked = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        assert set(asked) <= {"127.0.0.2"}, f"the launcher's resolver was asked for {asked}"
        closing = closing_line(err)
        # Refusals are named up to a bound (relay.NAMED: a script can make up names without end), the
        # rest counted: every look-alike is accounted for, and the first ones the script tried are named.
        listed = closing.split("egress refused: ", 1)[1].rsplit(" (allow with --allow-host)", 1)[0]
        named, _, more = listed.partition(", and ")
        count = int(more.split()[0]) if more else 0
        assert len(named.split(", ")) == min(relay_mod.NAMED, len(LOOKALIKES)), closing
        assert count >= 1 and len(named.split(", ")) + count <= len(LOOKALIKES), closing  # capped, none made up
        for target in ("exfil.test:443", "allowed.test.exfil.test:443"):  # the first two tried
            assert target in named, (target, closing)
        assert not any(c in closing for c in "\t\n\x00\u3002"), repr(closing)


def test_plain_http_to_an_allowed_name_on_443_opens_no_connection(canary, popen):
    """A plain-HTTP absolute URI (`GET http://allowed.test:443/`) is never relayed: 403 inside. The
    launcher should not even connect to the host for it (it does today: the name and port pass,
    the entry point refuses only after the launcher's ACCEPT), and the closing line should name it."""
    with listeners("allowed") as (good,):
        code, out, err = run_launcher(
            popen,
            canary,
            *allow(good),
            str(HOSTILE / "relay_connect.py"),
            json.dumps(
                [
                    ("plain http on 443", "GET http://allowed.test:443/ HTTP/1.1"),
                    ("control", "CONNECT allowed.test:443 HTTP/1.1"),
                ]
            ),
        )
        assert code == 0, err
        got = results(out)
        assert got["control"] == "200 heard-by allowed: hello control"
        assert got["plain http on 443"].startswith("403 "), got
        assert good.firsts() == ["hello control"], f"the launcher connected for a plain-HTTP request: {good.firsts()}"
        assert "allowed.test:443" in closing_line(err)


def test_an_allowed_name_resolved_on_the_launchers_machine_is_reached_and_a_lookalike_is_not(
    canary, popen, tmp_path, docker_client, image
):
    """Done-when of issue 24, without --connect-to: `--allow-host resolved.test`, a name the
    launcher's machine resolves (its resolver is the test's) to a listener here, is reached; the
    resolver is asked for exactly that name, normalised, whatever the case and trailing dot the
    script used. A look-alike (which the same resolver would send to the exfil listener) and a raw
    connection are not. Control: the exfil listener answers an ordinary container."""
    with listeners("allowed", "exfil") as (good, exfil):
        log = tmp_path / "resolver.log"
        resolve = {"resolved.test": ("127.0.0.1", good.port)}
        resolve |= {
            n: ("127.0.0.1", exfil.port) for n in ("RESOLVED.TEST", "resolved.test.", "resolved.test.evil.test")
        }
        gateway = bridge_gateway(docker_client)
        cases = [
            ("control", "CONNECT resolved.test:443 HTTP/1.1"),
            ("upper case and dot", "CONNECT RESOLVED.TEST.:443 HTTP/1.1"),
            ("look-alike", "CONNECT resolved.test.evil.test:443 HTTP/1.1"),
        ]
        code, out, err = run_launcher(
            popen,
            canary,
            "--allow-host",
            "resolved.test",
            str(HOSTILE / "relay_connect.py"),
            json.dumps(cases),
            resolve=resolve,
            resolve_log=log,
        )
        assert code == 0, err
        got = results(out)
        assert got["control"] == "200 heard-by allowed: hello control"
        assert got["upper case and dot"] == "200 heard-by allowed: hello upper case and dot"
        assert got["look-alike"].startswith("403 "), got
        raw = results(
            run_launcher(
                popen, canary, str(HOSTILE / "relay_raw.py"), json.dumps([["raw", "tcp", gateway, exfil.port]])
            )[1]
        )
        assert raw["raw"] == "ENETUNREACH"
        ctl = results(
            control(docker_client, image, HOSTILE / "relay_raw.py", json.dumps([["ctl", "tcp", gateway, exfil.port]]))
        )
        assert ctl["ctl"] == "REACHED"
        assert sorted(exfil.firsts()) == ["ctl", "ctl (no proxy variables)"]
        asked = [json.loads(line) for line in log.read_text().splitlines()]
        assert sorted(set(asked) - {"127.0.0.1"}) == ["resolved.test"], asked


def test_made_up_names_carrying_the_key_reach_no_resolver_and_not_the_closing_line(
    canary, popen, tmp_path, allowed, leak_search
):
    """The key in a CONNECT target (literal, hex, upper hex, base64, base64url, under an allowed
    domain, as userinfo, as the port): refused (403) without the launcher asking its resolver; the
    closing line, which names refused targets, shows none of the key's forms. The control: the
    allowed name asked last is resolved (the log is the resolver's), and the leak search finds its
    own positive control."""
    log = tmp_path / "resolver.log"
    control_name = f"control{secrets.token_hex(4)}.example.org"
    code, out, err = run_launcher(
        popen,
        canary,
        "--allow-host",
        control_name,
        str(HOSTILE / "relay_keynames.py"),
        control_name,
        resolve={control_name: ("127.0.0.1", allowed.port)},
        resolve_log=log,
    )
    assert code == 0, err
    got = results(out)
    assert got.pop("control") == "200", out
    assert len(got) == 9 and set(got.values()) == {"403"}, got
    asked = [json.loads(line) for line in log.read_text().splitlines()]
    assert control_name in asked
    raw = canary.encode()
    made_up = [canary.lower(), raw[:28].hex()]  # parts and lossy forms: the resolver must not see them either
    forms = [canary, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode()[4:-4]]
    for name in asked:
        assert not any(f in name for f in forms + made_up), f"a name with the key reached the resolver: {name}"
    # Whole forms of the key are masked there as on stdout; a part or a lossy form (lower case) is
    # not, on stdout either: the mask guards against accidents, not against a script that encodes.
    closing = closing_line(err)
    assert "egress refused:" in closing and "***" in closing, closing
    for f in forms:
        assert f not in closing, closing
    assert canary not in out + err
    assert leak_search.all_hits() == []


def test_the_launchers_own_https_proxy_is_used_for_allowed_names(canary, popen):
    """With HTTPS_PROXY in the launcher's environment (a campus proxy: here a small CONNECT proxy of
    the test's, with credentials), an allowed name is reached through it (CONNECT name:443, the
    Proxy-Authorization sent); a refused name never reaches it; a --connect-to name goes where
    --connect-to says. Control: the same proxy relays for a client of the test's."""
    heads: list[bytes] = []
    with listeners("allowed", "direct") as (good, direct):
        upstream = socket.socket()
        upstream.bind(("127.0.0.1", 0))
        upstream.listen(16)

        stop = threading.Event()
        upstream.settimeout(0.2)

        def serve() -> None:
            while not stop.is_set():
                try:
                    c, _ = upstream.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                c.settimeout(120)
                threading.Thread(target=relay, args=(c,), daemon=True).start()

        def relay(c: socket.socket) -> None:
            with c:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = c.recv(4096)
                    if not data:
                        return
                    head += data
                heads.append(head)
                if not head.startswith(b"CONNECT chain.test:443 "):
                    c.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                    return
                with socket.create_connection(("127.0.0.1", good.port)) as out:
                    c.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
                    back = threading.Thread(target=pipe, args=(out, c), daemon=True)
                    back.start()
                    pipe(c, out)
                    back.join(60)

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        port = upstream.getsockname()[1]
        try:
            with socket.create_connection(("127.0.0.1", port)) as c:  # the control
                c.sendall(b"CONNECT chain.test:443 HTTP/1.1\r\n\r\n")
                assert c.recv(100).startswith(b"HTTP/1.1 200")
                c.sendall(b"hello proxy control\n")
                assert c.recv(100) == b"heard-by allowed: hello proxy control\n"
            cases = [
                ("chained", "CONNECT chain.test:443 HTTP/1.1"),
                ("refused", "CONNECT exfil.test:443 HTTP/1.1"),
                ("direct", "CONNECT direct.test:443 HTTP/1.1"),
            ]
            code, out, err = run_launcher(
                popen,
                canary,
                "--allow-host",
                "chain.test",
                "--allow-host",
                "direct.test",
                *connect_to("direct.test", "127.0.0.1", direct.port),
                str(HOSTILE / "relay_connect.py"),
                json.dumps(cases),
                env={"HTTPS_PROXY": f"http://qsbx%20user:p%40ss@127.0.0.1:{port}", "NO_PROXY": "localhost"},
            )
        finally:
            stop.set()
            server.join(10)
            upstream.close()
        assert code == 0, err
        got = results(out)
        assert got["chained"] == "200 heard-by allowed: hello chained", got
        assert got["refused"].startswith("403 "), got
        assert got["direct"] == "200 heard-by direct: hello direct", got
        assert len(heads) == 2, heads  # the control's and the chained one: nothing for exfil or direct
        chained = heads[1].decode()
        assert chained.startswith("CONNECT chain.test:443 HTTP/1.1\r\n"), chained
        assert f"Proxy-Authorization: Basic {base64.b64encode(b'qsbx user:p@ss').decode()}" in chained, chained


# -- load: many channels, slow ones, bulk, a killed launcher ---------------------------------------


def test_200_channels_and_a_slow_loris_do_not_stall_output_or_other_channels(canary, popen, allowed):
    """200 channels held open at once by the listener, a CONNECT head sent a byte at a time, and a
    channel whose data the script never reads: the script's output keeps arriving and one more
    channel is answered at once. The control: once released, all 200 answer."""
    proc = start_launcher(popen, canary, *allow(allowed), str(HOSTILE / "relay_flood.py"), "allowed.test:443", "200")
    lines = Lines(proc)
    wait_until(lambda: lines.has("probe:"), 300, f"the probe channel ({lines.text()[-500:]})")
    assert allowed.count("hold") == 200
    assert allowed.count("push") == 1
    assert lines.has("opened 200 of 200"), lines.text()[-2000:]
    assert lines.has("probe: probe ok")
    ticks = lines.count("tick")
    wait_until(lambda: lines.count("tick") >= ticks + 50, 120, "output while 200 channels are held")
    allowed.release()
    code, err = lines.wait()
    assert code == 0, err
    assert lines.has("released 200 of 200"), lines.text()[-2000:]


def test_connects_from_many_threads_at_once(canary, popen, allowed):
    """A client with a thread pool (32 threads, 8 CONNECTs each, to an allowed listener), three runs:
    every channel is answered and each run ends normally. Seen before 9a3e101: "the sandbox broke
    the stream's protocol (channel 31 opened out of order or reused); it was stopped", exit 137 (a
    race: ids made and OPENs sent apart). Control: as many CONNECTs from one thread all pass."""
    code, out, err = run_launcher(
        popen, canary, *allow(allowed), str(HOSTILE / "relay_concurrent.py"), "allowed.test:443", "1", "256"
    )
    assert code == 0, err
    assert "answered 256 of 256" in out
    for _ in range(3):
        code, out, err = run_launcher(
            popen, canary, *allow(allowed), str(HOSTILE / "relay_concurrent.py"), "allowed.test:443", "32", "8"
        )
        assert "broke the stream's protocol" not in err, err
        assert code == 0, err
        assert "answered 256 of 256" in out, out


def test_100_mb_through_one_channel_arrive_whole(canary, popen, allowed):
    size, seed = 100 * 1024 * 1024, secrets.randbelow(1 << 30)
    code, out, err = run_launcher(
        popen, canary, *allow(allowed), str(HOSTILE / "relay_bulk.py"), "allowed.test:443", str(size), str(seed)
    )
    assert code == 0, err
    got = results(out)
    assert got["down"] == f"{size} {digest_of(seed, size)}"
    up = digest_of(seed + 1, size)
    assert got["up"].startswith(f"sent {up} heard"), got["up"]  # the answer: the next test
    (sink,) = [c for c in allowed.conns if c.first == "sink"]
    assert (sink.received, sink.digest) == (size, up)


def test_a_half_closed_channel_gets_the_whole_answer(canary, popen, allowed):
    """A client that sends its request, half-closes, then reads the answer (HTTP/1.0 style, many raw
    TCP protocols): the listener answers and closes, the launcher sends DATA, EOF and CLOSE
    back to back, and the entry point must write the DATA before it drops the channel. Seen: 13
    answers of 20 lost. Control: the listener heard every request whole."""
    count = 20
    code, out, err = run_launcher(
        popen, canary, *allow(allowed), str(HOSTILE / "relay_halfclose.py"), "allowed.test:443", str(count), "1000"
    )
    assert code == 0, err
    assert [c.received for c in allowed.conns] == [1000] * count  # the control: every request arrived
    assert f"answered {count} of {count}" in out, out


def test_sigkill_of_the_launcher_mid_transfer(docker_client, canary, popen, allowed):
    """SIGKILL of the launcher while a channel streams: the sandbox is gone, no object of the run is
    left (no network at all), and the listener sees its connection end. Control: before the kill,
    the channel carries data and the sandbox is there."""
    marker = secrets.token_hex(8)
    proc = start_launcher(popen, canary, *allow(allowed), str(HOSTILE / "relay_hold.py"), "allowed.test:443", marker)
    lines = Lines(proc)
    wait_until(lambda: lines.has("streaming"), 120, "the script streams through the relay")
    (conn,) = [c for c in allowed.conns if c.first == "stream"]
    wait_until(lambda: conn.received > 1 << 20, 60, "the listener receives")
    (attrs,) = run_containers(docker_client, marker)
    run_id = attrs["Config"]["Labels"][LABEL]
    assert not conn.ended.is_set()
    proc.kill()
    proc.wait(30)
    wait_until(lambda: run_objects(docker_client, run_id) == [], 30, "the run's objects gone")
    assert conn.ended.wait(30), "the listener's connection did not end"
    assert docker_client.api.networks(filters={"label": f"{LABEL}={run_id}"}) == []


# -- red team: speak for the entry point, exhaust the relay, grow the launcher ---------------------


def test_a_script_cannot_write_frames_of_its_own(canary, popen, allowed):
    """The entry point's stdout and stdin are out of the script's reach (non-dumpable PID 1); the
    script holds no socket; frames it writes on its own stdout and stderr arrive as its output's
    bytes and open no channel, abort nothing; sent to the proxy's port they are a bad request."""
    code, out, err = run_launcher(popen, canary, *allow(allowed), str(HOSTILE / "relay_frames.py"))
    assert code == 0, err
    got = results(out)
    for path in ("/proc/1/fd/0", "/proc/1/fd/1", "/proc/1/fd/2"):
        assert got[f"open {path}"] == "Permission denied", out
    assert "WROTE" not in out
    assert not [line for line in out.splitlines() if line.startswith("fd ") and "socket:" in line], out
    assert got["proxy port answered"] == "HTTP/1.1 400 Bad Request"
    assert "still running" in out
    forged = mux.frame(mux.Type.OPEN, 17, b"forged.test:443").decode()
    assert f"forged on stdout: {forged}" in out
    assert f"forged on stderr: {forged}" in err
    assert "forged.test" not in closing_line(err)
    assert allowed.firsts() == []


def test_channels_past_the_limit_are_refused_and_the_relay_serves_again(canary, popen, allowed):
    """More CONNECTs than the relay's channel limit, all held open: the ones past it are refused
    (503 or 403), none is left hanging, the run goes on, and once they are closed a new channel is
    served (the control that the relay was not broken by the flood)."""
    n = mux.MAX_CHANNELS + 20
    proc = start_launcher(
        popen, canary, *allow(allowed), str(HOSTILE / "relay_channel_flood.py"), "allowed.test:443", str(n), "1"
    )
    lines = Lines(proc)
    wait_until(lambda: lines.has("holding"), 300, f"the flood ({lines.text()[-500:]})")
    allowed.release()
    code, err = lines.wait()
    assert code == 0, err
    opened = next(line for line in lines.lines if line.startswith("opened"))
    # Seen: "opened 252 of 276 (first refusal: channel 252: [Errno 104] Connection reset by peer)",
    # the entry point's "RuntimeError: can't start new thread" on stderr, then "Connection refused"
    # for every CONNECT after (the proxy's socket closed with its dead accept thread).
    assert opened.startswith((f"opened {mux.MAX_CHANNELS - 1} of {n}", f"opened {mux.MAX_CHANNELS} of {n}")), opened
    assert "503" in opened, opened
    assert lines.has("hold: OSError HTTP/1.1 503 Service Unavailable"), lines.text()[-1500:]
    assert lines.has("after: probe ok"), lines.text()[-1500:]
    assert "Traceback" not in err, err


def _baseline_hwm(popen, canary, allowed) -> int:
    """The launcher's peak resident memory for a run that relays one small channel (the control)."""
    proc = start_launcher(
        popen,
        canary,
        *allow(allowed),
        str(HOSTILE / "relay_connect.py"),
        json.dumps([("one", "CONNECT allowed.test:443 HTTP/1.1")]),
    )
    peak, code, _, err = _peak(proc)
    assert code == 0, err
    return peak


def _peak(proc: subprocess.Popen[str]) -> tuple[int, int, str, str]:
    """Watch a launcher to its end, its pipes read meanwhile: (peak resident memory, exit code,
    stdout, stderr)."""
    lines = Lines(proc)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, vm_hwm(proc.pid))
        except (OSError, AssertionError):  # it ended meanwhile
            break
        threading.Event().wait(0.05)
    code, err = lines.wait()
    assert peak > 0
    return peak, code, lines.text(), err


def test_a_flood_of_channels_keeps_the_launchers_memory_bounded(canary, popen, allowed):
    """200 channels, each filled by the script towards a listener that reads nothing: the launcher
    holds at most a window per channel (mux.WINDOW), so its peak resident memory stays within
    200 windows (and some slack) of a run that relays one small channel."""
    base = _baseline_hwm(popen, canary, allowed)
    n = 200  # not more: past about 250 the entry point's relay breaks (finding R4, the test above)
    proc = start_launcher(
        popen, canary, *allow(allowed), str(HOSTILE / "relay_channel_flood.py"), "allowed.test:443", str(n), "8"
    )
    lines = Lines(proc)
    wait_until(lambda: lines.has("holding"), 300, f"the flood ({lines.text()[-500:]})")
    threading.Event().wait(2)  # what is in flight lands
    peak = vm_hwm(proc.pid)
    allowed.release()
    code, err = lines.wait()
    assert code == 0, err
    filled = int(next(line for line in lines.lines if line.startswith("filled:")).split()[1])
    print(f"launcher peak: control {base >> 20} MiB, flood {peak >> 20} MiB, {filled >> 20} MiB in flight")
    assert lines.has(f"opened {n} of {n}"), lines.text()
    assert filled > n * 2 * mux.WINDOW, "the flood did not fill the windows (no teeth)"
    assert peak - base < n * mux.WINDOW + (16 << 20), (base, peak)


def test_a_flood_of_refused_names_keeps_the_launchers_memory_and_closing_line_bounded(canary, popen):
    """Each refused CONNECT with a different made-up name of ~280 characters: the launcher keeps
    every one (Relay._refused) and lists them all in the closing line, so a script grows the
    launcher's memory and the user's terminal without bound. Measured: peak memory after 10x more
    names must not grow by more than a few MiB, and the closing line must stay short."""
    peaks, closings = [], []
    for count in (2000, 20000):
        proc = start_launcher(popen, canary, str(HOSTILE / "relay_refuse_flood.py"), str(count))
        peak, code, out, err = _peak(proc)
        assert code == 0, err
        assert f"refused {count} of {count}" in out
        peaks.append(peak)
        closings.append(closing_line(err))
    print(f"launcher peak: {peaks[0] >> 20} MiB after 2000 names, {peaks[1] >> 20} MiB after 20000")
    print(f"closing line: {len(closings[0])} and {len(closings[1])} characters")
    assert peaks[1] - peaks[0] < 4 << 20, peaks
    assert len(closings[1]) < 4096, len(closings[1])
