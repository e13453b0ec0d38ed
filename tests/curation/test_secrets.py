"""Placeholders expand only in connectors; redact() puts them back and masks URL passwords."""

from __future__ import annotations

import pytest

from curation.secrets import check_no_literal_password, expand, redact, redact_obj


def test_expand_then_redact_round_trips_and_masks_literal_url_passwords(monkeypatch):
    monkeypatch.setenv("T_PW", "pa55-word")
    url = expand("s3://reader:${T_PW}@host/b/${T_PW}.parquet", field="sources[s].path")
    assert url == "s3://reader:pa55-word@host/b/pa55-word.parquet"
    assert redact(f"cannot open {url}") == "cannot open s3://reader:${T_PW}@host/b/${T_PW}.parquet"
    assert redact("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_obj({"inputs": [{"path": url}], url: 1}) == {
        "inputs": [{"path": "s3://reader:${T_PW}@host/b/${T_PW}.parquet"}],
        "s3://reader:${T_PW}@host/b/${T_PW}.parquet": 1}
    assert redact("no secrets: /data/a:b/file.csv, https://host/x") == "no secrets: /data/a:b/file.csv, https://host/x"


def test_an_unset_variable_and_a_literal_password_fail_with_the_fix(monkeypatch):
    monkeypatch.delenv("T_MISSING", raising=False)
    with pytest.raises(KeyError, match=r"sources\[s\]\.path uses \$\{T_MISSING\}, which is not set"):
        expand("/x/${T_MISSING}", field="sources[s].path")
    assert check_no_literal_password("s3://u:${PW}@h/x") == "s3://u:${PW}@h/x"
    with pytest.raises(ValueError, match=r"\(s3://u:\*\*\*@\.\.\.\); keep it in an environment variable") as exc:
        check_no_literal_password("s3://u:hunter2@h/x")
    assert "hunter2" not in str(exc.value)


def test_a_registered_secret_store_expands_kind_placeholders_and_unknown_kinds_say_what_exists(monkeypatch):
    from curation import secrets

    store = {"pg-password": "Vault-Pw-1"}

    def lookup(name: str) -> str:
        if name not in store:
            raise KeyError(f"no secret {name!r} in the test store")
        return store[name]

    monkeypatch.setattr(secrets, "_resolvers", {"vault": lookup})
    url = expand("postgresql://app:${vault:pg-password}@db/x", field="sources[db].url")
    assert url == "postgresql://app:Vault-Pw-1@db/x"
    assert redact(f"connection to {url} refused") == "connection to postgresql://app:${vault:pg-password}@db/x refused"
    assert check_no_literal_password("postgresql://app:${vault:pg-password}@db/x")  # a placeholder is no literal
    with pytest.raises(KeyError, match=r"sources\[db\]\.url uses \$\{vault:other\}: no secret 'other'"):
        expand("${vault:other}", field="sources[db].url")
    with pytest.raises(KeyError, match=r"no secret store 'prefect' is registered \(registered: \$\{vault:\.\.\.\}\)"):
        expand("${prefect:pg-password}", field="sources[db].url")
