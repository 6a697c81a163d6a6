"""Render SOMVAD's Asterisk configuration templates.

Every ``*.conf.in`` file beside this script is a :class:`string.Template`; it is
rendered to ``<name>.conf`` in a target folder. Two callers share this code:

* ``app/asterisk_host.py`` loads this file by path and calls :func:`render_all`
  with the values of one loopback instance (per-instance folders inside the
  Debian root, generated ARI and AMI secrets);
* the mixer container runs it as its entrypoint step, taking the values from
  ``SOMVAD_*`` environment variables::

      python3 /opt/somvad/asterisk-config/render.py /etc/asterisk

Templates write a literal dollar sign as ``$$`` (``$${EXTEN}`` in
extensions.conf), as :class:`string.Template` requires.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from string import Template

TEMPLATE_DIR = Path(__file__).resolve().parent
TEMPLATE_SUFFIX = ".in"

# Every key a template may use; render_all refuses a mapping that lacks one so
# that a missing value fails at render time rather than as a broken config.
KEYS = (
    "etc_dir",
    "run_dir",
    "log_dir",
    "spool_dir",
    "lib_dir",
    "db_dir",
    "mod_dir",
    "data_dir",
    "http_bind",
    "http_port",
    "sip_host",
    "sip_port",
    "rtp_start",
    "rtp_end",
    "ami_bind",
    "ami_port",
    "ami_permit",
    "ari_app",
    "ari_username",
    "ari_password",
    "ami_username",
    "ami_password",
)


def template_names(template_dir: Path = TEMPLATE_DIR) -> list[str]:
    """Names of the config files that the templates produce, sorted."""
    return sorted(
        path.name.removesuffix(TEMPLATE_SUFFIX)
        for path in template_dir.glob("*.conf" + TEMPLATE_SUFFIX)
    )


def render_all(
    values: Mapping[str, str],
    out_dir: Path,
    template_dir: Path = TEMPLATE_DIR,
    mode: int = 0o600,
) -> list[Path]:
    """Render every template into ``out_dir`` and return the written paths.

    Files are written with ``mode`` (0600 by default) because ari.conf and
    manager.conf carry secrets.
    """
    missing = [key for key in KEYS if key not in values]
    if missing:
        raise KeyError("missing template values: " + ", ".join(missing))

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in template_names(template_dir):
        source = (template_dir / (name + TEMPLATE_SUFFIX)).read_text()
        text = Template(source).substitute(values)
        target = out_dir / name
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        tmp.replace(target)
        written.append(target)
    return written


def package_dirs(root: Path = Path("/")) -> tuple[str, str]:
    """Return (astmoddir, astdatadir) of the Asterisk package installed in root.

    Debian puts modules under a multiarch folder, a source build under
    /usr/lib/asterisk/modules; the packaged asterisk.conf says which, and the
    folders on disk are the fallback.
    """
    found: dict[str, str] = {}
    conf = root / "etc/asterisk/asterisk.conf"
    if conf.is_file():
        for line in conf.read_text(errors="replace").splitlines():
            key, sep, value = line.partition("=>")
            key = key.strip().lstrip(";")
            if sep and key in ("astmoddir", "astdatadir") and not line.startswith(";"):
                found[key] = value.split(";")[0].strip()

    if "astmoddir" not in found:
        candidates = sorted(root.glob("usr/lib/*/asterisk/modules"))
        candidates.append(root / "usr/lib/asterisk/modules")
        for candidate in candidates:
            if candidate.is_dir():
                found["astmoddir"] = "/" + str(candidate.relative_to(root))
                break
    if "astdatadir" not in found:
        shared = root / "usr/share/asterisk"
        found["astdatadir"] = (
            "/usr/share/asterisk" if shared.is_dir() else ("/var/lib/asterisk")
        )
    if "astmoddir" not in found:
        raise FileNotFoundError(f"no Asterisk modules folder under {root}")
    return found["astmoddir"], found["astdatadir"]


def values_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Template values for a container: standard Debian folders plus SOMVAD_*.

    Secrets have no default: the container refuses to start without them.
    """
    for secret in ("SOMVAD_ARI_PASSWORD", "SOMVAD_AMI_PASSWORD"):
        if not environ.get(secret):
            raise KeyError(f"set {secret} for the Asterisk container")
    mod_dir, data_dir = package_dirs()
    return {
        "etc_dir": "/etc/asterisk",
        "run_dir": "/var/run/asterisk",
        "log_dir": "/var/log/asterisk",
        "spool_dir": "/var/spool/asterisk",
        "lib_dir": "/var/lib/asterisk",
        "db_dir": "/var/lib/asterisk",
        "mod_dir": mod_dir,
        "data_dir": data_dir,
        # Other containers reach ARI and AMI over the compose network, so the
        # image binds all interfaces unless told otherwise.
        "http_bind": environ.get("SOMVAD_HTTP_BIND", "0.0.0.0"),
        "http_port": environ.get("SOMVAD_ASTERISK_HTTP_PORT", "8088"),
        "sip_host": environ.get("SOMVAD_SIP_HOST", "0.0.0.0"),
        "sip_port": environ.get("SOMVAD_SIP_PORT", "5060"),
        "rtp_start": environ.get("SOMVAD_RTP_START", "10000"),
        "rtp_end": environ.get("SOMVAD_RTP_END", "10999"),
        "ami_bind": environ.get("SOMVAD_AMI_BIND", "0.0.0.0"),
        "ami_port": environ.get("SOMVAD_AMI_PORT", "5038"),
        "ami_permit": environ.get("SOMVAD_AMI_PERMIT", "0.0.0.0/0.0.0.0"),
        "ari_app": environ.get("SOMVAD_ARI_APP", "somvad"),
        "ari_username": environ.get("SOMVAD_ARI_USERNAME", "somvad"),
        "ari_password": environ["SOMVAD_ARI_PASSWORD"],
        "ami_username": environ.get("SOMVAD_AMI_USERNAME", "somvad"),
        "ami_password": environ["SOMVAD_AMI_PASSWORD"],
    }


def main(argv: list[str]) -> int:
    """Container entrypoint step: render into argv[0] (default /etc/asterisk)."""
    out_dir = Path(argv[0]) if argv else Path("/etc/asterisk")
    try:
        values = values_from_env(os.environ)
    except (KeyError, FileNotFoundError) as exc:
        print(f"render.py: {exc.args[0]}", file=sys.stderr)
        return 2
    for path in render_all(values, out_dir):
        print(f"rendered {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
