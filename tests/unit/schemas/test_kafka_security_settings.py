"""The Kafka security settings every agentwatch client reads (KAFKA_SECURITY_PROTOCOL ...)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from agentwatch.schemas import ConfigError
from agentwatch.schemas.kafka_security import (
    KAFKA_SECURITY_ENV_VARS,
    KafkaSecurity,
    describe_auth_failure,
)

SASL = {"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD": "s3cret"}


def test_nothing_set_is_plaintext_with_no_credentials() -> None:
    security = KafkaSecurity.from_env({})
    assert security == KafkaSecurity()
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_gives_aiokafka_its_options_and_a_verifying_tls_context() -> None:
    options = KafkaSecurity.from_env(SASL | {"KAFKA_SASL_MECHANISM": "scram-sha-256"}
                                     ).client_options()
    context = options.pop("ssl_context")
    assert options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                       "sasl_plain_username": "svc", "sasl_plain_password": "s3cret"}
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_hostname_checking_can_be_turned_off_explicitly() -> None:
    security = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL",
                                       "KAFKA_SSL_CHECK_HOSTNAME": "false"})
    context = security.ssl_context()
    assert context is not None
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED  # the certificate is still verified


@pytest.mark.parametrize(("env", "named"), [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL: 'TLS' is not one of"),
    (SASL | {"KAFKA_SASL_MECHANISM": "MD5"}, "KAFKA_SASL_MECHANISM: 'MD5' is not one of"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": "x"},
     "KAFKA_SASL_USERNAME: required with KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "x"},
     "KAFKA_SASL_PASSWORD: required"),
    (SASL | {"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "KAFKA_SSL_CAFILE: no such file: /nonexistent/ca.pem"),
    ({"KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "KAFKA_SSL_CHECK_HOSTNAME: 'maybe' is not true"),
])
def test_a_bad_value_names_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KafkaSecurity.from_env(env)
    assert named in str(caught.value)


def test_a_ca_file_that_is_not_pem_names_its_variable(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    security = KafkaSecurity.from_env(SASL | {"KAFKA_SSL_CAFILE": str(bad)})
    with pytest.raises(ConfigError, match="KAFKA_SSL_CAFILE: not a PEM CA file"):
        security.client_options()


def test_the_password_never_shows_in_repr_or_in_an_auth_failure_message() -> None:
    security = KafkaSecurity.from_env(SASL)
    assert "s3cret" not in repr(security)

    wrapped = KafkaConnectionError("Unable to bootstrap")
    wrapped.__cause__ = SaslAuthenticationFailed("invalid credentials")  # what aiokafka raises
    message = describe_auth_failure(security, wrapped)
    assert message is not None
    assert "KAFKA_SASL_USERNAME='svc'" in message
    assert "KAFKA_SASL_PASSWORD" in message
    assert "s3cret" not in message
    assert describe_auth_failure(security, ConnectionRefusedError("down")) is None


def test_every_variable_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    missing = [var for var in KAFKA_SECURITY_ENV_VARS.values() if f"`{var}`" not in readme]
    assert not missing
