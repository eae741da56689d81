"""Kafka security settings: from environment variables to librdkafka and Faust credentials,
contradictions as clear errors, secrets never printed."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import faust
import pytest
from faust.types.auth import AuthProtocol, SASLMechanism

from app.kafka import config as kafka_config
from app.kafka.check import reason_of, refusal
from app.kafka.redaction import install, redact, secret_values
from app.kafka.security import (
    SecurityConfigError,
    faust_credentials,
    security_of,
    ssl_context,
)
from app.settings import Settings
from tests.tls_certs import write_tls_dir

PASSWORD = "pw-Zq8!unit-secret"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tls_dir(tmp_path_factory.mktemp("tls"))


def sasl_settings(tls: Path, **extra: object) -> Settings:
    return Settings(kafka_bootstrap_servers="127.0.0.1:1", kafka_security_protocol="SASL_SSL",
                    kafka_ssl_cafile=tls / "ca.crt", kafka_sasl_username="recovery",
                    kafka_sasl_password=PASSWORD, **extra)


def test_plaintext_adds_nothing_but_the_bootstrap_address() -> None:
    settings = Settings(kafka_bootstrap_servers="h:9")
    assert kafka_config.common_config(settings) == {"bootstrap.servers": "h:9"}
    assert faust_credentials(security_of(settings)) is None


def test_environment_variables_configure_sasl_ssl_for_every_client(tls, monkeypatch) -> None:
    monkeypatch.setenv("RECOVERY_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("RECOVERY_KAFKA_SSL_CAFILE", str(tls / "ca.crt"))
    monkeypatch.setenv("RECOVERY_KAFKA_SASL_USERNAME", "recovery")
    monkeypatch.setenv("RECOVERY_KAFKA_SASL_PASSWORD", PASSWORD)
    settings = Settings()
    expected = {"security.protocol": "SASL_SSL", "ssl.ca.location": str(tls / "ca.crt"),
                "ssl.endpoint.identification.algorithm": "https",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "recovery",
                "sasl.password": PASSWORD}
    for config in (kafka_config.common_config(settings), kafka_config.admin_config(settings),
                   kafka_config.producer_config(settings),
                   kafka_config.consumer_config(settings, "g")):
        assert expected.items() <= config.items()


def test_mutual_tls_sends_the_client_certificate(tls) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tls / "ca.crt",
                        kafka_ssl_certfile=tls / "client.crt",
                        kafka_ssl_keyfile=tls / "client.key", kafka_ssl_check_hostname=False)
    config = kafka_config.common_config(settings)
    assert config["security.protocol"] == "SSL"
    assert config["ssl.certificate.location"] == str(tls / "client.crt")
    assert config["ssl.key.location"] == str(tls / "client.key")
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    assert not any(key.startswith("sasl.") for key in config)
    credentials = faust_credentials(security_of(settings))
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol is AuthProtocol.SSL
    assert credentials.context.check_hostname is False
    assert credentials.context.verify_mode is ssl.CERT_REQUIRED


def test_faust_gets_scram_credentials_over_tls(tls) -> None:
    credentials = faust_credentials(security_of(sasl_settings(tls)))
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    assert (credentials.username, credentials.password) == ("recovery", PASSWORD)
    assert credentials.ssl_context.check_hostname is True
    assert PASSWORD not in repr(credentials)


def test_ssl_context_verifies_the_broker_with_the_configured_ca(tls) -> None:
    context = ssl_context(security_of(sasl_settings(tls)))
    [ca] = context.get_ca_certs()
    assert dict(entry[0] for entry in ca["subject"])["commonName"] == "recovery test CA"


def test_bootstrap_only_callers_keep_the_security_settings(tls) -> None:
    moved = kafka_config.for_bootstrap("other:1", sasl_settings(tls))
    config = kafka_config.common_config(moved)
    assert config["bootstrap.servers"] == "other:1"
    assert config["sasl.password"] == PASSWORD


@pytest.mark.parametrize(("fields", "named"), [
    ({"kafka_security_protocol": "TLS"}, "RECOVERY_KAFKA_SECURITY_PROTOCOL must be one of"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
     "needs RECOVERY_KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": "p" * 8},
     "needs RECOVERY_KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p" * 8, "kafka_sasl_mechanism": "GSSAPI"},
     "RECOVERY_KAFKA_SASL_MECHANISM must be one of"),
    ({"kafka_sasl_username": "u", "kafka_sasl_password": "p" * 8},
     "SECURITY_PROTOCOL is PLAINTEXT; use SASL_SSL"),
    ({"kafka_ssl_cafile": Path("/x/ca.crt")}, "SSL_CAFILE set but"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": Path("/nowhere/ca.crt")},
     "RECOVERY_KAFKA_SSL_CAFILE: no such file /nowhere/ca.crt"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": Path("/x/client.crt")},
     "SSL_CERTFILE and RECOVERY_KAFKA_SSL_KEYFILE go together"),
])
def test_contradictions_name_the_variable_to_fix(fields, named) -> None:
    with pytest.raises(SecurityConfigError, match=named.replace(".", r"\.")) as raised:
        kafka_config.common_config(Settings(**fields))
    assert "p" * 8 not in str(raised.value)


def test_empty_variables_count_as_unset(monkeypatch) -> None:
    monkeypatch.setenv("RECOVERY_KAFKA_SSL_CAFILE", "")
    monkeypatch.setenv("RECOVERY_KAFKA_SASL_PASSWORD", "")
    assert kafka_config.common_config(Settings(kafka_bootstrap_servers="h:1")) == {
        "bootstrap.servers": "h:1"}


def test_secrets_never_print(tls) -> None:
    settings = sasl_settings(tls, kafka_ssl_key_password="key-pass-123")
    security = security_of(settings)
    for shown in (repr(settings), str(settings), repr(security), security.describe(),
                  settings.model_dump_json()):
        assert PASSWORD not in shown and "key-pass-123" not in shown
    assert security.describe() == "SASL_SSL, SCRAM-SHA-512, user recovery"


AUTH_TEXT = ("sasl_ssl://127.0.0.1:44592/bootstrap: SASL authentication error: Authentication "
             "failed during authentication due to invalid credentials with SASL mechanism "
             "SCRAM-SHA-512 (after 316ms in state AUTH_REQ)")


def test_a_refused_password_is_one_line_naming_authentication(tls) -> None:
    security = security_of(sasl_settings(tls))
    line = refusal([("_AUTHENTICATION", AUTH_TEXT), ("_ALL_BROKERS_DOWN", "1/1 down")],
                   "127.0.0.1:44592", security)
    assert line is not None and "\n" not in line
    assert line.startswith("authentication failed at 127.0.0.1:44592 "
                           "(SASL_SSL, SCRAM-SHA-512, user recovery): SASL authentication error")
    assert "(after" not in line and "sasl_ssl://" not in line and PASSWORD not in line


def test_tls_refusals_point_at_the_certificate_settings(tls) -> None:
    security = security_of(sasl_settings(tls))
    untrusted = refusal([("_SSL", "ssl://h:1/bootstrap: SSL handshake failed: certificate "
                                  "verify failed (after 4ms in state SSL_HANDSHAKE)")],
                        "h:1", security)
    assert untrusted == ("TLS handshake with h:1 failed: SSL handshake failed: certificate "
                         "verify failed; check RECOVERY_KAFKA_SSL_CAFILE")
    rejected = refusal([("_TRANSPORT", "ssl://h:1/bootstrap: Receive failed: ssl/tls alert "
                                       "bad certificate: SSL alert number 42")], "h:1", security)
    assert rejected is not None and "refused the TLS client certificate" in rejected
    # Nothing listening is not a refusal: the caller keeps trying until its timeout.
    assert refusal([("_TRANSPORT", "h:1/bootstrap: Connect to ipv4#h:1 failed: Connection "
                                   "refused (after 0ms in state CONNECT)")], "h:1",
                   security) is None


def test_reason_of_strips_broker_prefix_and_timing() -> None:
    assert reason_of("ssl://127.0.0.1:1/2: x failed (after 3ms in state APIVERSION_QUERY)") \
        == "x failed"


def test_log_records_have_secrets_masked(tls, caplog) -> None:
    settings = sasl_settings(tls, object_store_signing_key="signing-key-xyz")
    assert set(secret_values(settings)) == {PASSWORD, "signing-key-xyz"}
    assert redact(f"a {PASSWORD} b", [PASSWORD]) == "a *** b"
    install(settings)
    log = logging.getLogger("tests.redaction")
    with caplog.at_level(logging.INFO, logger="tests.redaction"):
        log.info("connecting with %s and %r", PASSWORD, {"k": "signing-key-xyz"})
        try:
            raise RuntimeError(f"bad password {PASSWORD}")
        except RuntimeError:
            log.exception("failed")
    text = caplog.text
    assert PASSWORD not in text and "signing-key-xyz" not in text
    assert "connecting with *** and {'k': '***'}" in text
    assert "RuntimeError: bad password ***" in text
    # Formatted once: a formatter that formats args again (mode's does) finds none left.
    [record] = [r for r in caplog.records if r.getMessage().startswith("connecting")]
    assert record.args == () and record.getMessage() == record.msg
