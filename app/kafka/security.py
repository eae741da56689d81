"""How every Kafka client authenticates: TLS and SASL settings from the environment, checked
once, then rendered for librdkafka (confluent-kafka clients) and for aiokafka (the Faust
worker). Passwords stay SecretStr until the moment a client needs them."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    import faust

    from app.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
ENV = "RECOVERY_KAFKA_"


class SecurityConfigError(ValueError):
    """The Kafka security settings contradict each other or name a missing file."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    key_password: SecretStr | None = field(default=None, repr=False)
    check_hostname: bool = True
    mechanism: str | None = None
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def describe(self) -> str:
        """For messages: protocol, mechanism and user, never a secret."""
        if self.uses_sasl:
            return f"{self.protocol}, {self.mechanism}, user {self.username}"
        if self.protocol == "SSL" and self.certfile:
            return "SSL with a client certificate"
        return self.protocol


def security_problems(security: KafkaSecurity) -> list[str]:
    """Every contradiction in the settings, as lines naming the variable to fix."""
    problems: list[str] = []
    if security.protocol not in PROTOCOLS:
        return [f"{ENV}SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, "
                f"not {security.protocol!r}"]
    if security.uses_sasl:
        if security.mechanism not in MECHANISMS:
            problems.append(f"{ENV}SASL_MECHANISM must be one of {', '.join(MECHANISMS)}, "
                            f"not {security.mechanism!r}")
        if not security.username:
            problems.append(f"{ENV}SECURITY_PROTOCOL={security.protocol} needs "
                            f"{ENV}SASL_USERNAME")
        if security.password is None:
            problems.append(f"{ENV}SECURITY_PROTOCOL={security.protocol} needs "
                            f"{ENV}SASL_PASSWORD")
    elif security.username or security.password is not None:
        problems.append(f"{ENV}SASL_USERNAME/PASSWORD are set but {ENV}SECURITY_PROTOCOL is "
                        f"{security.protocol}; use SASL_SSL to send them")
    files = {"SSL_CAFILE": security.cafile, "SSL_CERTFILE": security.certfile,
             "SSL_KEYFILE": security.keyfile}
    if not security.uses_tls:
        named = [name for name, path in files.items() if path is not None]
        if named:
            problems.append(f"{', '.join(ENV + n for n in named)} set but "
                            f"{ENV}SECURITY_PROTOCOL is {security.protocol}; use SSL or SASL_SSL")
        return problems
    if (security.certfile is None) != (security.keyfile is None):
        problems.append(f"{ENV}SSL_CERTFILE and {ENV}SSL_KEYFILE go together (a client "
                        "certificate needs its key)")
    for name, path in files.items():
        if path is not None and not path.is_file():
            problems.append(f"{ENV}{name}: no such file {path}")
    return problems


def _path(value: Path | None) -> Path | None:
    """An empty variable means unset (pydantic reads "" as the path ".")."""
    return value if value is not None and str(value) not in ("", ".") else None


def _secret(value: SecretStr | None) -> SecretStr | None:
    return value if value is not None and value.get_secret_value() else None


def security_of(settings: Settings) -> KafkaSecurity:
    """The checked security settings; a SecurityConfigError lists what is wrong."""
    protocol = (settings.kafka_security_protocol or "PLAINTEXT").strip().upper()
    sasl = protocol.startswith("SASL_")
    security = KafkaSecurity(
        protocol=protocol,
        cafile=_path(settings.kafka_ssl_cafile),
        certfile=_path(settings.kafka_ssl_certfile),
        keyfile=_path(settings.kafka_ssl_keyfile),
        key_password=_secret(settings.kafka_ssl_key_password),
        check_hostname=settings.kafka_ssl_check_hostname,
        mechanism=settings.kafka_sasl_mechanism.strip().upper() if sasl else None,
        username=settings.kafka_sasl_username or None,
        password=_secret(settings.kafka_sasl_password),
    )
    problems = security_problems(security)
    if problems:
        raise SecurityConfigError("; ".join(problems))
    return security


def librdkafka_config(security: KafkaSecurity) -> dict[str, Any]:
    """The librdkafka properties for these settings (empty for PLAINTEXT)."""
    if security.protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security.protocol": security.protocol}
    if security.uses_tls:
        optional = {"ssl.ca.location": security.cafile,
                    "ssl.certificate.location": security.certfile,
                    "ssl.key.location": security.keyfile}
        config.update({key: str(path) for key, path in optional.items() if path is not None})
        if security.key_password is not None:
            config["ssl.key.password"] = security.key_password.get_secret_value()
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if security.check_hostname else "none")
    if security.uses_sasl:
        assert security.password is not None
        config.update({"sasl.mechanism": security.mechanism,
                       "sasl.username": security.username,
                       "sasl.password": security.password.get_secret_value()})
    return config


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """The TLS context aiokafka uses: the broker verified against cafile (or the system's
    CAs), with the client certificate when one is configured."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(security.cafile) if security.cafile else None)
    if security.certfile and security.keyfile:
        context.load_cert_chain(
            str(security.certfile), str(security.keyfile),
            password=security.key_password.get_secret_value() if security.key_password else None)
    context.check_hostname = security.check_hostname
    return context


def faust_credentials(security: KafkaSecurity) -> faust.types.auth.CredentialsT | None:
    """The Faust app's broker_credentials (None for PLAINTEXT)."""
    import faust

    if security.protocol == "PLAINTEXT":
        return None
    context = ssl_context(security) if security.uses_tls else None
    if not security.uses_sasl:
        assert context is not None
        return faust.SSLCredentials(context)
    assert security.password is not None
    return faust.SASLCredentials(username=security.username,
                                 password=security.password.get_secret_value(),
                                 ssl_context=context, mechanism=security.mechanism)
