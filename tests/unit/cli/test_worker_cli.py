from click.testing import CliRunner

from app.cli.main import cli
from app.settings import get_settings


def test_a_bad_web_token_is_one_plain_line_before_any_broker_is_asked(monkeypatch):
    # No broker on this address: the check must come first, or this would hang or trace.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("RECOVERY_WEB_OPERATOR_TOKEN", "tiny")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["worker"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: RECOVERY_WEB_OPERATOR_TOKEN must be at least 16 characters")
    assert "tiny" not in line
