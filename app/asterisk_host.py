"""Provision and run a real Asterisk (20 or later) on loopback for SOMVAD.

`make run` and the integration tests both need a live Asterisk with ARI. This
module uses a system ``asterisk`` binary when one of version 20+ is on PATH;
otherwise it builds a Debian sid root with debootstrap under ``cache_dir``,
installs Debian's ``asterisk`` package into it, and runs Asterisk there with
chroot. Several named instances (different ports, own config, logs and astdb)
can run side by side from one root::

    instance = AsteriskInstance.from_env("default")
    creds = up(instance)          # builds the root on first use, then starts
    print(creds.ari_url, creds.version)
    down(instance)

Host-side state lives in ``<state_dir>/<name>``: ``credentials.json`` (the ARI
and AMI secrets generated once per install, mode 0600), ``instance.json`` (the
ports it was started with) and ``asterisk.pid``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import fcntl
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path, PurePosixPath
from types import ModuleType

logger = logging.getLogger(__name__)

Log = Callable[[str], None]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "asterisk-config"
MIN_MAJOR_VERSION = 20
ROOT_NAME = "root-sid"
BUILD_PREFIX = ROOT_NAME + ".build-"
# Where instance folders live, as Asterisk sees them inside the Debian root.
ROOT_INSTANCES = PurePosixPath("/var/lib/somvad/instances")
# Debian sid's Release file may be older than apt's freshness window when the
# mirror is a snapshot, so apt inside the root must not reject it.
APT_OPTIONS = ("-o", "Acquire::Check-Valid-Until=false")
# Asterisk and the tools in the root get a clean environment: nothing of the
# caller's (tokens, proxies) leaks into them.
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
START_DEADLINE = 60.0
STOP_DEADLINE = 20.0
BUILD_DEADLINE = 1200.0
LOCK_DEADLINE = 1500.0
POLL_INTERVAL = 0.25
LOG_TAIL_LINES = 30

ENV_FIELDS = {
    "http_port": "SOMVAD_ASTERISK_HTTP_PORT",
    "sip_host": "SOMVAD_SIP_HOST",
    "sip_port": "SOMVAD_SIP_PORT",
    "rtp_start": "SOMVAD_RTP_START",
    "rtp_end": "SOMVAD_RTP_END",
    "ami_port": "SOMVAD_AMI_PORT",
    "ari_app": "SOMVAD_ARI_APP",
    "cache_dir": "SOMVAD_ASTERISK_CACHE",
    "state_dir": "SOMVAD_ASTERISK_STATE",
}
# Settings that instance.json remembers, so that `somvad asterisk status
# --instance test` describes the test instance without repeating its ports.
SAVED_FIELDS = (
    "http_port",
    "sip_host",
    "sip_port",
    "rtp_start",
    "rtp_end",
    "ami_port",
    "ari_app",
)


class AsteriskError(Exception):
    """Asterisk could not be provisioned, started or stopped.

    The message says what failed, what to do about it and, when there is one,
    ends with the last lines of the relevant log.
    """


@dataclass(frozen=True)
class AsteriskInstance:
    """One named Asterisk on loopback and the folders it uses."""

    name: str = "default"
    http_port: int = 8088
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    rtp_start: int = 10000
    rtp_end: int = 10999
    ami_port: int = 5038
    ari_app: str = "somvad"
    cache_dir: Path = Path("/var/cache/somvad")
    state_dir: Path = Path("/var/lib/somvad/asterisk")

    @classmethod
    def from_env(cls, name: str = "default") -> AsteriskInstance:
        """Build an instance from SOMVAD_* variables.

        Precedence: environment, then the settings the instance was last
        started with (instance.json), then the defaults above.
        """
        env = os.environ
        base = cls(name=name)
        if env.get(ENV_FIELDS["cache_dir"]):
            base = replace(base, cache_dir=Path(env[ENV_FIELDS["cache_dir"]]))
        if env.get(ENV_FIELDS["state_dir"]):
            base = replace(base, state_dir=Path(env[ENV_FIELDS["state_dir"]]))

        values: dict[str, object] = {}
        saved = _read_json(_state_dir(base) / "instance.json")
        for key in SAVED_FIELDS:
            if key in saved:
                values[key] = saved[key]
        for key in SAVED_FIELDS:
            raw = env.get(ENV_FIELDS[key])
            if raw:
                values[key] = raw

        types = {field.name: field.type for field in fields(cls)}
        for key, value in values.items():
            if types[key] in (int, "int"):
                try:
                    values[key] = int(str(value))
                except ValueError as exc:
                    raise AsteriskError(
                        f"{ENV_FIELDS[key]}={value!r} is not a port number"
                    ) from exc
            else:
                values[key] = str(value)
        return replace(base, **values)  # type: ignore[arg-type]

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass(frozen=True)
class AsteriskCredentials:
    """How SOMVAD reaches a running instance."""

    ari_url: str
    ari_username: str
    ari_password: str
    ami_host: str
    ami_port: int
    ami_username: str
    ami_password: str
    sip_host: str
    sip_port: int
    version: str


@dataclass(frozen=True)
class _Layout:
    """Where an instance's files are, on the host and as Asterisk sees them."""

    mode: str  # "chroot" or "system"
    root: Path  # "/" for a system install
    binary: str  # path of asterisk as seen by the process that runs it
    instance_dir: PurePosixPath  # as Asterisk sees it

    def host(self, path: PurePosixPath) -> Path:
        """Host path of a path that Asterisk sees."""
        return self.root / str(path).lstrip("/")

    @property
    def conf(self) -> PurePosixPath:
        return self.instance_dir / "etc" / "asterisk.conf"

    def command(self, *args: str) -> list[str]:
        prefix = ["chroot", str(self.root)] if self.mode == "chroot" else []
        return [*prefix, self.binary, "-C", str(self.conf), *args]


# ---------------------------------------------------------------- public API


def up(instance: AsteriskInstance, log: Log = print) -> AsteriskCredentials:
    """Provision and start the instance; return how to reach it.

    Idempotent: when the instance already runs with the same settings, it
    only checks that ARI answers and returns the credentials.
    """
    state = _state_dir(instance)
    state.mkdir(parents=True, exist_ok=True)
    with _file_lock(state / ".lock", log, f"instance {instance.name!r} is busy"):
        layout = _layout(instance, log)
        assert layout is not None  # build=True builds or raises
        secrets_ = _load_or_create_secrets(instance)

        pid = _running_pid(instance, layout)
        if pid is not None:
            _check_same_settings(instance)
            log(f"Asterisk {instance.name!r} already running (pid {pid})")
            version = _wait_for_ari(instance, layout, secrets_, pid, None, 10.0)
            return _finish_up(instance, secrets_, version)

        _check_ports_free(instance)
        log(f"Rendering config for instance {instance.name!r}")
        _prepare_instance(instance, layout, secrets_)
        if layout.mode == "chroot":
            _loopback_dns(layout.root)
            with _mounts_lock(instance, log):
                _ensure_mounts(layout.root, log)

        log(f"Starting Asterisk {instance.name!r} (ARI on {instance.ari_url})")
        started = time.monotonic()
        proc = _start(instance, layout)
        version = _wait_for_ari(
            instance, layout, secrets_, proc.pid, proc, START_DEADLINE
        )
        log(
            f"Asterisk {version} up in {time.monotonic() - started:.1f}s "
            f"(pid {proc.pid}, log {log_path(instance)})"
        )
        return _finish_up(instance, secrets_, version)


def down(instance: AsteriskInstance, log: Log = print) -> None:
    """Stop the instance and wait until its process has exited. Idempotent."""
    state = _state_dir(instance)
    if not state.exists():
        log(f"Asterisk {instance.name!r} was never provisioned; nothing to stop")
        return

    with _file_lock(state / ".lock", log, f"instance {instance.name!r} is busy"):
        layout = _layout(instance, log, build=False)
        if layout is None:
            log(f"Asterisk {instance.name!r} has no install; nothing to stop")
            return
        pid = _running_pid(instance, layout)
        if pid is None:
            log(f"Asterisk {instance.name!r} is not running")
        else:
            log(f"Stopping Asterisk {instance.name!r} (pid {pid})")
            _stop(layout, pid, log)
            log(f"Asterisk {instance.name!r} stopped")
        with contextlib.suppress(FileNotFoundError):
            (state / "asterisk.pid").unlink()
        if layout.mode == "chroot":
            with _mounts_lock(instance, log):
                _release_mounts(layout.root, log)


def status(instance: AsteriskInstance) -> dict[str, object]:
    """Describe the instance: running or not, pid, version, ports, root."""
    layout = _layout(instance, print, build=False)
    pid = _running_pid(instance, layout) if layout else None
    saved = _read_json(_state_dir(instance) / "credentials.json")
    return {
        "name": instance.name,
        "running": pid is not None,
        "pid": pid,
        "version": saved.get("version") or None,
        "mode": layout.mode if layout else None,
        "root": str(layout.root) if layout else None,
        "ari_url": instance.ari_url,
        "http_port": instance.http_port,
        "sip": f"{instance.sip_host}:{instance.sip_port}/udp",
        "rtp": f"{instance.rtp_start}-{instance.rtp_end}",
        "ami_port": instance.ami_port,
        "log": str(log_path(instance)),
    }


def credentials(instance: AsteriskInstance) -> AsteriskCredentials:
    """The saved credentials of the instance, without starting anything."""
    path = _state_dir(instance) / "credentials.json"
    saved = _read_json(path)
    if not saved:
        raise AsteriskError(
            f"Asterisk instance {instance.name!r} was never provisioned "
            f"(no {path}); run `somvad asterisk up --instance {instance.name}`"
        )
    return _credentials_from(instance, saved, str(saved.get("version", "")))


def log_path(instance: AsteriskInstance) -> Path:
    """Host path of the instance's full log."""
    layout = _layout(instance, print, build=False)
    if layout is None:
        layout = _chroot_layout(instance)
    return layout.host(layout.instance_dir / "log" / "full")


def cli(argv: list[str]) -> int:
    """`somvad asterisk up|down|status [--instance NAME]`."""
    parser = argparse.ArgumentParser(
        prog="somvad asterisk", description="Run SOMVAD's Asterisk on loopback."
    )
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--instance", default="default", help="instance name")
    args = parser.parse_args(argv)

    try:
        instance = AsteriskInstance.from_env(args.instance)
        if args.action == "up":
            creds = up(instance)
            print(f"ARI      {creds.ari_url} user {creds.ari_username}")
            print(
                f"AMI      {creds.ami_host}:{creds.ami_port} user {creds.ami_username}"
            )
            print(f"SIP      {creds.sip_host}:{creds.sip_port}/udp")
            print(f"secrets  {_state_dir(instance) / 'credentials.json'}")
        elif args.action == "down":
            down(instance)
        else:
            for key, value in status(instance).items():
                print(f"{key:10} {value}")
    except AsteriskError as exc:
        print(f"error: {exc}")
        return 1
    return 0


# ------------------------------------------------------------ install / root


def _state_dir(instance: AsteriskInstance) -> Path:
    return instance.state_dir / instance.name


def _layout(instance: AsteriskInstance, log: Log, build: bool = True) -> _Layout | None:
    """The install to use: a system Asterisk 20+, else the Debian root.

    With build=False, returns None when the root does not exist yet instead of
    building it.
    """
    system = _system_asterisk()
    if system is not None:
        return _Layout(
            mode="system",
            root=Path("/"),
            binary=system,
            instance_dir=PurePosixPath(_state_dir(instance).resolve()) / "asterisk",
        )
    layout = _chroot_layout(instance)
    if (layout.root / "usr/sbin/asterisk").exists():
        return layout
    if not build:
        return None
    _build_root(instance, log)
    return layout


def _chroot_layout(instance: AsteriskInstance) -> _Layout:
    return _Layout(
        mode="chroot",
        root=instance.cache_dir.resolve() / ROOT_NAME,
        binary="/usr/sbin/asterisk",
        instance_dir=ROOT_INSTANCES / instance.name,
    )


@cache
def _system_asterisk() -> str | None:
    """Path of an `asterisk` on PATH whose version is 20 or later."""
    path = shutil.which("asterisk")
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "-V"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    major = _major_version(out)
    if major is None or major < MIN_MAJOR_VERSION:
        logger.info("ignoring system asterisk %s (%s)", path, out.strip())
        return None
    return path


def _major_version(text: str) -> int | None:
    match = re.search(r"(\d+)\.\d+", text)
    return int(match.group(1)) if match else None


def _build_root(instance: AsteriskInstance, log: Log) -> None:
    """Build the Debian sid root with Asterisk, atomically, under a lock."""
    cache_dir = instance.cache_dir.resolve()
    root = cache_dir / ROOT_NAME
    if shutil.which("debootstrap") is None:
        raise AsteriskError(
            "No Asterisk 20+ is installed and debootstrap is missing, so the "
            "Debian root with Asterisk cannot be built. Install it with "
            "`apt-get install debootstrap` (or `make system-deps`), or install "
            "Asterisk 20 or later yourself."
        )
    if os.geteuid() != 0:
        raise AsteriskError(
            "Building the Asterisk root needs root (debootstrap and chroot); "
            "run `somvad asterisk up` as root."
        )

    cache_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_dir / ".build.lock", log, "another `up` builds the root"):
        if (root / "usr/sbin/asterisk").exists():
            return  # built by the `up` we waited for
        _remove_stale_builds(cache_dir, log)
        mirror = _debian_mirror()
        tmp = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=cache_dir))
        os.chmod(tmp, 0o755)
        started = time.monotonic()
        try:
            log(f"Building Debian sid root in {tmp} from {mirror} (about a minute)")
            log("  debootstrap --variant=minbase sid")
            _run(
                ["debootstrap", "--variant=minbase", "sid", str(tmp), mirror],
                "debootstrap",
                BUILD_DEADLINE,
            )
            _prepare_apt(tmp, mirror)
            log("  apt-get update (in the root)")
            _run(
                ["chroot", str(tmp), "apt-get", *APT_OPTIONS, "update"],
                "apt-get update in the Asterisk root",
                BUILD_DEADLINE,
            )
            log("  apt-get install asterisk (in the root)")
            _run(
                [
                    "chroot",
                    str(tmp),
                    "apt-get",
                    *APT_OPTIONS,
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "asterisk",
                ],
                "apt-get install asterisk in the Asterisk root",
                BUILD_DEADLINE,
            )
            _run(["chroot", str(tmp), "apt-get", "clean"], "apt-get clean", 120.0)
            version = _run(
                ["chroot", str(tmp), "/usr/sbin/asterisk", "-V"],
                "asterisk -V in the new root",
                30.0,
            ).strip()
            log(f"  installed {version}")
            _unmount_under(tmp)
            tmp.rename(root)
        except BaseException:
            _discard_build(tmp, log)
            raise
        log(f"Root ready at {root} in {time.monotonic() - started:.0f}s")


def _prepare_apt(root: Path, mirror: str) -> None:
    """Point apt in the new root at the host's mirror and keep services off."""
    sources = root / "etc/apt/sources.list"
    if not sources.exists() or not sources.read_text().strip():
        sources.write_text(f"deb {mirror} sid main\n")
    (root / "etc/apt/apt.conf.d/99somvad").write_text(
        'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n'
    )
    # Package scripts must not try to start Asterisk inside the build.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    resolv = root / "etc/resolv.conf"
    if not resolv.exists() and Path("/etc/resolv.conf").exists():
        shutil.copyfile("/etc/resolv.conf", resolv)


def _loopback_dns(root: Path) -> None:
    """Keep Asterisk's name lookups on this machine.

    When Asterisk works out its own address it resolves the host name and
    then A.ROOT-SERVERS.NET. The build needed the host's resolver to fetch
    packages; the running mixer must not query it, so the root's resolver
    is loopback (nothing answers there, and the lookup fails at once).
    """
    (root / "etc/resolv.conf").write_text("nameserver 127.0.0.1\n")
    hosts = root / "etc/hosts"
    name = socket.gethostname()
    text = hosts.read_text() if hosts.exists() else ""
    if name not in text.split():
        hosts.write_text(text + f"127.0.1.1\t{name}\n")


def _debian_mirror() -> str:
    """The Debian archive URL that this machine's apt already uses."""
    override = os.environ.get("SOMVAD_DEBIAN_MIRROR")
    if override:
        return override
    entries: list[tuple[str, list[str]]] = []
    apt = Path("/etc/apt")
    files = [apt / "sources.list"]
    files += sorted((apt / "sources.list.d").glob("*.list"))
    files += sorted((apt / "sources.list.d").glob("*.sources"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            entries += _parse_deb822(text)
        else:
            entries += _parse_one_line(text)

    for uri, suites in entries:
        if "security" in uri or any(s.endswith("-security") for s in suites):
            continue
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    raise AsteriskError(
        "Found no Debian archive in /etc/apt/sources.list or "
        "/etc/apt/sources.list.d/, so debootstrap has no mirror; set "
        "SOMVAD_DEBIAN_MIRROR to the Debian mirror URL apt should use."
    )


def _parse_deb822(text: str) -> list[tuple[str, list[str]]]:
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        values: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            values[key.strip().lower()] = value.strip()
        if "deb" not in values.get("types", "").split():
            continue
        if values.get("enabled", "yes").lower() == "no":
            continue
        suites = values.get("suites", "").split()
        entries += [(uri, suites) for uri in values.get("uris", "").split()]
    return entries


def _parse_one_line(text: str) -> list[tuple[str, list[str]]]:
    entries = []
    for line in text.splitlines():
        # Drop comments and "[arch=... signed-by=...]" options.
        words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


def _remove_stale_builds(cache_dir: Path, log: Log) -> None:
    for stale in cache_dir.glob(BUILD_PREFIX + "*"):
        log(f"  removing unfinished build {stale}")
        _discard_build(stale, log)


def _discard_build(path: Path, log: Log) -> None:
    """Delete a half-built root, but never through a mount into the host."""
    remaining = _unmount_under(path)
    if remaining:
        log(f"  leaving {path}: still mounted at {', '.join(remaining)}")
        return
    shutil.rmtree(path, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4]
            # mountinfo escapes space, tab, newline and backslash as octal.
            point = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), point)
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=len, reverse=True)


def _unmount_under(path: Path) -> list[str]:
    """Unmount everything below path; return what is still mounted."""
    for point in _mounts_under(path):
        result = subprocess.run(["umount", point], capture_output=True, check=False)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return _mounts_under(path)


def _ensure_mounts(root: Path, log: Log) -> None:
    """Bind-mount /dev and /proc into the root unless they already are."""
    mounted = set(_mounts_under(root))
    for name in ("dev", "proc"):
        target = root / name
        if str(target) in mounted:
            continue
        target.mkdir(exist_ok=True)
        log(f"  bind-mounting /{name} into the root")
        _run(["mount", "--bind", f"/{name}", str(target)], f"mount /{name}", 30.0)


def _release_mounts(root: Path, log: Log) -> None:
    """Unmount /dev and /proc from the root once no process runs inside it.

    A root with the host's /dev bound into it is dangerous to delete, so the
    mounts live only as long as some instance runs there.
    """
    if _processes_in_root(root):
        return
    for name in ("proc", "dev"):
        target = str(root / name)
        # A mount may be stacked if someone mounted by hand; peel them all.
        for _ in range(5):
            if target not in _mounts_under(root):
                break
            log(f"  unmounting /{name} from the root")
            subprocess.run(["umount", target], capture_output=True, check=False)


def _mounts_lock(
    instance: AsteriskInstance, log: Log
) -> contextlib.AbstractContextManager[None]:
    """Serialises mounting and unmounting between instances of one root."""
    path = instance.cache_dir.resolve() / ".mounts.lock"
    return _file_lock(path, log, "another instance changes the root's mounts")


def _processes_in_root(root: Path) -> list[int]:
    pids = []
    resolved = str(root.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "root") == resolved:
                pids.append(int(entry.name))
    return pids


# ------------------------------------------------------------ instance files


def _load_or_create_secrets(instance: AsteriskInstance) -> dict[str, str]:
    """ARI and AMI secrets, generated on the first `up` and kept after."""
    path = _state_dir(instance) / "credentials.json"
    saved = _read_json(path)
    if all(saved.get(key) for key in ("ari_password", "ami_password")):
        return {key: str(value) for key, value in saved.items()}
    fresh = {
        "ari_username": "somvad",
        "ari_password": secrets.token_urlsafe(24),
        "ami_username": "somvad",
        "ami_password": secrets.token_urlsafe(24),
    }
    _write_private_json(path, fresh)
    return fresh


def _prepare_instance(
    instance: AsteriskInstance, layout: _Layout, secrets_: Mapping[str, str]
) -> None:
    """Create the instance folders and render its config into them."""
    base = layout.instance_dir
    dirs = {key: base / key.removesuffix("_dir") for key in _DIR_KEYS}
    for path in dirs.values():
        layout.host(path).mkdir(parents=True, exist_ok=True)
        os.chmod(layout.host(path), 0o750)

    mod_dir, data_dir = _render_module().package_dirs(layout.root)
    values = {key: str(path) for key, path in dirs.items()}
    values.update(
        db_dir=str(dirs["lib_dir"]),
        mod_dir=mod_dir,
        data_dir=data_dir,
        http_bind="127.0.0.1",
        http_port=str(instance.http_port),
        sip_host=instance.sip_host,
        sip_port=str(instance.sip_port),
        rtp_start=str(instance.rtp_start),
        rtp_end=str(instance.rtp_end),
        ami_bind="127.0.0.1",
        ami_port=str(instance.ami_port),
        ami_permit="127.0.0.0/255.0.0.0",
        ari_app=instance.ari_app,
        ari_username=secrets_["ari_username"],
        ari_password=secrets_["ari_password"],
        ami_username=secrets_["ami_username"],
        ami_password=secrets_["ami_password"],
    )
    etc = layout.host(dirs["etc_dir"])
    _render_module().render_all(values, etc)
    layout.host(dirs["lib_dir"] / "keys").mkdir(exist_ok=True)
    packaged = layout.host(PurePosixPath("/etc/asterisk"))
    for name in PACKAGED_CONFIGS:
        if (packaged / name).is_file():
            shutil.copyfile(packaged / name, etc / name)

    settings = {key: getattr(instance, key) for key in SAVED_FIELDS}
    _write_private_json(_state_dir(instance) / "instance.json", settings)


_DIR_KEYS = ("etc_dir", "run_dir", "log_dir", "spool_dir", "lib_dir")
# Package defaults that core modules read at start and that carry no policy
# (tone tables, empty ACLs); copied so that the log is not full of errors
# about missing files. Everything SOMVAD decides comes from asterisk-config/.
PACKAGED_CONFIGS = (
    "acl.conf",
    "ccss.conf",
    "chan_websocket.conf",
    "codecs.conf",
    "features.conf",
    "indications.conf",
    "pjproject.conf",
    "pjsip_notify.conf",
    "res_http_media_cache.conf",
    "stasis.conf",
    "udptl.conf",
    "websocket_client.conf",
)


@cache
def _render_module() -> ModuleType:
    """asterisk-config/render.py, shared with the container entrypoint."""
    path = CONFIG_DIR / "render.py"
    spec = importlib.util.spec_from_file_location("somvad_asterisk_render", path)
    if spec is None or spec.loader is None:
        raise AsteriskError(f"cannot load the config renderer {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_same_settings(instance: AsteriskInstance) -> None:
    saved = _read_json(_state_dir(instance) / "instance.json")
    wanted = {key: getattr(instance, key) for key in SAVED_FIELDS}
    changed = [
        key for key in SAVED_FIELDS if key in saved and saved[key] != wanted[key]
    ]
    if changed:
        raise AsteriskError(
            f"Asterisk {instance.name!r} is running with other settings "
            f"({', '.join(changed)}); run `somvad asterisk down --instance "
            f"{instance.name}` first to restart it with the new ones."
        )


def _check_ports_free(instance: AsteriskInstance) -> None:
    """Fail early and clearly when another program holds the TCP ports."""
    for port, what in ((instance.http_port, "ARI/HTTP"), (instance.ami_port, "AMI")):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise AsteriskError(
                    f"Port 127.0.0.1:{port} ({what}) is already in use by another "
                    f"program; stop it or choose another port "
                    f"({ENV_FIELDS['http_port' if what != 'AMI' else 'ami_port']})."
                )


def _finish_up(
    instance: AsteriskInstance, secrets_: Mapping[str, str], version: str
) -> AsteriskCredentials:
    saved = dict(secrets_)
    saved["version"] = version
    _write_private_json(_state_dir(instance) / "credentials.json", saved)
    return _credentials_from(instance, saved, version)


def _credentials_from(
    instance: AsteriskInstance, saved: Mapping[str, object], version: str
) -> AsteriskCredentials:
    return AsteriskCredentials(
        ari_url=instance.ari_url,
        ari_username=str(saved["ari_username"]),
        ari_password=str(saved["ari_password"]),
        ami_host="127.0.0.1",
        ami_port=instance.ami_port,
        ami_username=str(saved["ami_username"]),
        ami_password=str(saved["ami_password"]),
        sip_host=instance.sip_host,
        sip_port=instance.sip_port,
        version=version,
    )


# --------------------------------------------------------- process lifecycle


def _start(instance: AsteriskInstance, layout: _Layout) -> subprocess.Popen[bytes]:
    """Start Asterisk in the foreground of its own session, detached from ours."""
    console = _state_dir(instance) / "console.log"
    with open(console, "ab") as out:
        proc = subprocess.Popen(
            # -f: stay in the foreground so the pid is Asterisk's own;
            # -n: no colour codes in the console output file.
            layout.command("-f", "-n"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=CLEAN_ENV,
            start_new_session=True,
        )
    (_state_dir(instance) / "asterisk.pid").write_text(f"{proc.pid}\n")
    return proc


def _wait_for_ari(
    instance: AsteriskInstance,
    layout: _Layout,
    secrets_: Mapping[str, str],
    pid: int,
    proc: subprocess.Popen[bytes] | None,
    deadline_s: float,
) -> str:
    """Poll GET /ari/asterisk/info until it answers 200; return the version."""
    deadline = time.monotonic() + deadline_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            raise AsteriskError(
                f"Asterisk {instance.name!r} exited during start-up. Check the "
                f"ports ({instance.http_port}, {instance.sip_port}/udp, "
                f"{instance.ami_port}) and the modules named in the log."
                + _tails(instance)
            )
        try:
            info = _ari_get(instance, secrets_, "/ari/asterisk/info")
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise AsteriskError(
                    f"ARI on {instance.ari_url} rejects the saved credentials; "
                    "another Asterisk may hold the port. Run `somvad asterisk "
                    f"down --instance {instance.name}` and check the port."
                ) from exc
            last_error = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            last_error = str(exc)
        else:
            system = info.get("system")
            if isinstance(system, dict):
                return str(system.get("version", "unknown"))
            return "unknown"
        time.sleep(POLL_INTERVAL)

    if proc is not None:
        _stop(layout, pid, lambda _msg: None)
    raise AsteriskError(
        f"Asterisk {instance.name!r} did not answer {instance.ari_url}"
        f"/ari/asterisk/info within {deadline_s:.0f}s ({last_error}). Check "
        "that res_ari and res_http_websocket loaded and http.conf is enabled."
        + _tails(instance)
    )


def _ari_get(
    instance: AsteriskInstance, secrets_: Mapping[str, str], path: str
) -> dict[str, object]:
    token = base64.b64encode(
        f"{secrets_['ari_username']}:{secrets_['ari_password']}".encode()
    ).decode()
    request = urllib.request.Request(
        instance.ari_url + path, headers={"Authorization": f"Basic {token}"}
    )
    # No proxy handler: loopback requests must never go through a proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=2.0) as response:
        data = json.loads(response.read().decode())
    if not isinstance(data, dict):
        raise ValueError("unexpected /asterisk/info body")
    return data


def _running_pid(instance: AsteriskInstance, layout: _Layout) -> int | None:
    """The pid of this instance's Asterisk if it runs, from either pid file."""
    candidates = [
        _state_dir(instance) / "asterisk.pid",
        layout.host(layout.instance_dir / "run" / "asterisk.pid"),
    ]
    for path in candidates:
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid) and _is_our_asterisk(pid, layout):
            return pid
    return None


def _pid_alive(pid: int) -> bool:
    """True while any thread of pid runs; reaps it first if it is our child.

    The main thread of a stopping Asterisk can turn zombie while its other
    threads still hold the ARI and SIP sockets, so every thread counts.
    """
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        # The state letter follows the parenthesised command name.
        if stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
            return True
    return False


def _is_our_asterisk(pid: int, layout: _Layout) -> bool:
    """Guards against a recycled pid: the command line names our config."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(layout.conf).encode() in argv and any(
        arg.endswith(b"asterisk") for arg in argv
    )


def _stop(layout: _Layout, pid: int, log: Log) -> None:
    """Ask Asterisk to stop, then escalate to SIGTERM and SIGKILL."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            layout.command("-rx", "core stop now"),
            capture_output=True,
            timeout=15,
            env=CLEAN_ENV,
            check=False,
        )
    if _wait_exit(pid, STOP_DEADLINE):
        return
    log(f"  Asterisk pid {pid} ignored `core stop now`; sending SIGTERM")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_exit(pid, 10.0):
        return
    log(f"  Asterisk pid {pid} ignored SIGTERM; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_exit(pid, 10.0):
        raise AsteriskError(f"Asterisk pid {pid} survived SIGKILL; check `ps {pid}`")


def _wait_exit(pid: int, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(POLL_INTERVAL)
    return not _pid_alive(pid)


# ------------------------------------------------------------------- helpers


def _run(cmd: list[str], what: str, timeout: float) -> str:
    """Run a build step; on failure raise AsteriskError with its last lines."""
    env = dict(CLEAN_ENV, DEBIAN_FRONTEND="noninteractive")
    try:
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AsteriskError(f"{what} took longer than {timeout:.0f}s") from exc
    except OSError as exc:
        raise AsteriskError(f"{what} could not run: {exc}") from exc
    output = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-LOG_TAIL_LINES:])
        raise AsteriskError(
            f"{what} failed (exit {result.returncode}). Check the network "
            f"access to the Debian mirror and free disk space.\n{tail}"
        )
    return output


def _tails(instance: AsteriskInstance) -> str:
    """The last lines of the full log and of the console output."""
    text = ""
    for path in (log_path(instance), _state_dir(instance) / "console.log"):
        lines = _tail(path, LOG_TAIL_LINES)
        if lines:
            text += f"\n--- last lines of {path}:\n" + "\n".join(lines)
    return text or "\n(no log written; the config may not have been read)"


def _tail(path: Path, count: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            data = handle.read().decode(errors="replace")
    except OSError:
        return []
    return data.splitlines()[-count:]


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_private_json(path: Path, data: Mapping[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


@contextlib.contextmanager
def _file_lock(path: Path, log: Log, busy: str) -> Iterator[None]:
    """Hold an exclusive flock on path, waiting at most LOCK_DEADLINE."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + LOCK_DEADLINE
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise AsteriskError(f"{busy}: gave up waiting for {path}") from exc
                if not told:
                    log(f"Waiting: {busy}")
                    told = True
                time.sleep(POLL_INTERVAL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
