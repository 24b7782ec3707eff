from __future__ import annotations

from pathlib import Path

import pytest

from tierflow.errors import ConfigError
from tierflow.settings import BackendKind, BackendRef, load_settings


def test_defaults_match_the_design() -> None:
    s = load_settings()
    assert [b.id for b in s.tiers["router"].backends] == ["local"]
    assert [b.id for b in s.tiers["reasoning"].backends] == [
        "mistral:mistral-large-latest",
        "openai:gpt-4o",
        "local",
    ]
    assert s.backends.mistral.api_key is None and s.backends.openai.api_key is None


@pytest.mark.parametrize(
    ("text", "kind", "model"),
    [
        ("local", BackendKind.LOCAL, None),
        ("mistral", BackendKind.MISTRAL, "mistral-large-latest"),
        ("openai:gpt-4o-mini", BackendKind.OPENAI, "gpt-4o-mini"),
        (
            "vllm:mistralai/Ministral-8B-Instruct-2410",
            BackendKind.VLLM,
            "mistralai/Ministral-8B-Instruct-2410",
        ),
        ("vllm:org/model:tag", BackendKind.VLLM, "org/model:tag"),
    ],
)
def test_backend_ids_parse_once(text: str, kind: BackendKind, model: str | None) -> None:
    ref = BackendRef.parse(text)
    assert (ref.kind, ref.model) == (kind, model)
    assert BackendRef.parse(ref.id) == ref


@pytest.mark.parametrize(
    ("text", "expected"),
    [("anthropic:claude", "unknown backend kind 'anthropic'"), ("vllm", "needs a model name")],
)
def test_bad_backend_ids(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        BackendRef.parse(text)


def test_toml_file_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "tierflow.toml"
    cfg.write_text(
        '[tiers.reasoning]\nbackends = ["vllm:mistralai/Mistral-7B", "local"]\n'
        '[backends.vllm]\nbase_url = "http://127.0.0.1:9000/v1"\n'
        '[backends.mistral]\napi_key = "from-file"\n'
        '[prices."vllm:mistralai/Mistral-7B"]\ninput = 0.1\noutput = 0.2\n'
    )
    s = load_settings()  # ./tierflow.toml is found in the working directory
    assert [b.id for b in s.tiers["reasoning"].backends] == ["vllm:mistralai/Mistral-7B", "local"]
    assert [b.id for b in s.tiers["router"].backends] == ["local"]  # default tier kept
    assert s.backends.vllm.base_url == "http://127.0.0.1:9000/v1"
    assert s.prices["vllm:mistralai/Mistral-7B"].output == 0.2
    assert "openai:gpt-4o" in s.prices  # defaults kept

    monkeypatch.setenv("MISTRAL_API_KEY", "from-env")
    monkeypatch.setenv("TIERFLOW_BACKENDS__VLLM__BASE_URL", "http://127.0.0.1:9001/v1")
    monkeypatch.setenv("TIERFLOW_LOCAL_MODEL", "/models/ministral.gguf")
    s = load_settings()
    assert s.backends.mistral.api_key is not None
    assert s.backends.mistral.api_key.get_secret_value() == "from-env"
    assert s.backends.vllm.base_url == "http://127.0.0.1:9001/v1"
    assert s.backends.local.model_path == Path("/models/ministral.gguf")
    assert "from-env" not in repr(s)  # keys are secrets


def test_explicit_config_path_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text('[tiers.router]\nbackends = "vllm:small"\n')
    monkeypatch.setenv("TIERFLOW_CONFIG", str(cfg))
    assert [b.id for b in load_settings().tiers["router"].backends] == ["vllm:small"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '[tiers.reasoning]\nbackends = ["foo:bar"]\n',
            "tiers.reasoning.backends: unknown backend kind 'foo' in 'foo:bar' "
            "(expected one of local, vllm, openai, mistral)",
        ),
        ('[backends.vlm]\nbase_url = "x"\n', "backends.vlm: unknown key"),
        (
            '[backends.local]\nn_ctx = "big"\n',
            "backends.local.n_ctx: Input should be a valid integer",
        ),
        ("[tiers.reasoning\n", "invalid TOML: Expected ']'"),
        (
            "[tiers.reasoning]\nbackends = []\n",
            "tiers.reasoning.backends: List should have at least 1 item",
        ),
        (
            '[backends.vllm]\ntool_calling = "grammar"\n',
            "backends.vllm.tool_calling: Input should be 'native', 'constrained' or 'auto' "
            "(got 'grammar')",
        ),
        (
            "[telemetry]\nenabled = 3\n",
            "telemetry.enabled: Input should be a valid boolean",
        ),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{cfg}: ")
    assert message in text


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_config_file_false_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tierflow.toml").write_text('[tiers.router]\nbackends = "vllm:from-cwd"\n')
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text('[tiers.router]\nbackends = "vllm:from-env-file"\n')
    monkeypatch.setenv("TIERFLOW_CONFIG", str(elsewhere))
    monkeypatch.setenv("TIERFLOW_BACKENDS__VLLM__TOOL_CALLING", "native")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert [b.id for b in load_settings().tiers["router"].backends] == ["vllm:from-env-file"]

    s = load_settings(False)
    assert [b.id for b in s.tiers["router"].backends] == ["local"]  # neither file was read
    assert s.backends.vllm.tool_calling == "native"  # TIERFLOW_* variables still apply
    assert s.backends.openai.api_key is not None  # and so do the standard ones
    assert load_settings(config_file=False, budget={"max_model_calls": 7}).budget == (
        s.budget.model_copy(update={"max_model_calls": 7})
    )


def test_config_file_false_ignores_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "tierflow.toml").write_text("[tiers.reasoning\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings()
    assert load_settings(False).telemetry.enabled is True


def test_tool_calling_and_telemetry_switch_from_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "tierflow.toml"
    cfg.write_text(
        '[backends.vllm]\ntool_calling = "native"\n'
        '[backends.local]\ntool_calling = "constrained"\n'
        "[telemetry]\nenabled = false\n"
    )
    s = load_settings(cfg)
    assert s.backends.vllm.tool_calling == "native"
    assert s.backends.local.tool_calling == "constrained"
    assert s.backends.openai.tool_calling == "auto"
    assert s.telemetry.enabled is False


def test_database_url_comes_from_the_environment_and_stays_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(False).state.url is None  # SQLite in the state dir
    monkeypatch.setenv("TIERFLOW_DATABASE_URL", "postgresql://app:s3cret@db:5432/tierflow")
    state = load_settings(False).state
    assert state.url == "postgresql://app:s3cret@db:5432/tierflow"
    assert "s3cret" not in repr(state) and "s3cret" not in str(load_settings(False))
    monkeypatch.setenv("TIERFLOW_DATABASE_URL", "mysql://app:s3cret@db/tierflow")
    with pytest.raises(ConfigError) as bad:
        load_settings(False)
    assert str(bad.value).startswith("configuration: state.database_url: expected a postgresql://")
    assert "s3cret" not in str(bad.value) and "\n" not in str(bad.value)
