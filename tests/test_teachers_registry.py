"""The provider registry: built-ins and third parties register the same way; batch support; no import cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from teacher_helpers import EchoBatch, EchoTeacher, make_echo

from sbs_data import SbsError
from sbs_data.teachers import registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_PROVIDERS", dict(registry._PROVIDERS))
    monkeypatch.setattr(registry, "_plugins_loaded", True)


def test_builtins_and_their_facts(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert registry.providers()[:6] == ["openai", "anthropic", "gemini", "openai-compat", "hf", "replay"]
    t = registry.parse_spec("openai:gpt-5-mini-2025-08-07")
    assert t.facts.matched == "gpt-5-mini" and t.facts.reasoning and t.prompt_cache
    a = registry.parse_spec("anthropic:claude-3-5-haiku-latest", prompt_cache=False)
    assert a.facts.min_cache_tokens == 2048 and a.prompt_cache is False
    c = registry.parse_spec("compat:llama3", base_urls=["http://a:1/v1"])  # alias
    assert c.provider == "openai-compat" and not c.facts.known
    assert registry.parse_spec("hf:/tmp/m", timeout=5.0, prompt_cache=False).facts.cost(100, 100) == 0.0
    prices = tmp_path / "p.yaml"
    prices.write_text("providers:\n  openai:\n    models:\n      gpt-5-mini: {input: 9, output: 9}\n")
    assert registry.parse_spec("openai:gpt-5-mini", prices_path=prices).facts.input == 9  # --prices


def test_batch_support(monkeypatch):
    from sbs_data.teachers.anthropic import AnthropicBatchAPI
    from sbs_data.teachers.openai import OpenAIBatchAPI

    monkeypatch.setenv("OPENAI_API_KEY", "k")
    o = registry.parse_spec("openai:gpt-4o-mini")
    a = registry.parse_spec("anthropic:claude-sonnet-4")
    c = registry.parse_spec("openai-compat:llama3", base_urls=["http://a:1/v1"])
    assert registry.supports_batch(o) and registry.supports_batch(a) and not registry.supports_batch(c)
    assert type(registry.batch_api(o)) is OpenAIBatchAPI and type(registry.batch_api(a)) is AnthropicBatchAPI
    assert registry.batch_api(o).max_requests == 50_000 and registry.batch_api(a).max_requests == 100_000
    with pytest.raises(
        SbsError,
        match=r"--mode batch needs an openai:, anthropic: or gemini: teacher, not openai-compat:llama3",
    ):
        registry.batch_api(c)


def test_third_party_provider(clean_registry):
    with pytest.raises(
        SbsError,
        match="unknown teacher provider 'echo'.*openai, anthropic, gemini, openai-compat, hf or replay",
    ):
        registry.parse_spec("echo:v1")
    registry.register("echo", make_echo, batch=EchoBatch, aliases=("parrot",))
    t = registry.parse_spec("parrot:v1", shout=True)
    assert isinstance(t, EchoTeacher) and t.shout and t.spec == "echo:v1"
    assert not t.facts.known and t.facts.warning().startswith("echo:v1 is not in the price table")
    assert registry.supports_batch(t) and isinstance(registry.batch_api(t), EchoBatch)
    assert "echo" in registry.providers() and "parrot" not in registry.providers()
    with pytest.raises(SbsError, match="does not apply to echo"):
        registry.parse_spec("echo:v1", base_urls=["http://x"])
    with pytest.raises(ValueError):
        registry.register("bad:prefix", make_echo)


def test_entry_point_plugins(tmp_path, monkeypatch):
    """A package that declares an `sbs_data.teachers` entry point is registered without being imported."""
    dist = tmp_path / "echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sbs_data.teachers]\necho = echo_plugin:hook\n")
    (tmp_path / "echo_plugin.py").write_text(
        "from teacher_helpers import make_echo, EchoBatch\n"
        "def hook(register):\n    register('echo', make_echo, batch=EchoBatch)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_PROVIDERS", dict(registry._PROVIDERS))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    t = registry.parse_spec("echo:v2")
    assert t.provider == "echo" and registry.supports_batch(t)

    (tmp_path / "echo_plugin.py").write_text("def hook(register):\n    raise RuntimeError('boom')\n")
    sys.modules.pop("echo_plugin", None)
    monkeypatch.setattr(registry, "_PROVIDERS", {})
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.raises(
        SbsError, match=r"teacher plugin 'echo' \(echo_plugin:hook\) failed to register: boom"
    ):
        registry.parse_spec("echo:v2")


def test_no_import_cycle_involves_teachers():
    tool = Path("/work/shared/tools/import_cycles.py")
    if not tool.exists():
        pytest.skip("import_cycles.py not available")
    out = subprocess.run([sys.executable, str(tool), str(ROOT / "sbs_data")], capture_output=True, text=True)
    assert "sbs_data.teachers" not in out.stdout, out.stdout


def test_base_and_adapters_never_import_the_registry():
    """Only the registry knows every provider: base imports no adapter, and no adapter imports the registry
    (either would be the import cycle the old base.parse_spec had)."""
    import ast

    def imported(path: Path) -> set[str]:
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        return out

    teachers = ROOT / "sbs_data" / "teachers"
    adapters = {
        f"sbs_data.teachers.{n}"
        for n in ("openai", "anthropic", "gemini", "compat", "hf", "replay", "registry")
    }
    assert not imported(teachers / "base.py") & adapters
    for name in ("openai", "anthropic", "gemini", "compat", "hf", "replay", "batch_api", "models"):
        assert "sbs_data.teachers.registry" not in imported(teachers / f"{name}.py"), name
