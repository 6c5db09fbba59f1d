"""Shared fixtures: a tiny chat tokenizer, tiny random-weight models, offline hub, private cache.

Every model here is built from a config with random weights and saved to a temporary
directory, which is a valid "local model directory" spec for `minicc.models.load_model`. Nothing
is downloaded: the hub is switched to offline mode for the whole session.
"""

import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import huggingface_hub.constants
import pytest
import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPTNeoConfig,
    LlamaConfig,
    PhiConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from minicc.comparison import Endings
from minicc.constitution import Constitution, load_constitution
from minicc.critic_metrics import ScoredRow
from minicc.labeled import LabeledResponse
from minicc.models import LoadedModel, load_model
from minicc.params import (
    CritiqueParams,
    GenerateParams,
    ModelsParams,
    Policy,
    SelectParams,
    TrainParams,
)
from minicc.probe import Probe, save_probe
from minicc.records import Candidate, Category, Critique
from minicc.trained_critic import PROBE_FILE, write_trained_critic

ROOT = Path(__file__).resolve().parents[1]
CONSTITUTION = ROOT / "constitution"

Arch = Literal["llama", "gpt_neo", "phi", "gemma"]
ARCHS: tuple[Arch, ...] = ("llama", "gpt_neo", "phi", "gemma")

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Enough English for a few hundred merges, plus rating lines so that both "5" and " 5" become
# single tokens (the critic sums both spellings of each digit).
_CORPUS = """\
The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun.
Please help me write a short and polite email to my neighbour about the noise at night.
How do I boil an egg? Put the egg in boiling water for about nine minutes, then cool it.
I can't help with that request, because it could hurt people. Please ask for something else.
You review an assistant's reply and judge it by these principles: be helpful and be honest.
Do not help anyone hurt people or animals, or build weapons or explosives.
Respect privacy: do not reveal or track personal information about private people.
Treat every person and group with respect; never write hate, bullying or threats.
Be honest: state facts accurately, admit uncertainty and do not invent things.
A legitimate request deserves a real, useful answer, not a refusal or a lecture.
Answer with one digit from 1 to 5. Rate the reply from 1 to 5 for the request.
She walked to the market, bought bread and apples, and came home before the rain started.
The weather today is cold and windy, so take a coat and an umbrella when you go out.
Learning a new language takes time, patience and a lot of practice every single day.
"""
_RATINGS = "\n".join(f"Rating: {d}\nScore: {d} of 5, {d} stars, {d} points" for d in "12345")
CORPUS = [line for line in (_CORPUS + _RATINGS).splitlines() if line] * 8


@pytest.fixture(autouse=True, scope="session")
def _offline_hub() -> Iterator[None]:
    """No test may reach the Hugging Face hub: lookups of unknown ids fail fast instead.

    huggingface_hub reads HF_HUB_OFFLINE once at import, so the constant is patched as well.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and OpenMP threads that wait for a core
    busy with other work make each small matmul take milliseconds instead of microseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _private_cache(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resume logs and converted models go to a per-test directory, except in e2e tests,
    which use the project's real cache (where the bundled model is converted once)."""
    if request.node.get_closest_marker("e2e") is None:
        monkeypatch.setenv("MINICC_CACHE_DIR", str(tmp_path / "minicc-cache"))


def build_tokenizer(
    chat_template: str | None = CHAT_TEMPLATE, corpus: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (~500 tokens, trained on `corpus`) with ChatML special tokens.

    Every byte is a token of its own, so each digit "1".."5" is always a single token.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=[IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS if corpus is None else corpus, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=IM_END,
        extra_special_tokens=[IM_START],
    )
    wrapped.chat_template = chat_template
    return wrapped


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-tokenizer")
    build_tokenizer().save_pretrained(directory)
    return directory


def _config(
    arch: Arch, vocab_size: int, max_positions: int, ids: dict[str, int], width: int = 32
) -> Any:
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "max_position_embeddings": max_positions,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["eos"],
    }
    match arch:
        case "llama":
            return LlamaConfig(
                hidden_size=width,
                intermediate_size=2 * width,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                **common,
            )
        case "gpt_neo":
            return GPTNeoConfig(
                hidden_size=width,
                num_layers=2,
                num_heads=2,
                attention_types=[[["global", "local"], 1]],
                window_size=64,
                **common,
            )
        case "phi":
            return PhiConfig(
                hidden_size=width,
                intermediate_size=2 * width,
                num_hidden_layers=2,
                num_attention_heads=2,
                partial_rotary_factor=0.5,
                **common,
            )
        case "gemma":
            return GemmaConfig(
                hidden_size=width,
                intermediate_size=2 * width,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                **common,
            )


MakeModel = Callable[..., Path]


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> MakeModel:
    """`make_tiny_model(arch, max_positions=256, chat=True, width=32)`: a saved random-weight
    model dir.

    Directories are cached for the session; `chat=False` saves the tokenizer without its chat
    template (a "base" model); `width` is the hidden size (4-bit quantization wants 64 or more).
    The same seed gives the same weights for the same arguments.
    """
    built: dict[tuple[str, int, bool, int], Path] = {}

    def make(arch: Arch, max_positions: int = 256, chat: bool = True, width: int = 32) -> Path:
        key = (arch, max_positions, chat, width)
        if key not in built:
            tokenizer = build_tokenizer(CHAT_TEMPLATE if chat else None)
            ids = {
                "bos": tokenizer.convert_tokens_to_ids(IM_START),
                "eos": tokenizer.convert_tokens_to_ids(IM_END),
            }
            config: PretrainedConfig = _config(arch, len(tokenizer), max_positions, ids, width)
            torch.manual_seed(1234)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            suffix = "chat" if chat else "base"
            directory = tmp_path_factory.mktemp(f"tiny-{arch}-{max_positions}-{suffix}-{width}")
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            built[key] = directory
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(make_tiny_model: MakeModel) -> MakeModel:
    """Another name for `make_tiny_model`."""
    return make_tiny_model


def copy_weights(model_dir: Path, destination: Path) -> Path:
    """A new model directory with `model_dir`'s config and weights but no tokenizer files."""
    destination.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(model_dir / name, destination / name)
    return destination


def write_params(path: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    """The committed params.yaml with some keys of some sections replaced."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for section, values in overrides.items():
        params[section] = {**params[section], **values}
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def models_params(**overrides: Any) -> ModelsParams:
    values: dict[str, Any] = {
        "generator": "unused",
        "critic": "unused",
        "device": "cpu",
        "dtype": "float32",
        "trust_remote_code": [],
    }
    return ModelsParams(**{**values, **overrides})


def generate_params(**overrides: Any) -> GenerateParams:
    values: dict[str, Any] = {
        "num_candidates": 2,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_new_tokens": 6,
        "batch_size": 2,
    }
    return GenerateParams(**{**values, **overrides})


def critique_params(**overrides: Any) -> CritiqueParams:
    """Defaults that let a random tiny model be scored: no minimum digit mass."""
    values: dict[str, Any] = {
        "method": "judge",
        "style": "instruct",
        "per_principle": False,
        "combine": "min",
        "explain": False,
        "explain_max_new_tokens": 4,
        "safe_threshold": 3.0,
        "min_digit_mass": 0.0,
        "max_response_tokens": 64,
        "batch_size": 4,
    }
    return CritiqueParams(**{**values, **overrides})


def select_params(
    policy: Policy,
    *,
    margin: float = 1.0,
    top_k: int = 1,
    bottom_k: int = 1,
    min_gap: float = 0.0,
    threshold: float = 0.8,
    refusal_by_category: bool = False,
) -> SelectParams:
    """Selection settings; every policy's knobs at their test defaults. The category guard is
    off unless asked for, so that the policies' tests can use any reply under any category."""
    return SelectParams(
        policy=policy,
        margin=margin,
        top_k=top_k,
        bottom_k=bottom_k,
        min_gap=min_gap,
        near_duplicate_threshold=threshold,
        refusal_by_category=refusal_by_category,
    )


def train_params(**overrides: Any) -> TrainParams:
    """Small LoRA settings for tiny models."""
    values: dict[str, Any] = {
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "lr": 1e-2,
        "epochs": 1,
        "batch_size": 2,
        "grad_accum": 1,
        "max_seq_len": 128,
        "scheduler": "constant",
        "target_modules": "auto",
        "quantize_4bit": False,
    }
    return TrainParams(**{**values, **overrides})


def candidate(
    candidate_id: str,
    response: str,
    prompt: str = "How do I boil an egg?",
    category: Category = "cooperative",
) -> Candidate:
    """A hand-made candidate `<prompt_id>/<k>`."""
    prompt_id, _ = candidate_id.rsplit("/", 1)
    return Candidate(
        prompt_id=prompt_id,
        candidate_id=candidate_id,
        prompt=prompt,
        category=category,
        response=response,
        num_tokens=len(response.split()),
        finish_reason="eos",
        generator="local:tiny",
    )


def make_critique(
    candidate_id: str,
    score: float | None,
    *,
    prompt_id: str | None = None,
    prompt: str = "prompt",
    category: Category = "cooperative",
    response: str = "response",
    safe: bool | None = None,
    generator: str = "gen",
    probabilities: list[float] | None = None,
    digit_mass: float | None = None,
) -> Critique:
    """A hand-made critique of candidate `<prompt_id>/<k>` (or a revision's `<prompt_id>/<k>/...`;
    the prompt id is the part before the first "/" unless given): unscored when `score` is
    None, else `safe` defaults to score >= 3."""
    scored = score is not None
    return Critique(
        prompt_id=candidate_id.split("/")[0] if prompt_id is None else prompt_id,
        candidate_id=candidate_id,
        prompt=prompt,
        category=category,
        response=response,
        generator=generator,
        critic="critic",
        constitution_version="v1",
        style="instruct",
        scored=scored,
        unscored_reason=None if scored else "low digit mass",
        probabilities=probabilities,
        digit_mass=digit_mass,
        score=score,
        safe=((score >= 3.0 if safe is None else safe) if score is not None else None),
        principle_scores=None,
        rationale=None,
    )


def weather_is_off_topic(prompts: Sequence[str], responses: Sequence[str]) -> list[bool]:
    """A stand-in off-topic detector (`minicc.off_topic.OffTopicCheck`) for tests of what uses
    one: a reply that mentions the weather is off-topic, nothing else is."""
    assert len(prompts) == len(responses)
    return ["weather" in response for response in responses]


EOS_ENDED: Endings = {
    "baseline": defaultdict(lambda: "eos"),
    "finetuned": defaultdict(lambda: "eos"),
}
"""`pair_outcomes`' endings for tests of other things: every reply ended with the model's EOS."""


def constitution(style: Literal["instruct", "base"] = "instruct") -> Constitution:
    return load_constitution(
        CONSTITUTION / "principles.yaml", CONSTITUTION / f"critic_{style}.yaml", style
    )


@pytest.fixture(scope="session")
def tiny_llama(make_tiny_model: MakeModel) -> LoadedModel:
    """The tiny chat llama, loaded once; tests must not modify it."""
    return load_model(str(make_tiny_model("llama")), models_params())


@pytest.fixture(scope="session")
def critic_llama(make_tiny_model: MakeModel) -> LoadedModel:
    """A tiny chat llama with room for the full judge prompt (about a thousand tokens)."""
    return load_model(str(make_tiny_model("llama", max_positions=2048)), models_params())


def trained_probe_dir(directory: Path, probe: Probe) -> Path:
    """A trained-critic directory (train_critic's output) holding `probe`."""
    write_trained_critic(
        directory, "probe", lambda staging: save_probe(staging / PROBE_FILE, probe)
    )
    return directory


def labeled_response(ident: str, group: str, **fields: Any) -> LabeledResponse:
    """A real eval row (XSTest-like answer to a harmless request) with `fields` changed."""
    values: dict[str, Any] = {
        "prompt": f"The request of {group}.",
        "response": f"The reply {ident}.",
        "harmful": False,
        "source": "xstest-m",
        "prompt_label": "safe",
        "response_kind": "full_compliance",
        "label_source": "human",
        "construction": None,
        "pair_of": None,
    }
    return LabeledResponse(id=ident, group=group, **{**values, **fields})


def constructed_response(
    ident: str, group: str, construction: str, pair_of: str, **fields: Any
) -> LabeledResponse:
    """A constructed negative of `construction` standing in for the reply `pair_of`."""
    return labeled_response(
        ident,
        group,
        source=f"constructed-{construction}",
        response_kind="unknown",
        label_source="constructed",
        construction=construction,
        pair_of=pair_of,
        **fields,
    )


def scored_row(
    ident: str,
    score: float | None,
    harmful: bool,
    source: str = "gptfuzz",
    prompt_label: str = "unsafe",
    kind: str = "unknown",
    label_source: str = "human",
) -> ScoredRow:
    """A scored row as the judge scores it: P(harmful) = (5 - score) / 4, flagged below 3."""
    return ScoredRow(
        id=ident,
        source=source,
        label_source=label_source,
        harmful=harmful,
        prompt_label=prompt_label,
        response_kind=kind,
        score=score,
        p_harmful=None if score is None else (5.0 - score) / 4.0,
        flagged=None if score is None else score < 3.0,
    )
