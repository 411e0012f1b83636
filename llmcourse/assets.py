"""The course's own small models, tokenizer and data sets, loaded through the real Hugging Face APIs.

    from llmcourse.assets import load_model, load_tokenizer, load_task
    model = load_model("course-lm")           # a Llama-style decoder, a few MB, loads in well under a second
    tok = load_tokenizer("course-lm")
    stories = load_task("stories")            # a datasets.DatasetDict with "train" and "test"

Everything is read from local folders with `from_pretrained` and `datasets.load_dataset`; nothing waits
on the network. The folder holding the assets is found in this order:

1. the environment variable ``LLMCOURSE_ASSETS`` (a folder with ``models/`` and ``data/``);
2. the ``assets/`` folder of the repository this package lives in (an editable install, or the repo itself);
3. an ``assets/`` folder in the current directory or one of its parents (a notebook in ``release/`` or
   ``solutions/`` of a checkout, with the package installed elsewhere);
4. ``<sys.prefix>/share/llmcourse/assets`` (assets installed as data next to the package).

Where a model hub is reachable, one setting swaps in a real pretrained model of the same family:
``LLMCOURSE_HUB=1`` (the defaults in ``HUB_MODELS``) or ``LLMCOURSE_HUB="course-lm=gpt2,course-mlm=bert-base-uncased"``.
The course sets ``HF_HUB_OFFLINE=1``, so a hub model is then read from the local Hugging Face cache only;
also set ``HF_HUB_OFFLINE=0`` before importing ``llmcourse`` to let it download.

If an asset is missing or damaged, the error says how to rebuild it (``make assets``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "AssetError", "MODELS", "TASKS", "TASK_FIELDS", "HUB_MODELS", "INSTRUCTION_TEMPLATE",
    "assets_dir", "model_path", "task_files", "load_model", "load_tokenizer", "load_task",
    "format_instruction", "format_few_shot", "hub_model_for",
]

# name -> (architecture family, the transformers Auto class that loads it)
MODELS: dict[str, tuple[str, str]] = {
    "course-lm": ("decoder-only", "AutoModelForCausalLM"),
    "course-mlm": ("encoder-only", "AutoModelForMaskedLM"),
    "course-t5": ("encoder-decoder", "AutoModelForSeq2SeqLM"),
    # course-lm fine-tuned to read retrieved passages, run ReAct traces and write programs (06_applications)
    "course-lm-apps": ("decoder-only", "AutoModelForCausalLM"),
}
TOKENIZER_ONLY = "course-tokenizer"  # the shared tokenizer without any model-specific post-processing

# The data sets and the fields of their rows (every set has a "train" and a "test" split).
TASK_FIELDS: dict[str, list[str]] = {
    "stories": ["text", "plot", "ending"],
    "instructions": ["task", "instruction", "input", "output"],
    "fewshot": ["task", "input", "output"],
    "arithmetic": ["question", "solution", "answer", "n_steps"],
    "titles": ["instruction", "input", "output"],
    "preferences": ["prompt", "chosen", "rejected"],
    "facts": ["name", "kind", "passage", "qa"],
    "bigmath": ["question", "answer", "start", "items", "steps"],
}
TASKS = list(TASK_FIELDS)

# Real models of the same three families, used only when LLMCOURSE_HUB asks for them.
HUB_MODELS = {
    "course-lm": "HuggingFaceTB/SmolLM2-135M",
    "course-mlm": "distilbert/distilbert-base-uncased",
    "course-t5": "google/flan-t5-small",
    "course-lm-apps": "HuggingFaceTB/SmolLM2-135M-Instruct",
}

REBUILD = ("Rebuild the course assets with `make assets` in the repository (about an hour on 2 CPU cores), "
           "restore them with `git checkout -- assets`, or set LLMCOURSE_ASSETS to a folder that holds them.")


class AssetError(FileNotFoundError):
    """A course asset is missing or damaged; the message says how to get it back."""


# ---------------------------------------------------------------------------------------------- prompts

INSTRUCTION_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
INSTRUCTION_TEMPLATE_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"


def format_instruction(instruction: str, input: str = "", output: str | None = None) -> str:
    """The one prompt format that course-lm was trained on (the response follows the last line)."""
    template = INSTRUCTION_TEMPLATE if input else INSTRUCTION_TEMPLATE_NO_INPUT
    prompt = template.format(instruction=instruction.strip(), input=input.strip())
    return prompt if output is None else prompt + output


def format_few_shot(examples: Iterable[tuple[str, str]] | Iterable[dict], query: str) -> str:
    """A few-shot prompt in course-lm's format: "Input: x\\nOutput: y" blocks, then the query's "Output:"."""
    blocks = []
    for ex in examples:
        x, y = (ex["input"], ex["output"]) if isinstance(ex, dict) else ex
        blocks.append(f"Input: {x}\nOutput: {y}\n\n")
    return "".join(blocks) + f"Input: {query}\nOutput:"


# ---------------------------------------------------------------------------------------------- finding assets

def _is_assets(path: Path, strict: bool = True) -> bool:
    """Does `path` look like the course's assets folder? (The searched places need both models/ and data/.)"""
    if strict:
        return (path / "models").is_dir() and (path / "data").is_dir()
    return (path / "models").is_dir() or (path / "data").is_dir()


def _candidates() -> list[tuple[str, Path]]:
    found = []
    env = os.environ.get("LLMCOURSE_ASSETS", "").strip()
    if env:
        found.append(("LLMCOURSE_ASSETS", Path(env).expanduser()))
    found.append(("the repository", Path(__file__).resolve().parents[1] / "assets"))
    cwd = Path.cwd().resolve()
    for parent in [cwd, *cwd.parents]:
        found.append(("the current directory or a parent", parent / "assets"))
    found.append(("the installed data", Path(sys.prefix) / "share" / "llmcourse" / "assets"))
    return found


def assets_dir() -> Path:
    """The folder with the course's models/ and data/ (see the module docstring for the search order)."""
    env = os.environ.get("LLMCOURSE_ASSETS", "").strip()
    if env:
        path = Path(env).expanduser()
        if not _is_assets(path, strict=False):
            raise AssetError(f"LLMCOURSE_ASSETS is set to {path}, which has no models/ or data/ folder. "
                             f"Point it at the assets/ folder of the course repository. {REBUILD}")
        return path
    for _, path in _candidates():
        if _is_assets(path):
            return path
    tried = ", ".join(str(p) for _, p in _candidates()[:2]) + ", the parents of the current directory"
    raise AssetError(f"The course assets were not found (looked in {tried}). {REBUILD}")


def _manifest(root: Path) -> dict[str, str]:
    try:
        return json.loads((root / "manifest.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _verify(root: Path, folder: Path, what: str) -> None:
    """Raise AssetError if a file of `folder` is missing, is a git-lfs pointer, or differs from the manifest."""
    manifest = _manifest(root)
    prefix = folder.relative_to(root).as_posix() + "/"
    expected = {k: v for k, v in manifest.items() if k.startswith(prefix)}
    for rel, digest in expected.items():
        path = root / rel
        if not path.is_file():
            raise AssetError(f"The {what} is incomplete: {path} is missing. {REBUILD}")
        with open(path, "rb") as f:
            head = f.read(64)
            if head.startswith(b"version https://git-lfs"):
                raise AssetError(f"{path} is a git-lfs pointer, not the file itself: run `git lfs pull`. {REBUILD}")
            h = hashlib.sha256(head)
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != digest:
            raise AssetError(f"The {what} is damaged: {path} does not match assets/manifest.json. {REBUILD} "
                             "(If you changed it on purpose, run `python assets/scripts/make_cards.py` to update "
                             "the manifest.)")


def model_path(name: str) -> Path:
    """The local folder of a course model (or of the shared tokenizer, for "course-tokenizer")."""
    if name == TOKENIZER_ONLY:
        path = assets_dir() / "tokenizer"
    elif name in MODELS:
        path = assets_dir() / "models" / name
    else:
        raise ValueError(f"Unknown course model {name!r}: choose one of {sorted(MODELS)} (or {TOKENIZER_ONLY!r}).")
    if not (path / "config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise AssetError(f"The course model {name!r} is missing: {path} has no config.json. {REBUILD}")
    return path


def task_files(name: str) -> dict[str, str]:
    """The JSON Lines files of a data set, by split."""
    if name not in TASK_FIELDS:
        raise ValueError(f"Unknown course data set {name!r}: choose one of {TASKS}.")
    folder = assets_dir() / "data" / name
    files = {split: folder / f"{split}.jsonl" for split in ("train", "test")}
    for split, path in files.items():
        if not path.is_file():
            raise AssetError(f"The {split} split of the data set {name!r} is missing ({path}). {REBUILD}")
    return {split: str(path) for split, path in files.items()}


# ---------------------------------------------------------------------------------------------- hub swap

def hub_model_for(name: str) -> str | None:
    """The hub model that replaces `name` under LLMCOURSE_HUB, or None to use the course's own model."""
    setting = os.environ.get("LLMCOURSE_HUB", "").strip()
    if not setting or setting.lower() in ("0", "false", "no", "off"):
        return None
    if setting.lower() in ("1", "true", "yes", "on"):
        return HUB_MODELS.get(name)
    choices = dict(part.split("=", 1) for part in setting.split(",") if "=" in part)
    return choices.get(name, None)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------------------------------- loading

class _quiet:
    """Hide transformers' "Loading weights" progress bar: it goes to stderr, which a graded cell must not write."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        if self.enabled:
            hf_logging.enable_progress_bar()


def _auto_class(name: str):
    import transformers

    return getattr(transformers, MODELS[name][1])


def load_model(name: str = "course-lm", auto_class: str | None = None, **kwargs: Any):
    """A course model through `from_pretrained` on its local folder (or the hub model LLMCOURSE_HUB names).

    `auto_class` picks another head on the same weights, e.g. a reward model:
    `load_model("course-lm", "AutoModelForSequenceClassification", num_labels=1)`. Other keyword arguments
    go to `from_pretrained` (for example `dtype=torch.float32`). The model comes back in eval mode, as
    `from_pretrained` leaves it. Each call returns a model of its own: without keyword arguments, a copy of the
    one the first call loaded from the same files.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown course model {name!r}: choose one of {sorted(MODELS)}.")
    if auto_class is None:
        cls = _auto_class(name)
    else:
        import transformers

        if not auto_class.startswith("AutoModel") or not hasattr(transformers, auto_class):
            raise ValueError(f"auto_class must name a transformers AutoModel class, not {auto_class!r}.")
        cls = getattr(transformers, auto_class)
    hub = hub_model_for(name)
    if hub:
        try:
            with _quiet():
                return cls.from_pretrained(hub, local_files_only=_offline(), **kwargs)
        except OSError as err:
            raise AssetError(f"The hub model {hub!r} (LLMCOURSE_HUB) could not be loaded"
                             f"{' from the local cache, and HF_HUB_OFFLINE=1 forbids downloading it' if _offline() else ''}: "
                             f"{err}. Unset LLMCOURSE_HUB to use the course's own {name!r}.") from err
    path = model_path(name)
    key = (str(path), cls.__name__, _stamp(path)) if not kwargs else None
    if key is not None and key in _LOADED:
        return copy.deepcopy(_LOADED[key])
    root = assets_dir()
    _verify(root, path, f"course model {name!r}")
    kwargs.setdefault("local_files_only", True)
    try:
        with _quiet():
            model = cls.from_pretrained(path, **kwargs)
    except Exception as err:  # a damaged config or weights file surfaces as many different exception types
        raise AssetError(f"The course model {name!r} in {path} could not be loaded ({type(err).__name__}: {err}). "
                         f"It is probably damaged. {REBUILD}") from err
    if key is None:
        return model
    while len(_LOADED) >= 8:
        _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = model  # never handed out: every caller gets a copy of it
    return copy.deepcopy(model)


# A course model as from_pretrained returned it, by its folder, class and files (name, size, times, inode): the same
# files give the same model, so a second load is a copy of the first (about 6 ms against 37 for course-lm, which the
# checks load for nearly every check). from_pretrained draws no random numbers, so nothing else changes.
_LOADED: dict[tuple, Any] = {}


def _stamp(folder: Path) -> tuple:
    try:
        return tuple((p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for p in sorted(folder.iterdir())
                     for st in [p.stat()])
    except OSError:
        return (object(),)  # unreadable now: never equal to a stored key, so the load below reports it


def load_tokenizer(name: str = "course-lm", **kwargs: Any):
    """A course tokenizer through `AutoTokenizer.from_pretrained` (each model folder has its own copy)."""
    from transformers import AutoTokenizer

    if name not in MODELS and name != TOKENIZER_ONLY:
        raise ValueError(f"Unknown course tokenizer {name!r}: choose one of {sorted(MODELS) + [TOKENIZER_ONLY]}.")
    hub = hub_model_for(name) if name in MODELS else None
    if hub:
        try:
            return AutoTokenizer.from_pretrained(hub, local_files_only=_offline(), **kwargs)
        except OSError as err:
            raise AssetError(f"The hub tokenizer {hub!r} (LLMCOURSE_HUB) could not be loaded: {err}. "
                             f"Unset LLMCOURSE_HUB to use the course's own {name!r}.") from err
    path = model_path(name)
    if not (path / "tokenizer.json").is_file():
        raise AssetError(f"The tokenizer of {name!r} is missing: {path} has no tokenizer.json. {REBUILD}")
    _verify(assets_dir(), path, f"tokenizer of {name!r}")
    kwargs.setdefault("local_files_only", True)
    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except Exception as err:
        raise AssetError(f"The tokenizer of {name!r} in {path} could not be loaded ({type(err).__name__}: {err}). "
                         f"It is probably damaged. {REBUILD}") from err


def load_task(name: str, split: str | None = None):
    """A course data set through `datasets.load_dataset("json", ...)`: a DatasetDict, or one split."""
    import datasets

    files = task_files(name)
    if split is not None and split not in files:
        raise ValueError(f"Unknown split {split!r}: the course data sets have 'train' and 'test'.")
    _verify(assets_dir(), Path(files["train"]).parent, f"data set {name!r}")
    bars = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # they go to stderr, which a graded cell must not write
    try:
        ds = datasets.load_dataset("json", data_files=files)
    except Exception as err:
        raise AssetError(f"The data set {name!r} in {Path(files['train']).parent} could not be read "
                         f"({type(err).__name__}: {err}). It is probably damaged. {REBUILD}") from err
    finally:
        if bars:
            datasets.enable_progress_bars()
    missing = [f for f in TASK_FIELDS[name] if f not in ds["train"].column_names]
    if missing:
        raise AssetError(f"The data set {name!r} lacks the fields {missing}: it is damaged or out of date. {REBUILD}")
    return ds[split] if split else ds
