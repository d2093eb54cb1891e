"""Test hosts with a real systemd: Debian 12 root filesystems booted with systemd-nspawn.

A host is a private copy of a cached debootstrap root filesystem, booted with
systemd as PID 1 in its own network namespace; slirp4netns gives it outbound
network and forwards 127.0.0.1:<port> of this machine to its SSH server. See
shared/spec/test-hosts.md for the measured recipe. Every process started here is
stopped by its PID (Host.stop, Harness.close), pass or fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOSTS_DIR = REPO / ".dev" / "hosts"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Base OS only: the roles install what they need.
PACKAGES = ["systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo", "iproute2", "ca-certificates"]
# Bumped when the way the image is made changes (part of the cache key).
RECIPE = "1"
READY_MARK = ".mlstack-rootfs-ready"
# The build machine's trust store and package settings (TLS-intercepting proxy):
# the hosts need them to reach PyPI and Debian.
MACHINE_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MACHINE_APT_FILES = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/apt.conf.d/99artifact-registry")]
# The test bridge's addresses (a private range used only inside its namespace): the control
# node is .1, host number i is .(10 + i).
BRIDGE_SUBNET = "10.88.0"
CLONE_NEWNET = 0x40000000


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [test-hosts] {msg}", flush=True)


def rootfs_key() -> str:
    text = "\n".join([SUITE, MIRROR, RECIPE, *sorted(PACKAGES)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Held by one test run at a time: bin/test-all runs the single and multi scenarios side by
    side, and only one of them may build a shared cache (root filesystem, offline files)."""
    HOSTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(HOSTS_DIR / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_rootfs() -> Path:
    """The base root filesystem, built once per package list (~2 min, ~900 MB)."""
    root = HOSTS_DIR / f"rootfs-{rootfs_key()}"
    if (root / READY_MARK).exists():
        return root
    with exclusive("rootfs"):
        return _build_rootfs(root)


def _build_rootfs(root: Path) -> Path:
    if (root / READY_MARK).exists():  # built by the run that held the lock before us
        return root
    shutil.rmtree(root, ignore_errors=True)
    tmp = root.with_name(root.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    HOSTS_DIR.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {SUITE} into {tmp.relative_to(REPO)} (once per package list)")
    started = time.monotonic()
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp), MIRROR],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # No network configuration tool: slirp4netns configures tap0 from outside.
    (tmp / "etc/hostname").write_text("mlstack-host\n")
    (tmp / READY_MARK).write_text(f"{rootfs_key()}\n")
    tmp.rename(root)
    log(f"root filesystem ready ({time.monotonic() - started:.0f}s)")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(p) for p in task.read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _wait(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _stop_proc(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class Host:
    """One booted (or bootable) host: its root filesystem copy and the processes serving it."""

    name: str
    rootfs: Path
    workdir: Path
    ssh_key: Path
    ssh_port: int = 0
    # On a test bridge (Network.attach): the host's own namespace and its address there;
    # empty: a private network with slirp4netns's outbound link.
    netns: str = ""
    address: str = "127.0.0.1"
    nspawn: subprocess.Popen[bytes] | None = None
    slirp: subprocess.Popen[bytes] | None = None
    boots: int = 0
    _logs: list[Path] = field(default_factory=list)

    # ------------------------------------------------------------ lifecycle
    def boot(self, timeout: float = 60) -> None:
        self.boots += 1
        console = self.workdir / f"console-{self.boots}.log"
        self._logs.append(console)
        log(f"{self.name}: booting (boot {self.boots})")
        self.nspawn = subprocess.Popen(
            [
                "systemd-nspawn",
                "--register=no",
                "--keep-unit",
                *(
                    [f"--network-namespace-path=/run/netns/{self.netns}", "--resolv-conf=off"]
                    if self.netns
                    else ["--private-network"]
                ),
                "--quiet",
                f"--machine={self.name}",
                "-D",
                str(self.rootfs),
                "-b",
                "--console=read-only",
            ],
            stdin=subprocess.DEVNULL,
            stdout=console.open("ab"),
            stderr=subprocess.STDOUT,
        )
        _wait("the container's init", lambda: bool(self._init_pid()) or self.nspawn.poll() is not None, 30, 0.2)
        init = self._init_pid()
        if not init:
            raise RuntimeError(f"{self.name}: systemd-nspawn exited ({self.nspawn.returncode}); see {console}")
        if self.netns:
            self.ssh_port = 22
        else:
            self._outbound_link(init)
        _wait(f"{self.name}: SSH", lambda: self.ssh("true", check=False, timeout=10).returncode == 0, timeout, 1)
        state = self.ssh("systemctl is-system-running --wait", check=False, timeout=timeout).stdout.strip()
        log(f"{self.name}: up on {self.address}:{self.ssh_port} (system {state})")

    def _outbound_link(self, init: int) -> None:
        """slirp4netns: outbound network, and this machine's 127.0.0.1:<ssh_port> to the host's SSH."""
        api = self.workdir / "slirp.sock"
        api.unlink(missing_ok=True)
        self.slirp = subprocess.Popen(
            [
                "slirp4netns",
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--api-socket",
                str(api),
                str(init),
                "tap0",
            ],
            stdin=subprocess.DEVNULL,
            stdout=(self.workdir / "slirp.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        _wait("slirp4netns's API socket", api.exists, 15, 0.1)
        self.ssh_port = self.ssh_port or free_port()
        self._slirp_call(
            api,
            {
                "execute": "add_hostfwd",
                "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": self.ssh_port, "guest_port": 22},
            },
        )

    def _init_pid(self) -> int:
        if self.nspawn is None or self.nspawn.poll() is not None:
            return 0
        kids = _children(self.nspawn.pid)
        return kids[0] if kids else 0

    @staticmethod
    def _slirp_call(api: Path, request: dict[str, object]) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(api))
            s.sendall(json.dumps(request).encode())
            s.shutdown(socket.SHUT_WR)
            answer = s.recv(4096).decode()
        if '"error"' in answer:
            raise RuntimeError(f"slirp4netns refused {request}: {answer}")

    def poweroff(self, timeout: float = 60) -> None:
        """A clean power-off (SIGRTMIN+4 to the container's systemd), then slirp4netns."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            init = self._init_pid()
            if init:
                os.kill(init, signal.SIGRTMIN + 4)
            try:
                self.nspawn.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name}: no power-off in {timeout:.0f}s: SIGKILL to its init")
                if init and _alive(init):
                    os.kill(init, signal.SIGKILL)
                _stop_proc(self.nspawn, signal.SIGTERM, 20)
        self.nspawn = None
        if self.slirp is not None:
            _stop_proc(self.slirp, signal.SIGTERM, 10)
            self.slirp = None

    def kill(self) -> None:
        """Stop by PID, whatever the state: a power-off first; if the host does not go within
        30 s, SIGKILL to its init (which ends its PID namespace), then nspawn and slirp4netns."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            init = self._init_pid()
            with contextlib.suppress(OSError):  # it may be gone already
                self.poweroff(timeout=30)
            if self.nspawn is not None and init and _alive(init):
                os.kill(init, signal.SIGKILL)
        if self.nspawn is not None:
            _stop_proc(self.nspawn, signal.SIGTERM, 20)
            self.nspawn = None
        if self.slirp is not None:
            _stop_proc(self.slirp, signal.SIGTERM, 10)
            self.slirp = None

    # ------------------------------------------------------------ access
    def ssh_args(self) -> list[str]:
        return [
            "-i",
            str(self.ssh_key),
            "-p",
            str(self.ssh_port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
        ]

    def ssh(self, command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ssh", *self.ssh_args(), f"root@{self.address}", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"on {self.name}: {command!r} exited {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def collect_journal(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        if self.nspawn is not None and self.nspawn.poll() is None:
            out = self.ssh("journalctl -b --no-pager -o short-precise", check=False, timeout=120)
            (dest / f"{self.name}-journal-boot{self.boots}.log").write_text(out.stdout + out.stderr)
        else:  # offline: read the persistent journal of the copy
            out = subprocess.run(
                ["journalctl", "-D", str(self.rootfs / "var/log/journal"), "--no-pager"],
                capture_output=True,
                text=True,
                check=False,
            )
            (dest / f"{self.name}-journal.log").write_text(out.stdout + out.stderr)
        for path in self._logs:
            if path.exists():
                shutil.copy(path, dest / f"{self.name}-{path.name}")


def _ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class Network:
    """A bridge in a network namespace of its own, the hosts' only link: nothing on it routes
    outward. Each host gets its own namespace with one veth end on the bridge; the control node
    (this test process, after enter()) is the bridge's own address."""

    def __init__(self, tag: str) -> None:
        self.name = f"mlstack-net-{tag}"
        self.namespaces: list[str] = []
        self.control_address = f"{BRIDGE_SUBNET}.1"

    def create(self) -> None:
        _ip("netns", "add", self.name)
        self.namespaces.append(self.name)
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("-n", self.name, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.name, "addr", "add", f"{self.control_address}/24", "dev", "br0")
        _ip("-n", self.name, "link", "set", "br0", "up")
        log(f"network {self.name}: bridge {BRIDGE_SUBNET}.0/24, no route outward")

    def attach(self, host: Host, number: int) -> None:
        """The host's namespace, its veth pair to the bridge and its address (set before it boots)."""
        ns = f"{self.name}-{number}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        port = f"mlsbr{number}"  # the bridge's end (interface names: 15 characters at most)
        _ip("-n", self.name, "link", "add", port, "type", "veth", "peer", "name", "host0", "netns", ns)
        _ip("-n", self.name, "link", "set", port, "master", "br0", "up")
        host.address = f"{BRIDGE_SUBNET}.{10 + number}"
        _ip("-n", ns, "addr", "add", f"{host.address}/24", "dev", "host0")
        _ip("-n", ns, "link", "set", "host0", "up")
        host.netns = ns

    def enter(self) -> None:
        """Moves this process onto the bridge: the calling thread, and every thread and child process
        started after it (ansible-playbook, ssh, the test's clients). Call it before any thread starts."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.name}")
        finally:
            os.close(fd)

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()


class Harness:
    """Creates hosts under a run directory; close() stops them by PID and deletes their copies."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.hosts: list[Host] = []
        self.network: Network | None = None  # the multi-host scenario's bridge
        run_dir.mkdir(parents=True, exist_ok=True)
        self.ssh_key = run_dir / "id_ed25519"
        if not self.ssh_key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlstack-test-hosts", "-f", str(self.ssh_key)],
                check=True,
            )

    def new_host(self, name: str, offline_hosts: dict[str, str] | None = None) -> Host:
        """A fresh copy of the cached root filesystem, prepared for SSH and this machine's network;
        with offline_hosts (name -> address of every host on the test bridge), for a site with no
        route outward instead: no package sources, no DNS, those names in /etc/hosts."""
        base = cached_rootfs()
        workdir = self.run_dir / name
        rootfs = workdir / "rootfs"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        started = time.monotonic()
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(rootfs)], check=True)
        self._prepare(rootfs, name)
        if offline_hosts is not None:
            self._air_gap(rootfs, name, offline_hosts)
        host = Host(name=name, rootfs=rootfs, workdir=workdir, ssh_key=self.ssh_key)
        self.hosts.append(host)
        log(f"{name}: root filesystem copied ({time.monotonic() - started:.0f}s)")
        return host

    def _prepare(self, rootfs: Path, name: str) -> None:
        (rootfs / "etc/hostname").write_text(f"{name}\n")
        (rootfs / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n::1 localhost\n")
        # slirp4netns's DNS forwarder.
        resolv = rootfs / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text("nameserver 10.0.2.3\n")
        ssh_dir = rootfs / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.copy(self.ssh_key.with_suffix(".pub"), ssh_dir / "authorized_keys")
        (ssh_dir / "authorized_keys").chmod(0o600)
        # The build machine's CA (TLS interception): into the host's trust store the
        # Debian way, so update-ca-certificates keeps it; pip and apt read that store.
        if MACHINE_CA_BUNDLE.exists():
            extra = rootfs / "usr/local/share/ca-certificates/build-machine.crt"
            shutil.copy(MACHINE_CA_BUNDLE, extra)
            shutil.copy(MACHINE_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        pip_settings = ["[global]", "cert = /etc/ssl/certs/ca-certificates.crt"]
        for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT"):
            if os.environ.get(key):
                pip_settings.append(f"{key[4:].lower().replace('_', '-')} = {os.environ[key]}")
        (rootfs / "etc/pip.conf").write_text("\n".join(pip_settings) + "\n")
        for src in MACHINE_APT_FILES:
            if src.exists():
                shutil.copy(src, rootfs / src.relative_to("/"))
        if (rootfs / "etc/apt/sources.list.d/debian.sources").exists():
            (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        # A journal on disk, read after a failed boot or a power-off.
        (rootfs / "var/log/journal").mkdir(exist_ok=True)

    @staticmethod
    def _air_gap(rootfs: Path, name: str, hosts: dict[str, str]) -> None:
        """As on an isolated site: no apt source or proxy, no name server, no package index;
        the hosts know each other from /etc/hosts."""
        for src in [*MACHINE_APT_FILES, Path("/etc/apt/sources.list")]:
            (rootfs / src.relative_to("/")).unlink(missing_ok=True)
        (rootfs / "etc/resolv.conf").write_text("# isolated test network: no name server\n")
        (rootfs / "etc/pip.conf").write_text("[global]\nindex-url = http://127.0.0.1:9/simple\ntimeout = 2\n")
        lines = ["127.0.0.1 localhost", "::1 localhost", *(f"{addr} {host}" for host, addr in hosts.items())]
        (rootfs / "etc/hosts").write_text("\n".join(lines) + "\n")

    def close(self) -> None:
        def stop(host: Host) -> None:
            try:
                host.kill()
            finally:
                shutil.rmtree(host.workdir / "rootfs", ignore_errors=True)

        # All at once: a power-off waits for the host's services to stop.
        stoppers = [threading.Thread(target=stop, args=(host,), name=f"stop-{host.name}") for host in self.hosts]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        # Only this run's leftovers below: the other scenario's hosts may be running beside it.
        names = [host.name for host in self.hosts]
        self.hosts.clear()
        if self.network is not None:
            self.network.close()
        # nspawn leaves these behind (here /run is no tmpfs).
        for leftover in ("/run/systemd/nspawn/locks", "/run/systemd/nspawn/propagate"):
            for path in Path(leftover).glob("*"):
                if any(name in path.name for name in names):
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
