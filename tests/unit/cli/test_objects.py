from click.testing import CliRunner

from app.cli.main import cli
from app.settings import get_settings


def test_objects_collect_with_a_bad_store_is_one_plain_line(monkeypatch):
    monkeypatch.setenv("RECOVERY_OBJECT_STORE_URL", "http://example.invalid/bucket")
    monkeypatch.setenv("RECOVERY_OBJECT_STORE_SIGNING_KEY", "do-not-print-me")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["objects", "collect", "--dry-run"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "only file:// and s3:// are supported" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "do-not-print-me" not in result.output
