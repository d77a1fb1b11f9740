"""LiteLLM config compatibility: what starts, what warns, what fails with a one-line error."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from mmproxy.config import ConfigError, load_config, parse_config


def _entry(**params):
    return {"model_name": "m", "litellm_params": {"model": "openai/x", "api_base": "http://h:1/v1", **params}}


def test_litellm_config_is_read(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    config = parse_config({
        "model_list": [
            {"model_name": "gpt", "litellm_params": {
                "model": "openai/gpt-4o", "api_base": "http://sim:8800/v1/", "api_key": "os.environ/MY_KEY",
                "timeout": 30, "stream_timeout": "5", "weight": 2}, "model_info": {
                "id": "dep-a", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                "max_input_tokens": 1000, "mode": "chat"}},
            {"model_name": "gpt", "litellm_params": {"model": "gpt-4o-mini"}},
        ],
        "general_settings": {"master_key": "sk-master"},
    })
    first, second = config.deployments
    assert (first.provider, first.upstream_model, first.api_base) == ("openai", "gpt-4o", "http://sim:8800/v1")
    assert first.api_key == "sk-from-env" and first.id == "dep-a"
    assert (first.timeout, first.stream_timeout, first.weight) == (30.0, 5.0, 2.0)
    assert first.max_input_tokens == 1000
    # A bare OpenAI model name goes to OpenAI, like in LiteLLM; its id is generated and stable.
    assert second.provider == "openai" and second.api_base == "https://api.openai.com/v1"
    again = parse_config({"model_list": [{"model_name": "gpt", "litellm_params": {"model": "gpt-4o-mini"}}]})
    assert second.id == again.deployments[0].id and second.id.startswith("dep-")
    assert config.master_key == "sk-master"
    assert config.warnings == []


def test_secrets_do_not_show_in_repr():
    config = parse_config({"model_list": [_entry(api_key="sk-secret-123")],
                           "general_settings": {"master_key": "sk-master-456"}})
    assert "sk-secret-123" not in repr(config) and "sk-master-456" not in repr(config)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"model_list": {"a": 1}}, "model_list"),
        ({"model_list": [{"litellm_params": {"model": "openai/x"}}]}, "model_list[0].model_name"),
        ({"model_list": [{"model_name": "m", "litellm_params": "openai/x"}]}, "model_list[0].litellm_params"),
        ({"model_list": [{"model_name": "m", "litellm_params": {}}]}, "model_list[0].litellm_params.model"),
        ({"model_list": [_entry(timeout="soon")]}, "model_list[0].litellm_params.timeout"),
        ({"model_list": [_entry(drop_params="yes")]}, "model_list[0].litellm_params.drop_params"),
        ({"router_settings": {"routing_strategy": "fastest"}}, "router_settings.routing_strategy"),
        ({"model_list": [_entry(timeout=-1)]}, "model_list[0].litellm_params.timeout"),
        ({"model_list": [_entry(api_key="os.environ/MMPROXY_UNSET_VAR")]}, "model_list[0].litellm_params.api_key"),
        ({"model_list": [_entry(api_base="ftp://x")]}, "model_list[0].litellm_params.api_base"),
        ({"model_list": [{**_entry(), "model_info": {"mode": "video"}}]}, "model_list[0].model_info.mode"),
        ({"model_list": [{**_entry(), "model_info": {"id": "a"}}, {**_entry(), "model_info": {"id": "a"}}]},
         "model_list[1].model_info.id"),
        ({"general_settings": []}, "general_settings"),
        ({"general_settings": {"master_key": 5}}, "general_settings.master_key"),
        ({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai_compatible/x"}}]},
         "model_list[0].litellm_params.api_base"),
    ],
)
def test_bad_config_names_the_key(raw, key):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    assert message.startswith(key + ":") and "\n" not in message


def test_unimplemented_keys_warn():
    config = parse_config({
        "model_list": [_entry(rpm=10, tags=["a"], drop_params=True), {"model_name": "titan", "litellm_params": {
            "model": "bedrock/amazon.titan-text-express-v1"}}],
        "router_settings": {"routing_strategy": "least-busy", "enable_pre_call_checks": True},
        "litellm_settings": {"drop_params": True, "set_verbose": True},
        "general_settings": {"alerting": ["slack"]},
        "surprise": 1,
    })
    text = "\n".join(config.warnings)
    for key in ("model_list[0].litellm_params.tags",
                "router_settings.enable_pre_call_checks", "litellm_settings.set_verbose",
                "general_settings.alerting", "surprise", "model_list[1].litellm_params.model"):
        assert key in text
    # The unsupported provider's deployment is skipped, not half-configured.
    assert [d.model_name for d in config.deployments] == ["m"]


def test_invalid_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_list: [\n  - {")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_serve_with_bad_config_exits_with_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": {"model": 3}}]}))
    result = subprocess.run([sys.executable, "-m", "mmproxy", "serve", "--config", str(path), "--port", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model_list[0].litellm_params.model" in lines[0]


def test_serve_warns_about_unimplemented_keys(tmp_path, simulator):
    from tests.conftest import start_process

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/x", "api_base": f"{simulator.url}/v1", "rpm": 5, "tags": ["t"]}}],
        "router_settings": {"num_retries": 3, "enable_pre_call_checks": True},
    }))
    gw = start_process(["mmproxy", "serve", "--config", str(path), "--host", "127.0.0.1", "--port", "0"])
    try:
        text = "".join(gw.output)
        assert "warning: model_list[0].litellm_params.tags" in text
        assert "litellm_params.rpm" not in text
        assert "warning: router_settings.enable_pre_call_checks" in text
        assert "router_settings.num_retries" not in text
    finally:
        gw.stop()


def test_provider_defaults_follow_litellm(monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", "sk-mistral")
    monkeypatch.setenv("AZURE_API_BASE", "https://res.openai.azure.com/")
    monkeypatch.delenv("AZURE_API_VERSION", raising=False)
    monkeypatch.delenv("OLLAMA_API_BASE", raising=False)
    config = parse_config({
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "mistral/mistral-large-latest"}},
            {"model_name": "b", "litellm_params": {"model": "azure/my-gpt4o", "api_key": "k", "drop_params": False}},
            {"model_name": "c", "litellm_params": {"model": "ollama_chat/llama3.1"}},
            {"model_name": "d", "litellm_params": {"model": "claude-sonnet-4-5"}},
            {"model_name": "e", "litellm_params": {"model": "groq/llama-3.1-8b-instant"}},
        ],
        "litellm_settings": {"drop_params": True},
    })
    mistral, azure, ollama, claude, groq = config.deployments
    assert (mistral.api_base, mistral.api_key) == ("https://api.mistral.ai/v1", "sk-mistral")
    assert (azure.api_base, azure.api_version, azure.upstream_model) == (
        "https://res.openai.azure.com", "2024-10-21", "my-gpt4o")
    assert (ollama.provider, ollama.api_base, ollama.api_key) == ("ollama_chat", "http://localhost:11434", None)
    assert (claude.provider, claude.api_base) == ("anthropic", "https://api.anthropic.com")
    assert groq.api_base == "https://api.groq.com/openai/v1"
    # The global drop_params applies unless a deployment says otherwise.
    assert mistral.drop_params is True and azure.drop_params is False


def test_registry_defaults_fill_what_model_info_leaves_out():
    config = parse_config({"model_list": [
        {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o-mini-2024-07-18"}},
        {"model_name": "b", "litellm_params": {"model": "anthropic/claude-sonnet-4-5"},
         "model_info": {"tier": "workhorse", "input_cost_per_token": 1e-6, "strengths": ["code"]}},
        {"model_name": "c", "litellm_params": {"model": "openai/my-finetune", "api_base": "http://h/v1"}},
    ]})
    mini, sonnet, custom = config.deployments
    assert mini.tier == "economy" and mini.input_cost_per_token and mini.output_cost_per_token
    assert mini.max_input_tokens is None  # a context limit is never defaulted
    # model_info wins field by field; what it does not say still comes from the registry.
    assert (sonnet.tier, sonnet.input_cost_per_token, sonnet.strengths) == ("workhorse", 1e-6, ("code",))
    assert sonnet.output_cost_per_token is not None
    assert (custom.tier, custom.input_cost_per_token, custom.strengths) == (None, None, ())


def test_cache_params_map_to_settings(monkeypatch):
    def cache(**params):
        return parse_config({"litellm_settings": {"cache": True, "cache_params": params}}).cache

    local = cache()
    assert local is not None and local.redis_url is None and not local.semantic and local.default_on
    redis = cache(type="redis", host="cache.internal", port=6380, password="p@ss/word", ttl=60, namespace="t")
    assert redis.redis_url == "redis://:p%40ss%2Fword@cache.internal:6380/0"
    assert (redis.ttl, redis.namespace) == (60, "t")
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379/2")
    assert cache(type="redis").redis_url == "redis://from-env:6379/2"
    semantic = cache(type="semantic", similarity_threshold=0.9, mode="default_off", shared=True)
    assert semantic.semantic and semantic.similarity_threshold == 0.9 and not semantic.default_on and semantic.shared
    assert (semantic.embedder_threads, semantic.embedder_precision) == (1, "int8")
    tuned = cache(type="semantic", embedder_threads=2, embedder_precision="float32")
    assert (tuned.embedder_threads, tuned.embedder_precision) == (2, "float32")
    assert parse_config({"litellm_settings": {"cache_params": {"type": "redis"}}}).cache is None
    assert local.endpoints == {"chat", "messages", "embeddings", "responses"}
    config = parse_config({"litellm_settings": {"cache": True, "cache_params": {
        "supported_call_types": ["acompletion", "completion", "atranscription"]}}})
    assert config.cache is not None and config.cache.endpoints == {"chat"}
    assert any("atranscription not served" in w for w in config.warnings)
    for bad, key in (({"type": "s3"}, "type"), ({"similarity_threshold": 2}, "similarity_threshold"),
                     ({"mode": "always"}, "mode"), ({"supported_call_types": "acompletion"}, "supported_call_types"),
                     ({"type": "semantic", "embedding_model": "nope"}, "embedding_model"),
                     ({"embedder_threads": 0}, "embedder_threads"), ({"embedder_threads": 1.5}, "embedder_threads"),
                     ({"embedder_precision": "fp16"}, "embedder_precision")):
        with pytest.raises(ConfigError, match=f"cache_params.{key}"):
            cache(**bad)


def test_verified_semantic_cache_keys():
    judge = {"model_name": "judge", "litellm_params": {"model": "openai/gpt-4o-mini"}}

    def cache(**params):
        return parse_config({"model_list": [judge], "litellm_settings": {"cache": True, "cache_params": params}}).cache

    plain = cache(type="semantic")
    assert plain.max_error_rate is None  # the fixed-threshold matcher, as LiteLLM's configs expect
    verified = cache(type="redis-semantic", max_error_rate=0.02)
    assert (verified.max_error_rate, verified.error_confidence, verified.explore_rate) == (0.02, 0.95, 0.05)
    assert verified.answer_equivalence == "exact" and verified.judge_model is None
    judged = cache(type="semantic", max_error_rate=0.05, error_confidence=0.99, explore_rate=0.1,
                   answer_equivalence="judge", judge_model="judge")
    assert (judged.error_confidence, judged.explore_rate, judged.judge_model) == (0.99, 0.1, "judge")
    assert cache(type="semantic", max_error_rate=0.05, answer_equivalence="embedding",
                 answer_similarity=0.8).answer_similarity == 0.8
    for bad, key in (({"max_error_rate": 0.01}, "max_error_rate"),  # not a semantic cache
                     ({"type": "semantic", "max_error_rate": 0.7}, "max_error_rate"),
                     ({"type": "semantic", "explore_rate": 0.1}, "explore_rate"),  # without max_error_rate
                     ({"type": "semantic", "max_error_rate": 0.01, "error_confidence": 1}, "error_confidence"),
                     ({"type": "semantic", "max_error_rate": 0.01, "explore_rate": 0}, "explore_rate"),
                     ({"type": "semantic", "max_error_rate": 0.01, "answer_equivalence": "fuzzy"},
                      "answer_equivalence"),
                     ({"type": "semantic", "max_error_rate": 0.01, "answer_equivalence": "judge"}, "judge_model"),
                     ({"type": "semantic", "max_error_rate": 0.01, "answer_equivalence": "judge",
                       "judge_model": "nobody"}, "judge_model")):
        with pytest.raises(ConfigError, match=f"cache_params.{key}"):
            cache(**bad)


def test_batch_discount_from_registry_or_model_info():
    def deployment(**info):
        entry = {"model_name": "m", "litellm_params": {"model": "openai/gpt-4o-mini"}, "model_info": info}
        return parse_config({"model_list": [entry]}).deployments[0]

    assert deployment().batch_discount == 0.5  # OpenAI bills batch requests at half price
    assert deployment(batch_discount=0.3).batch_discount == 0.3
    with pytest.raises(ConfigError, match="batch_discount"):
        deployment(batch_discount=1.5)


def test_misspellings_get_a_suggestion_and_all_missing_variables_are_named_at_once(monkeypatch):
    monkeypatch.delenv("MMPROXY_UNSET_A", raising=False)
    monkeypatch.delenv("MMPROXY_UNSET_B", raising=False)
    warnings = parse_config({"model_lists": [], "general_settings": {"mater_key": "x"},
                             "litellm_settings": {"cahce": True, "success_callback": ["langfuse"]}}).warnings
    assert "model_lists: unknown top-level key, ignored; did you mean 'model_list'?" in warnings
    assert "general_settings.mater_key: unknown key, ignored; did you mean 'master_key'?" in warnings
    assert "litellm_settings.cahce: unknown key, ignored; did you mean 'cache'?" in warnings
    assert "litellm_settings.success_callback: not implemented yet, ignored" in warnings  # LiteLLM's, not a typo
    with pytest.raises(ConfigError) as info:
        parse_config({"model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/MMPROXY_UNSET_A"}},
            {"model_name": "b", "litellm_params": {"model": "openai/gpt-4o", "api_base": "os.environ/MMPROXY_UNSET_B"}},
        ]})
    assert "MMPROXY_UNSET_A" in str(info.value) and "MMPROXY_UNSET_B" in str(info.value)
    assert "model_list[1].litellm_params.api_base" in str(info.value)


def test_check_command_validates_without_serving(tmp_path):
    def check(api_key: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/gpt-4o", "api_key": api_key}}]}))
        return subprocess.run([sys.executable, "-m", "mmproxy", "check", "--config", str(path)],
                              capture_output=True, text=True, timeout=60)

    result = check("sk-x")
    assert result.returncode == 0 and "is valid: 1 deployments, 1 models" in result.stdout
    assert "no general_settings.master_key" in result.stderr  # an open gateway is said out loud
    result = check("os.environ/MMPROXY_UNSET_FOR_CHECK")
    assert result.returncode == 2 and "MMPROXY_UNSET_FOR_CHECK is not set" in result.stderr


def test_listen_defaults_and_log_level():
    def help_of(command: str) -> str:
        return subprocess.run([sys.executable, "-m", "mmproxy", command, "--help"], capture_output=True, text=True,
                              timeout=60).stdout

    assert "default 127.0.0.1" in help_of("demo")  # the demo's master key is published: local only
    assert "default 0.0.0.0" in help_of("serve")
    assert "--log-level {debug,info,warning,error}" in help_of("serve")
    bad = subprocess.run([sys.executable, "-m", "mmproxy", "serve", "--config", "x.yaml", "--log-level", "loud"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--log-level" in bad.stderr


def test_deployments_that_differ_only_by_key_are_separate_deployments():
    def entry(key: str, **info: str) -> dict:
        return {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": key},
                "model_info": info}

    # LiteLLM's multi-key load balancing: one model, several keys.
    deployments = parse_config({"model_list": [entry("sk-a"), entry("sk-b"), entry("sk-c")]}).deployments
    ids = [d.id for d in deployments]
    assert len(set(ids)) == 3 and ids[1] == f"{ids[0]}-2" and ids[2] == f"{ids[0]}-3"
    assert [d.api_key for d in deployments] == ["sk-a", "sk-b", "sk-c"]
    with pytest.raises(ConfigError, match="duplicate id 'same'"):  # ids the operator chose stay unique
        parse_config({"model_list": [entry("sk-a", id="same"), entry("sk-b", id="same")]})


def test_general_settings_keys_litellm_reads_are_not_implemented_others_are_unknown():
    warnings = parse_config({"model_list": [], "general_settings": {
        "alerting": ["slack"], "cahce": True, "store_prompts_in_spend_logs": True}}).warnings
    assert "general_settings.alerting: not implemented yet, ignored" in warnings
    assert "general_settings.store_prompts_in_spend_logs: not implemented yet, ignored" in warnings
    assert "general_settings.cahce: unknown key, ignored" in warnings


def test_a_provider_whose_api_is_not_openais_is_skipped_even_with_an_api_base():
    config = parse_config({"model_list": [
        {"model_name": "b", "litellm_params": {"model": "bedrock/anthropic.claude-v2", "api_base": "http://h:1"}},
        {"model_name": "f", "litellm_params": {"model": "fireworks_ai/accounts/x/models/llama", "api_base":
                                               "http://h:1/v1"}},
        {"model_name": "v", "litellm_params": {"model": "my-org/my-model", "api_base": "http://h:1/v1"}},
    ]})
    assert [d.model_name for d in config.deployments] == ["f", "v"]
    assert any("provider 'bedrock'" in w and "skipped" in w for w in config.warnings)
    fireworks, custom = config.deployments
    # LiteLLM's OpenAI-compatible providers drop their prefix upstream; a server of one's own keeps the name.
    assert (fireworks.provider, fireworks.upstream_model) == ("openai_compatible", "accounts/x/models/llama")
    assert (custom.provider, custom.upstream_model) == ("openai_compatible", "my-org/my-model")
