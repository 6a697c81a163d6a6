"""Settings of the control plane, read once from the environment.

Every variable is documented in the README's configuration table. Secrets
have no default that works off loopback: the JWT key is generated per
install, and the default admin password is refused when the API listens on
anything but a loopback address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ADMIN_PASSWORD = "somvad-admin"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which variable."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() not in {"0", "false", "no", "off"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_config_file() -> None:
    """Fill unset variables from SOMVAD_CONFIG_FILE (a JSON object)."""
    path = os.environ.get("SOMVAD_CONFIG_FILE")
    if not path:
        return
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"SOMVAD_CONFIG_FILE {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"SOMVAD_CONFIG_FILE {path} must hold a JSON object")
    for key, value in values.items():
        os.environ.setdefault(str(key), str(value))


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("/var/lib/somvad")
    database_url: str = ""
    jwt_secret: str = field(default="", repr=False)
    jwt_issuer: str = "somvad"
    jwt_audience: str = "somvad-api"
    access_token_ttl: int = 900
    refresh_token_ttl: int = 86400
    admin_username: str = "admin"
    admin_password: str = field(default=DEFAULT_ADMIN_PASSWORD, repr=False)
    demo: bool = True
    max_body_bytes: int = 64 * 1024
    asterisk_instance: str = "default"
    manage_asterisk: bool = True
    ari_url: str = ""
    ari_username: str = ""
    ari_password: str = field(default="", repr=False)
    ari_app: str = "somvad"
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = ""
    ami_password: str = field(default="", repr=False)
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    sip_domain: str = ""
    ring_timeout: int = 30
    log_level: str = "INFO"

    @property
    def registrar(self) -> str:
        return f"sip:{self.sip_host}:{self.sip_port}"

    @property
    def effective_sip_domain(self) -> str:
        return self.sip_domain or self.sip_host

    @classmethod
    def from_env(cls) -> Settings:
        _load_config_file()
        data_dir = Path(_env("SOMVAD_DATA_DIR", "/var/lib/somvad"))
        settings = cls(
            host=_env("SOMVAD_HOST", "127.0.0.1"),
            port=_env_int("SOMVAD_PORT", 8080),
            data_dir=data_dir,
            database_url=_env(
                "SOMVAD_DATABASE_URL", f"sqlite+aiosqlite:///{data_dir}/somvad.db"
            ),
            jwt_secret=_env("SOMVAD_JWT_SECRET", ""),
            access_token_ttl=_env_int("SOMVAD_ACCESS_TOKEN_TTL", 900),
            refresh_token_ttl=_env_int("SOMVAD_REFRESH_TOKEN_TTL", 86400),
            admin_username=_env("SOMVAD_ADMIN_USERNAME", "admin"),
            admin_password=_env("SOMVAD_ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD),
            demo=_env_bool("SOMVAD_DEMO", True),
            max_body_bytes=_env_int("SOMVAD_MAX_BODY_BYTES", 64 * 1024),
            asterisk_instance=_env("SOMVAD_ASTERISK_INSTANCE", "default"),
            manage_asterisk=_env_bool("SOMVAD_MANAGE_ASTERISK", True),
            ari_url=_env("SOMVAD_ARI_URL", ""),
            ari_username=_env("SOMVAD_ARI_USERNAME", ""),
            ari_password=_env("SOMVAD_ARI_PASSWORD", ""),
            ari_app=_env("SOMVAD_ARI_APP", "somvad"),
            ami_host=_env("SOMVAD_AMI_HOST", "127.0.0.1"),
            ami_port=_env_int("SOMVAD_AMI_PORT", 5038),
            ami_username=_env("SOMVAD_AMI_USERNAME", ""),
            ami_password=_env("SOMVAD_AMI_PASSWORD", ""),
            sip_host=_env("SOMVAD_SIP_HOST", "127.0.0.1"),
            sip_port=_env_int("SOMVAD_SIP_PORT", 5060),
            sip_domain=_env("SOMVAD_SIP_DOMAIN", ""),
            ring_timeout=_env_int("SOMVAD_RING_TIMEOUT", 30),
            log_level=_env("SOMVAD_LOG_LEVEL", "INFO").upper(),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.admin_password == DEFAULT_ADMIN_PASSWORD and not is_loopback(self.host):
            raise ConfigError(
                "SOMVAD_ADMIN_PASSWORD must be set when SOMVAD_HOST is not a "
                "loopback address; the default password only works on loopback"
            )
        if len(self.admin_password) < 8:
            raise ConfigError("SOMVAD_ADMIN_PASSWORD must have 8 or more characters")
        if self.jwt_secret and len(self.jwt_secret) < 32:
            raise ConfigError("SOMVAD_JWT_SECRET must have 32 or more characters")
        if not 1 <= self.port <= 65535:
            raise ConfigError("SOMVAD_PORT must be between 1 and 65535")


def load_or_create_secret(path: Path) -> str:
    """The per-install JWT key: generated on first start, then kept (mode 0600)."""
    if path.exists():
        path.chmod(0o600)
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret
