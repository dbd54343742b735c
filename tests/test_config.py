"""Settings: flags beat environment variables, which beat the config file, which beats defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmstation.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SWARMSTATION_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_settings(data_dir=Path("/nonexistent-dir"))
    assert (
        s.port == 8000 and s.provider == "local" and s.pool_min_instances == 1 and s.pool_max_instances == 2
    )
    assert s.sqlalchemy_url == "sqlite:////nonexistent-dir/swarmstation.db"


def test_precedence_flag_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.toml").write_text(
        "[swarmstation]\nport = 9001\nlease_seconds = 12\nmax_attempts = 5\n"
    )
    monkeypatch.setenv("SWARMSTATION_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWARMSTATION_LEASE_SECONDS", "20")
    s = load_settings(max_attempts=7)
    assert s.port == 9001  # from the file
    assert s.lease_seconds == 20  # the environment beats the file
    assert s.max_attempts == 7  # a flag beats both


def test_config_file_named_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other.toml"
    path.write_text("pool_max_instances = 4\n")
    monkeypatch.setenv("SWARMSTATION_CONFIG_FILE", str(path))
    assert load_settings(data_dir=tmp_path / "d").pool_max_instances == 4


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("port = 'high'", "port"),
        ("nonsense = 1", "nonsense"),
        ("port = [", "cannot read"),
        ("provider = 'aws'", "provider"),
    ],
)
def test_bad_config_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, fragment: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(content)
    monkeypatch.setenv("SWARMSTATION_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError, match=fragment):
        load_settings()


def test_bad_env_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARMSTATION_PORT", "0")
    with pytest.raises(ConfigError, match="port"):
        load_settings()


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr

    from swarmstation.config import reveal

    names = {
        "SECRET_KEY": "secret_key",
        "METRICS_TOKEN": "metrics_token",
        "CIVITAI_TOKEN": "civitai_token",
        "HUGGINGFACE_TOKEN": "huggingface_token",
        "S3_SECRET_ACCESS_KEY": "s3_secret_access_key",
        "VASTAI_API_KEY": "vastai_api_key",
        "COMFYDEPLOY_API_KEY": "comfydeploy_api_key",
    }
    for env, _ in names.items():
        monkeypatch.setenv(f"SWARMSTATION_{env}", f"hush-{env.lower()}")
    s = load_settings(data_dir=Path("/nonexistent-dir"))
    for env, field in names.items():
        value = getattr(s, field)
        assert isinstance(value, SecretStr), field
        assert reveal(value) == f"hush-{env.lower()}"
        assert f"hush-{env.lower()}" not in repr(s) + str(s) + repr(s.model_dump())
    assert reveal(None) is None
