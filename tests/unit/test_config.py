from __future__ import annotations

import pytest

from sheaf.config import Settings
from sheaf.errors import ConfigError

pytestmark = pytest.mark.unit


def test_defaults_are_the_embedded_setup() -> None:
    settings = Settings.from_env({})
    assert settings.database_dialect == "sqlite"
    assert settings.message_bus == "none"
    assert settings.port == 8000


def test_values_are_parsed_and_typed() -> None:
    settings = Settings.from_env({"SHEAF_PORT": "8080", "SHEAF_LEASE_SECONDS": "90", "PATH": "x"})
    assert settings.port == 8080
    assert settings.lease_seconds == 90.0


def test_unknown_setting_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="SHEAF_LEASE_SECOND"):
        Settings.from_env({"SHEAF_LEASE_SECOND": "30"})


def test_invalid_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SHEAF_PORT"):
        Settings.from_env({"SHEAF_PORT": "eighty"})


def test_heartbeat_must_fit_three_times_in_the_lease() -> None:
    with pytest.raises(ConfigError, match="third of SHEAF_LEASE_SECONDS"):
        Settings.from_env({"SHEAF_LEASE_SECONDS": "30", "SHEAF_HEARTBEAT_SECONDS": "11"})


def test_deadlines_by_progress_are_coherent() -> None:
    """Extraction's per-page limit < the stall limit <= the backstop < the lock renewal."""
    with pytest.raises(ConfigError, match="SHEAF_EXTRACT_TIMEOUT_SECONDS must be below"):
        Settings.from_env({"SHEAF_EXTRACT_TIMEOUT_SECONDS": "300"})
    with pytest.raises(ConfigError, match="SHEAF_DOCUMENT_STALL_SECONDS must be at most"):
        Settings.from_env({"SHEAF_DOCUMENT_DEADLINE_SECONDS": "200"})
    bus = {"SHEAF_MESSAGE_BUS": "servicebus", "SHEAF_SERVICEBUS_NAMESPACE": "n"}
    with pytest.raises(ConfigError, match="below SHEAF_LOCK_RENEWAL_SECONDS"):
        Settings.from_env({**bus, "SHEAF_LOCK_RENEWAL_SECONDS": "3600"})
    assert Settings.from_env(bus).lock_renewal_seconds > Settings().document_deadline_seconds


def test_secrets_do_not_print() -> None:
    url = "postgresql+asyncpg://u:hunter2@db/sheaf"
    settings = Settings.from_env({"SHEAF_DATABASE_URL": url})
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)


def test_overrides_win_and_none_is_ignored() -> None:
    settings = Settings.from_env({"SHEAF_PORT": "8080"}, port=9000, workers=None)
    assert settings.port == 9000
    assert settings.workers == 2


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_azure_blob_needs_exactly_one_way_in() -> None:
    with pytest.raises(ConfigError, match="SHEAF_AZURE_STORAGE_ACCOUNT_URL"):
        Settings.from_env({"SHEAF_BLOB_BACKEND": "azure"})
    both = {
        "SHEAF_BLOB_BACKEND": "azure",
        "SHEAF_AZURE_STORAGE_ACCOUNT_URL": "https://a.blob.core.windows.net",
        "SHEAF_AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
    }
    with pytest.raises(ConfigError, match="exactly one"):
        Settings.from_env(both)


def test_embedders_name_what_they_miss() -> None:
    with pytest.raises(ConfigError, match="SHEAF_AZURE_OPENAI_DEPLOYMENT"):
        Settings.from_env({"SHEAF_EMBEDDER": "azure-openai", "SHEAF_AZURE_OPENAI_ENDPOINT": "x"})
    with pytest.raises(ConfigError, match="SHEAF_OPENAI_MODEL"):
        Settings.from_env({"SHEAF_EMBEDDER": "openai", "SHEAF_OPENAI_BASE_URL": "http://x/v1"})


def test_the_local_model_is_the_default_and_has_one_size() -> None:
    default = Settings.from_env({})
    assert (default.embedder, default.embedding_dimensions) == ("local", 384)
    assert Settings.from_env({"SHEAF_EMBEDDING_DIMENSIONS": "384"}).embedding_dimensions == 384
    with pytest.raises(ConfigError, match=r"SHEAF_EMBEDDING_DIMENSIONS=1024 does not match"):
        Settings.from_env({"SHEAF_EMBEDDING_DIMENSIONS": "1024"})
    # Other embedders keep their own default size.
    assert Settings.from_env({"SHEAF_EMBEDDER": "lexical"}).embedding_dimensions == 1024


@pytest.mark.parametrize(
    ("env", "needed"),
    [
        ({}, False),
        (
            {
                "SHEAF_BLOB_BACKEND": "azure",
                "SHEAF_AZURE_STORAGE_ACCOUNT_URL": "https://a.blob.core.windows.net",
            },
            True,
        ),
        (
            {
                "SHEAF_BLOB_BACKEND": "azure",
                "SHEAF_AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
            },
            False,
        ),
        (
            {
                "SHEAF_EMBEDDER": "azure-openai",
                "SHEAF_AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
                "SHEAF_AZURE_OPENAI_DEPLOYMENT": "emb",
            },
            True,
        ),
        (
            {
                "SHEAF_EMBEDDER": "azure-openai",
                "SHEAF_AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
                "SHEAF_AZURE_OPENAI_DEPLOYMENT": "emb",
                "SHEAF_AZURE_OPENAI_API_KEY": "k",
            },
            False,
        ),
    ],
)
def test_an_azure_identity_is_built_only_when_some_adapter_needs_it(
    env: dict[str, str], needed: bool
) -> None:
    assert Settings.from_env(env).needs_azure_credential is needed


def test_entra_sign_in_is_for_sql_server_and_needs_the_identity() -> None:
    with pytest.raises(ConfigError, match="SQL Server"):
        Settings.from_env({"SHEAF_DATABASE_AUTH": "entra"})
    url = "mssql+aioodbc://@srv.database.windows.net/sheaf?driver=ODBC+Driver+18+for+SQL+Server"
    settings = Settings.from_env({"SHEAF_DATABASE_URL": url, "SHEAF_DATABASE_AUTH": "entra"})
    assert settings.needs_azure_credential
