"""How every agentwatch Kafka client authenticates: one set of environment variables.

The producer, the worker, the sink, the webhook dispatcher, the OTLP receiver and the CLI
read the same variables (a broker that requires SASL_SSL needs them in every process)::

    KAFKA_SECURITY_PROTOCOL  PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
    KAFKA_SASL_MECHANISM     PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default with SASL)
    KAFKA_SASL_USERNAME      required with SASL
    KAFKA_SASL_PASSWORD      required with SASL (never printed)
    KAFKA_SSL_CAFILE         PEM file of the CA(s) to trust (default: the system's)
    KAFKA_SSL_CERTFILE       client certificate (PEM), for brokers that require mTLS
    KAFKA_SSL_KEYFILE        its private key (PEM; default: in the certificate file)
    KAFKA_SSL_CHECK_HOSTNAME true (default) or false

A bad value raises :class:`~agentwatch.schemas.ConfigError` naming the variable. This
module needs no Kafka library: it builds the ``ssl.SSLContext`` with the standard
library, and :meth:`KafkaSecurity.client_options` gives the keyword arguments that
aiokafka's clients take (faust's are made from the same values by the worker).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agentwatch.schemas.errors import ConfigError
from agentwatch.schemas.settings import load

__all__ = [
    "KAFKA_SECURITY_ENV_VARS",
    "PROTOCOLS",
    "SASL_MECHANISMS",
    "KafkaSecurity",
    "describe_auth_failure",
    "explain_connect_failure",
]

PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: setting -> environment variable
KAFKA_SECURITY_ENV_VARS: Final[dict[str, str]] = {
    "protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "username": "KAFKA_SASL_USERNAME",
    "password": "KAFKA_SASL_PASSWORD",
    "ssl_cafile": "KAFKA_SSL_CAFILE",
    "ssl_certfile": "KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "KAFKA_SSL_KEYFILE",
    "ssl_check_hostname": "KAFKA_SSL_CHECK_HOSTNAME",
}


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Security settings of one Kafka client; the default is PLAINTEXT, no credentials.

    ``repr`` never shows the password.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        env = KAFKA_SECURITY_ENV_VARS
        # names are case-insensitive: sasl_ssl, scram-sha-256
        object.__setattr__(self, "protocol", self.protocol.upper())
        object.__setattr__(self, "sasl_mechanism", self.sasl_mechanism.upper())
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"{env['protocol']}: {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"{env['sasl_mechanism']}: {self.sasl_mechanism!r} is not one of "
                              f"{', '.join(SASL_MECHANISMS)}")
        if self.uses_sasl:
            for name in ("username", "password"):
                if not getattr(self, name):
                    raise ConfigError(
                        f"{env[name]}: required with {env['protocol']}={self.protocol}")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{env[name]}: no such file: {path}")

    def __repr__(self) -> str:
        secret = "***" if self.password else None
        return (f"KafkaSecurity(protocol={self.protocol!r}, sasl_mechanism="
                f"{self.sasl_mechanism!r}, username={self.username!r}, password={secret!r}, "
                f"ssl_cafile={self.ssl_cafile!r})")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in {"SSL", "SASL_SSL"}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """The settings from ``KAFKA_*`` variables (unset or empty: the default)."""
        # errors of __post_init__ name the variables themselves (the settings have no CLI
        # options); load() names the variable of a value that is not true or false
        return load(cls, KAFKA_SECURITY_ENV_VARS, env)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL/SASL_SSL (None otherwise); bad files name their variable."""
        if not self.uses_ssl:
            return None
        env = KAFKA_SECURITY_ENV_VARS
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{env['ssl_cafile']}: not a PEM CA file ({exc})") from None
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"{env['ssl_certfile']}: certificate or key not usable ({exc})") from None
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password
        return options


def describe_auth_failure(security: KafkaSecurity, exc: BaseException) -> str | None:
    """One line naming the settings to check when ``exc`` is a failed TLS handshake or SASL
    authentication; None when it is something else (e.g. a broker that is down)."""
    env = KAFKA_SECURITY_ENV_VARS
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        text = str(current)
        if "Sasl" in name or "Authentication" in name or "SASL" in text:
            return (f"Kafka refused the credentials of {env['username']}="
                    f"{security.username!r} ({security.sasl_mechanism}): check "
                    f"{env['password']} and {env['sasl_mechanism']} ({name}: {text})")
        if isinstance(current, ssl.SSLError):
            return (f"TLS handshake with Kafka failed: check {env['ssl_cafile']} and "
                    f"{env['protocol']}={security.protocol} ({current})")
        current = current.__cause__ or current.__context__
    return None


async def explain_connect_failure(
    bootstrap_servers: str, security: KafkaSecurity, *, timeout_s: float = 10.0
) -> str | None:
    """After a client could not bootstrap: connect once to each bootstrap address as the
    client does and return one line naming the settings to fix when TLS or SASL is the
    cause; None when it is not (the broker is down, or the failure passed).

    aiokafka's clients only log the cause and raise "Unable to bootstrap", so this asks
    again with one connection (aiokafka is imported here, lazily: only the distributions
    that talk to Kafka call this, and they depend on it).
    """
    from aiokafka.conn import create_conn  # noqa: PLC0415 (see above)

    options = security.client_options()
    for address in bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            continue
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **options),
                timeout_s,
            )
        except Exception as exc:  # noqa: BLE001 (any failure: is it one we can name?)
            described = describe_auth_failure(security, exc)
            if described is not None:
                return described
            continue
        conn.close()
    return None
