"""No secret ever leaves Sheaf: not in responses, not in /readyz, not in a log line.

The test plants recognisable secrets where operators and callers put them — the database
password, the storage account key, the Service Bus key, the embedding API key, API keys
and tokens in requests — makes every dependency fail (so error paths run, which is where
secrets usually leak), and then searches every response and every captured log record
(formatted as the JSON lines Sheaf writes) for any of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from api.app import create_app
from sheaf.cli import main
from sheaf.config import Settings
from sheaf.logs import ContextFilter, JsonFormatter

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[TestServer], Awaitable[Client]]
MakeServer = Callable[..., Awaitable[TestServer]]

SECRETS = {
    "db": "PlantedDbPassword1",
    "storage": "UGxhbnRlZEFjY291bnRLZXky",
    "servicebus": "UGxhbnRlZFNlcnZpY2VCdXMz",
    "openai": "sk-PlantedOpenAiKey4",
    "api_key": "PlantedApiKeySecretPlantedApiKeySecret12345",  # 43 characters
    "jwt": "UGxhbnRlZEp3dFNpZ25hdHVyZTY",
    "basic": "UGxhbnRlZEJhc2ljUGFzc3dvcmQ3",
    "query": "PlantedQueryToken8",
}
ENV = {
    "SHEAF_DATABASE_URL": f"postgresql+asyncpg://sheaf:{SECRETS['db']}@127.0.0.1:1/sheaf",
    "SHEAF_BLOB_BACKEND": "azure",
    "SHEAF_AZURE_STORAGE_CONNECTION_STRING": (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={SECRETS['storage']};BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;"
    ),
    "SHEAF_MESSAGE_BUS": "servicebus",
    "SHEAF_SERVICEBUS_CONNECTION_STRING": (
        "Endpoint=sb://127.0.0.1:1/;SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={SECRETS['servicebus']};UseDevelopmentEmulator=true"
    ),
    "SHEAF_EMBEDDER": "openai",
    "SHEAF_OPENAI_BASE_URL": "http://127.0.0.1:1/v1",
    "SHEAF_OPENAI_MODEL": "embedder",
    "SHEAF_OPENAI_API_KEY": SECRETS["openai"],
    "SHEAF_AUTH_MODE": "keys+entra",
    "SHEAF_ENTRA_TENANT_ID": "tenant",
    "SHEAF_ENTRA_AUDIENCE": "api://sheaf",
    "SHEAF_ENTRA_JWKS_URL": "http://127.0.0.1:1/keys",
}
REQUESTS = [
    ("GET", "/readyz", None),
    ("GET", "/healthz", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/stats", f"Bearer sk_sheaf_0123456789abcdef_{SECRETS['api_key']}"),
    ("GET", "/v1/stats", f"Bearer sk_sheaf_{SECRETS['api_key']}"),
    ("GET", "/v1/stats", f"Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.e30.{SECRETS['jwt']}"),
    ("GET", "/v1/stats", f"Basic {SECRETS['basic']}"),
    ("GET", f"/v1/stats?access_token={SECRETS['query']}", None),
    ("POST", "/v1/collections/a/documents", f"Bearer sk_sheaf_{SECRETS['api_key']}"),
    ("GET", "/v1/documents/x", f"Bearer sk_sheaf_0123456789abcdef_{SECRETS['api_key']}"),
]


def leaked(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


async def test_no_secret_in_responses_readiness_or_logs(
    aiohttp_server: MakeServer,
    aiohttp_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings.from_env(ENV)
    # Served as `api.server.serve` serves it: without aiohttp's access log (which would
    # print query strings, where a careless client might put a token).
    server = await aiohttp_server(create_app(settings, housekeeping=False), access_log=None)
    client = await aiohttp_client(server)
    seen = []
    for method, path, authorization in REQUESTS:
        headers = {"Authorization": authorization} if authorization else {}
        response = await client.request(method, path, headers=headers)
        text = await response.text()
        seen.append((path, response.status))
        assert leaked(text) == [], (path, text)
        assert leaked(json.dumps(dict(response.headers))) == [], path
    statuses = dict(seen)
    assert statuses["/readyz"] == 503  # the failing dependencies were really tried
    ready = await (await client.get("/readyz")).json()
    assert not ready["checks"]["database"]["ok"]
    assert not ready["checks"]["blob_store"]["ok"]
    assert {status for _, status in seen if _.startswith("/v1")} <= {401, 503}

    formatter = JsonFormatter()
    context = ContextFilter()
    lines = []
    for record in caplog.records:
        context.filter(record)
        lines.append(formatter.format(record))
    assert lines  # the failures above were logged
    problems = {line[:300]: leaked(line) for line in lines if leaked(line)}
    assert problems == {}


def test_the_config_command_hides_every_secret() -> None:
    result = CliRunner().invoke(main, ["config"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "SHEAF_OPENAI_API_KEY=**********" in result.output
    assert leaked(result.output) == []
