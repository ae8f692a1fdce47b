""".env.example and .env.local.example: complete, parseable, and free of secrets.

Plus include/deploy/make_env.py, which turns them into a .env with fresh secrets.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import stat
from collections import Counter

import pytest
import yaml
from dotenv import dotenv_values

from conftest import COMPOSE_FILE, PLACEHOLDER, REPO, fill_placeholders, make_env

EXAMPLES = (".env.example", ".env.local.example")
ASSIGNMENT = re.compile(r"^(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
MARKER = re.compile(r"__(GENERATE_[A-Z_]+|HOST_UID)__")
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)$")
SECRET_FIELDS = {"password", "certificate_data", "certificate_password", "client_secret", "account_key",
                 "sas_token", "connection_string"}


def assignments(name: str, *, commented: bool) -> list[tuple[str, str]]:
    """(variable, raw value) of every assignment line; commented-out ones on request."""
    found = []
    for line in (REPO / name).read_text().splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match and (commented or not match.group(1)):
            found.append((match.group(2), match.group(3)))
    return found


def unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == "'" else value


def connection_examples(name: str) -> list[tuple[str, dict]]:
    """Every AIRFLOW_CONN_* value of a file, commented alternatives included, as JSON."""
    return [
        (variable, json.loads(unquote(value)))
        for variable, value in assignments(name, commented=True)
        if variable.startswith("AIRFLOW_CONN_")
    ]


def string_leaves(node, path=""):
    if isinstance(node, dict):
        for key, child in node.items():
            yield from string_leaves(child, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from string_leaves(child, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def looks_like_secret(text: str) -> bool:
    """A long run of mixed-case letters and digits with high entropy (keys, client
    secrets, tokens), or a long hex string. Colons, '=', ';' and '@' split words, so
    key=value settings and URLs break apart; base64 keeps its body ('=' only pads it).
    Host names and dotted module paths lack the mix of cases and digits."""
    for token in re.findall(r"[A-Za-z0-9+/_~.\-]{20,}", text):
        if re.fullmatch(r"[0-9a-fA-F]{32,}", token):
            return True
        mixed = all(re.search(p, token) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
        counts = Counter(token)
        entropy = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())
        if mixed and entropy >= 3.5:
            return True
    return False


def azurite_development_key() -> str:
    # Published by Microsoft and shipped in azure-storage-blob for UseDevelopmentStorage.
    from azure.storage.blob._shared.parser import DEVSTORE_ACCOUNT_KEY

    return DEVSTORE_ACCOUNT_KEY


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_line_is_a_comment_or_an_assignment(name):
    for number, line in enumerate((REPO / name).read_text().splitlines(), 1):
        assert not line.strip() or line.lstrip().startswith("#") or ASSIGNMENT.match(line), f"{name}:{number}"
    values = dotenv_values(REPO / name)
    assert values and all(value is not None for value in values.values())


def test_every_compose_variable_is_documented():
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    # Names without a value in an environment block are taken from .env too.
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    blocks = [raw[key] for key in raw if key.startswith("x-") and key != "x-airflow-common"]
    blocks += [raw["x-airflow-common"]["environment"]]
    blocks += [service.get("environment") or {} for service in raw["services"].values()]
    bare = {name for block in blocks for name, value in block.items() if value is None}
    assert {"AIRFLOW_CONN_MDE_DEFAULT", "AIRFLOW_CONN_MDE_LAKE", "HTTPS_PROXY"} <= bare
    used |= bare
    documented = {variable for variable, _ in assignments(".env.example", commented=True)}
    assert used - documented == set()
    # Everything the sandbox sets is a documented variable too.
    local = {variable for variable, _ in assignments(".env.local.example", commented=False)}
    assert local - documented == set()


@pytest.mark.parametrize("name", EXAMPLES)
def test_connection_examples_parse(name):
    examples = connection_examples(name)
    assert examples
    for variable, connection in examples:
        assert set(connection) <= {"conn_type", "host", "login", "password", "schema", "port", "extra"}
        assert isinstance(connection["extra"], dict)
        expected_type = {"AIRFLOW_CONN_MDE_DEFAULT": "mde", "AIRFLOW_CONN_MDE_LAKE": "adls"}[variable]
        assert connection["conn_type"] == expected_type
    # The active values are what docker-compose hands the containers, verbatim.
    values = dotenv_values(REPO / name)
    for variable, value in assignments(name, commented=False):
        if variable.startswith("AIRFLOW_CONN_"):
            assert json.loads(values[variable]) == json.loads(unquote(value))


def test_every_mde_example_is_accepted_by_the_hook_parser():
    from mde_pipeline.api.config import MdeConnectionConfig

    methods = []
    for variable, connection in connection_examples(".env.example") + connection_examples(".env.local.example"):
        if variable != "AIRFLOW_CONN_MDE_DEFAULT":
            continue
        connection = json.loads(fill_placeholders(json.dumps(connection)))
        config = MdeConnectionConfig.from_parts(
            host=connection.get("host"), login=connection.get("login"),
            password=connection.get("password"), extra=connection["extra"],
        )
        assert [[w.limit, w.seconds] for w in config.rate_limits] == [[100, 60], [1500, 3600]]
        methods.append(config.auth_method)
    assert sorted(methods) == ["certificate", "client_secret", "client_secret", "managed_identity"]


def test_every_lake_example_opens_a_filesystem(monkeypatch):
    from mde_pipeline.airflow.lake_location import configured_lake_location

    examples = [
        (".env.example", json.dumps(c)) for v, c in connection_examples(".env.example") if v == "AIRFLOW_CONN_MDE_LAKE"
    ] + [
        (".env.local.example", json.dumps(c))
        for v, c in connection_examples(".env.local.example") if v == "AIRFLOW_CONN_MDE_LAKE"
    ]
    assert len(examples) == 3
    roots = {
        name: fill_placeholders(unquote(dict(assignments(name, commented=True))["AIRFLOW_VAR_MDE_LAKE_ROOT"]))
        for name in EXAMPLES
    }
    for number, (name, connection) in enumerate(examples):
        # One conn id per example: Airflow caches a filesystem per connection id.
        monkeypatch.setenv(f"AIRFLOW_CONN_MDE_LAKE_EXAMPLE_{number}", fill_placeholders(connection))
        location = configured_lake_location(roots[name], conn_id=f"mde_lake_example_{number}")
        assert location.protocol == "abfs" and location.root.startswith("mde-lake/")
        assert location.account_name in ("mdelakeaccount", "devstoreaccount1")


# ---------------------------------------------------------------------------- secrets


def test_the_secret_detector_detects_secrets():
    # Guards the checks below against passing vacuously. Seeded, so the samples (and
    # the outcome) are the same every run; none is written into the repo.
    rng = random.Random(7)
    sample = bytes(rng.getrandbits(8) for _ in range(32))
    assert looks_like_secret(base64.urlsafe_b64encode(sample).decode())  # a Fernet key
    assert looks_like_secret(base64.b64encode(sample + sample[:32]).decode())  # a storage key
    assert looks_like_secret(sample.hex())
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789~._-"
    entra_like = "".join(rng.choice(alphabet) for _ in range(40))  # shape of an Entra secret
    assert looks_like_secret(f'{{"password": "{entra_like}"}}')
    assert not looks_like_secret("11111111-1111-4111-8111-111111111111")
    assert not looks_like_secret("local-sandbox-only")
    assert not looks_like_secret("http://azurite:10000/devstoreaccount1")
    assert not looks_like_secret("airflow.providers.microsoft.azure.secrets.key_vault.AzureKeyVaultBackend")


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_real_looking_secret(name):
    allowed = {azurite_development_key()} if name == ".env.local.example" else set()
    for variable, value in assignments(name, commented=True):
        value = unquote(value)
        if MARKER.fullmatch(value) or PLACEHOLDER.fullmatch(value):
            continue
        for key in allowed:
            value = value.replace(key, "")
        assert not looks_like_secret(value), f"{name}: {variable}"


def test_tenant_example_holds_placeholders_only_where_secrets_go():
    for variable, value in assignments(".env.example", commented=True):
        value = unquote(value)
        if SECRET_NAME.search(variable) and not variable.startswith("MDE_SIM_"):
            assert MARKER.fullmatch(value) or PLACEHOLDER.fullmatch(value), variable
        if variable.startswith("AIRFLOW_CONN_"):
            for path, leaf in string_leaves(json.loads(value)):
                if path.split(".")[-1] in SECRET_FIELDS:
                    assert PLACEHOLDER.fullmatch(leaf), f"{variable} {path}"
                if path.endswith("tenant_id") or path in ("login",) or path.endswith("client_id"):
                    assert PLACEHOLDER.fullmatch(leaf), f"{variable} {path}"


def test_the_only_key_in_the_sandbox_example_is_azurites_published_one():
    keys = re.findall(r"AccountKey=([^;\"']+)", (REPO / ".env.local.example").read_text())
    assert keys == [azurite_development_key()]


# ---------------------------------------------------------------------------- make_env.py


def test_make_env_fills_every_marker_with_a_fresh_value(tmp_path):
    from cryptography.fernet import Fernet

    first, second = tmp_path / "a", tmp_path / "b"
    assert make_env.main([str(REPO / ".env.local.example"), str(first)]) == 0
    assert make_env.main([str(REPO / ".env.local.example"), str(second)]) == 0
    one, two = dotenv_values(first), dotenv_values(second)
    assert not MARKER.search(first.read_text())
    Fernet(one["FERNET_KEY"].encode())  # a valid key
    generated = ["AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "POSTGRES_PASSWORD",
                 "_AIRFLOW_WWW_USER_PASSWORD"]
    values = [one[name] for name in generated]
    assert len(set(values)) == len(values)  # each marker gets its own value
    for name in ["FERNET_KEY", *generated]:
        assert one[name] != two[name] and len(one[name]) >= 43, name
    # URL-safe: the Postgres password goes into the database URL as is.
    assert re.fullmatch(r"[A-Za-z0-9_\-]+", one["POSTGRES_PASSWORD"])
    assert one["AIRFLOW_UID"].isdigit()
    assert stat.S_IMODE(first.stat().st_mode) == 0o600


def test_make_env_never_overwrites(tmp_path, capsys):
    target = tmp_path / ".env"
    target.write_text("KEEP=me\n")
    assert make_env.main([str(REPO / ".env.example"), str(target)]) == 1
    assert target.read_text() == "KEEP=me\n"
    assert "not overwriting" in capsys.readouterr().err


def test_make_env_lists_what_is_left_to_fill(tmp_path, capsys):
    assert make_env.main([str(REPO / ".env.example"), str(tmp_path / "tenant")]) == 0
    assert "AIRFLOW_CONN_MDE_DEFAULT" in capsys.readouterr().out
    assert make_env.main([str(REPO / ".env.local.example"), str(tmp_path / "local")]) == 0
    assert "placeholders" not in capsys.readouterr().out
