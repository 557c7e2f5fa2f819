"""Read once, ask many: a model's state after reading a document, saved and reloaded to answer questions.

Reading a long document is the expensive part of answering a question about it; the question itself is a
few tokens. So the document is read once (:func:`read_tokens`, :func:`read_text`) into a
:class:`ModelState` (the model's cache after the last document token), which can be saved
(:meth:`ModelState.save`), loaded (:meth:`ModelState.load`) and asked any number of questions
(:func:`ask_ids`, :func:`ask_text`), each from an independent copy. Asking from the state gives exactly
the tokens that generating from document + question in one call gives (MEMORY-SPEC property 2, chunking
invariance: the document is only fed in pieces, with the cache carried between them).

What the state holds, per family:

- ``lm2`` (memory on): per block the memory (1, N, D), the open segment's block inputs (1, S, D), the
  short convolution's look-back (1, k-1, D) with ``short_conv`` and the attention keys/values. With an
  attention window W the keys are trimmed to the last W-1, so the state's size does not depend on the
  document's length; without a window every key is kept and the state grows with the document.
- ``vanilla`` (LM2 with ``use_memory=False``): its attention cache alone. Window-sized with a window,
  the whole document's keys/values without one.
- ``rmt``: the memory tokens (1, M, D) and the embeddings of the open segment (< S tokens): constant.

A saved state is a folder: ``state.safetensors`` (every tensor) and ``manifest.json`` (written last: the
model family, the config it was read with and its fingerprint, the dtype, the tensors' names and shapes,
the file's size and SHA-256, the lm2 version, the document's token count). Loading refuses, by a one-line
``ValueError`` naming what differs, a state read by another family or config, in another dtype, or whose
file was cut short or changed after the save (a missing folder, manifest or file: ``FileNotFoundError``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lm2.models.lm2.cache_lm2 import LM2Cache
from lm2.models.outputs import CACHE_FIELD, output_cache
from lm2.models.rmt.modeling_rmt import RMTCache
from lm2.run_folder import sha256
from lm2.utils.io import atomic_write, atomic_write_text

STATE_FILE = "state.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT = "lm2-state"
FORMAT_VERSION = 1
# What loading reads of a manifest (``save`` writes these and a few more: the lm2 version, the tensors' dtypes).
MANIFEST_KEYS = ("family", "fingerprint", "config", "dtype", "tokens", "tensors", "file", "bytes", "sha256")

# Config keys that do not change what a state means: bookkeeping, output switches, and the two
# implementation switches whose paths compute the same function (the fast/reference memory, the
# blocked/masked attention; both pairs are tested equal), so a state read with one is valid for the other.
IGNORED_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "architectures",
        "torch_dtype",
        "dtype",
        "_name_or_path",
        "use_cache",
        "return_dict",
        "output_hidden_states",
        "output_attentions",
        "chunk_size_feed_forward",
        "id2label",
        "label2id",
        "problem_type",
        "memory_impl",
        "attention_impl",
    }
)

Cache = LM2Cache | RMTCache
Progress = Callable[[int, int], None]  # (tokens read so far, tokens in all)


def model_family(model: Any) -> str:
    """``lm2``, ``vanilla`` or ``rmt``: which kind of state ``model`` keeps."""
    model_type = getattr(model.config, "model_type", None)
    if model_type == "rmt":
        return "rmt"
    if model_type == "lm2":
        return "lm2" if model.config.memory_layer_indices else "vanilla"
    raise ValueError(
        f"reading into a state needs an LM2, vanilla LM2 or RMT model; this one has model_type {model_type!r}"
    )


def state_config(model: Any) -> dict[str, Any]:
    """The part of the model's config a state depends on (everything but :data:`IGNORED_CONFIG_KEYS`)."""
    config = model.config.to_dict()
    # JSON round trip: the manifest stores this, and loading compares what was stored (tuples -> lists).
    return json.loads(
        json.dumps({k: v for k, v in config.items() if k not in IGNORED_CONFIG_KEYS}, sort_keys=True)
    )


def fingerprint(family: str, config: dict[str, Any]) -> str:
    """SHA-256 of the family and the state-relevant config (see :func:`state_config`)."""
    text = json.dumps({"family": family, "config": config}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ModelState:
    """A model's cache after reading a document of ``tokens`` tokens (batch 1), and what it was read by.

    ``info`` is free-form JSON-able data saved with the state (the commands record the prompt layout).
    """

    cache: Cache
    family: str
    config: dict[str, Any]
    tokens: int
    dtype: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.family, self.config)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the state by name (those of ``LM2Cache.tensors`` / ``RMTCache.tensors``)."""
        return self.cache.tensors()

    def nbytes(self) -> int:
        """Bytes of the state's tensors (what its size in memory and, nearly, on disk is)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def copy(self) -> ModelState:
        """A deep, independent copy: asking from it (which extends its cache) leaves this state unchanged."""
        cloned = {name: t.clone() for name, t in self.tensors().items()}
        cache = _cache_from_tensors(self.family, cloned, self.config["num_hidden_layers"])
        info = json.loads(json.dumps(self.info))  # a deep copy of plain JSON data
        return ModelState(cache, self.family, dict(self.config), self.tokens, self.dtype, info)

    def generation_inputs(self, question_ids: torch.Tensor) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` continuing from this state with ``question_ids`` (1, Q).

        ``generate`` is given only the new tokens and a mask over document + new tokens (so it knows the
        cache already holds the document), and a copy of the cache: generation extends the cache it is
        given in place. The output holds the question followed by the generated tokens.
        """
        question_ids = _as_batch(question_ids)
        mask = torch.ones(
            1, self.tokens + question_ids.shape[1], dtype=torch.long, device=question_ids.device
        )
        return {"input_ids": question_ids, "attention_mask": mask, CACHE_FIELD: self.copy().cache}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``state.safetensors`` and, last, ``manifest.json`` into ``directory``; return the folder.

        The manifest is removed first and written only once the tensors are on disk, so a folder whose
        save was interrupted has no manifest: never one that loads wrong.
        """
        from safetensors.torch import save_file

        from lm2 import __version__

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST_FILE).unlink(missing_ok=True)
        # safetensors wants contiguous tensors that share no storage, on the CPU.
        tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in self.tensors().items()}
        atomic_write(directory / STATE_FILE, lambda p: save_file(tensors, str(p)))
        path = directory / STATE_FILE
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "lm2_version": __version__,
            "family": self.family,
            "fingerprint": self.fingerprint,
            "config": self.config,
            "dtype": self.dtype,
            "tokens": self.tokens,
            "info": self.info,
            "tensors": {
                name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                for name, t in tensors.items()
            },
            "file": STATE_FILE,
            "bytes": path.stat().st_size,
            "sha256": sha256(path),
        }
        atomic_write_text(directory / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, model: Any) -> ModelState:
        """The state saved in ``directory``, on ``model``'s device, refused unless ``model`` could have read it."""
        from safetensors.torch import load_file

        directory = Path(directory)
        manifest = read_manifest(directory)
        family = model_family(model)
        if manifest["family"] != family:
            raise ValueError(
                f"{directory} was read by a model of family {manifest['family']}; this model's family is {family}: "
                "read the document again with this model (`lm2 read`)"
            )
        config = state_config(model)
        if manifest["fingerprint"] != fingerprint(family, config):
            raise ValueError(f"{directory} was read by another model config ({_config_diff(manifest['config'], config)}): "
                             "read the document again with this model (`lm2 read`)")  # fmt: skip
        dtype = str(model.dtype).removeprefix("torch.")
        if manifest["dtype"] != dtype:
            raise ValueError(
                f"{directory} was read in {manifest['dtype']}; this model runs in {dtype}: load the model in "
                f"{manifest['dtype']} (--dtype) or read the document again"
            )
        path = directory / manifest["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (listed in {directory / MANIFEST_FILE})")
        size = path.stat().st_size
        if size != manifest["bytes"]:
            raise ValueError(
                f"{path}: {size} bytes, but the manifest says {manifest['bytes']}: the file was cut short or "
                "changed after the save; read the document again"
            )
        if sha256(path) != manifest["sha256"]:
            raise ValueError(
                f"{path}: its SHA-256 differs from the manifest's: the file changed after the save; read the "
                "document again"
            )
        tensors = load_file(str(path), device=str(model.device))
        shapes = {name: list(t.shape) for name, t in tensors.items()}
        listed = {name: spec["shape"] for name, spec in manifest["tensors"].items()}
        if shapes != listed:
            raise ValueError(
                f"{path}: its tensors are not those its manifest lists ({sorted(shapes)} vs {sorted(listed)})"
            )
        cache = _cache_from_tensors(family, tensors, model.config.num_hidden_layers)
        return cls(cache, family, config, manifest["tokens"], dtype, manifest.get("info", {}))


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a saved state, checked to be one (a missing folder or manifest: FileNotFoundError)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"state folder not found: {directory} (make one with `lm2 read --out`)")
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; {directory} is not a saved state (or its save did not finish): read the document again"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupt, not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f'{path}: not the manifest of a saved lm2 state (no "format": "{FORMAT}")')
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: state format version {manifest.get('format_version')}; this lm2 reads version {FORMAT_VERSION}"
        )
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"{path}: corrupt, it lacks {', '.join(missing)}: read the document again")
    return manifest


@torch.no_grad()
def feed_tokens(
    model: Any, ids: torch.Tensor | list[int], chunk_tokens: int = 4096, progress: Progress | None = None
) -> Any:
    """Feed token ids (T,) or (1, T) through any causal LM with a cache, in chunks; return the cache.

    Each chunk carries the cache of the one before, so the result equals one forward over all the ids,
    while the memory used stays that of one chunk plus the cache (flat with an attention window or RMT; a
    full-attention cache grows with the input, as it would in one call). Only the last position's logits
    are computed: the cache needs none, and the vocabulary projection of every token would be wasted
    work. ``progress(done, total)`` is called after each chunk.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    ids = _as_batch(ids).to(model.device)
    total = ids.shape[1]
    if total == 0:
        raise ValueError("empty document: there are no tokens to read")
    cache = None
    for start in range(0, total, chunk_tokens):
        piece = ids[:, start : start + chunk_tokens]  # (1, <= chunk_tokens)
        out = model(input_ids=piece, use_cache=True, logits_to_keep=1, **{CACHE_FIELD: cache})
        cache = output_cache(out)
        if progress is not None:
            progress(start + piece.shape[1], total)
    return cache


def read_tokens(
    model: Any, ids: torch.Tensor | list[int], chunk_tokens: int = 4096, progress: Progress | None = None
) -> ModelState:
    """Read a document's token ids (T,) or (1, T) in chunks (:func:`feed_tokens`) into a :class:`ModelState`."""
    family = model_family(model)
    cache = feed_tokens(model, ids, chunk_tokens, progress)
    dtype = str(model.dtype).removeprefix("torch.")
    return ModelState(cache, family, state_config(model), cache.get_seq_length(), dtype)


def read_text(
    model: Any, tokenizer: Any, text: str, chunk_tokens: int = 4096, progress: Progress | None = None
) -> ModelState:
    """Tokenize ``text`` as the start of a sequence (with the tokenizer's special tokens) and read it."""
    ids = tokenizer(text)["input_ids"]
    if not text.strip() or not ids:
        raise ValueError("empty document: the text holds no tokens to read")
    return read_tokens(model, ids, chunk_tokens, progress)


def check_question(model: Any, n_tokens: int) -> None:
    """Refuse an empty question, and one longer than the model's attention window (if it has one)."""
    if n_tokens < 1:
        raise ValueError("empty question: give at least one token to answer")
    window = getattr(model.config, "attention_window", None)
    if window is not None and n_tokens > window:
        raise ValueError(
            f"the question is {n_tokens} tokens, longer than the model's attention window of {window} tokens: "
            "with a window the question must fit in it (its start would be out of the answer's sight); shorten it"
        )


@torch.no_grad()
def ask_ids(
    model: Any,
    state: ModelState,
    question_ids: torch.Tensor | list[int],
    max_new_tokens: int = 20,
    **generate: Any,
) -> torch.Tensor:
    """Greedy answer tokens (1, <= max_new_tokens) to ``question_ids`` after the state's document.

    The state is not changed (generation runs on a copy). ``generate`` goes to ``model.generate``
    (e.g. ``pad_token_id``, ``eos_token_id``).
    """
    question = _as_batch(question_ids).to(model.device)
    check_question(model, question.shape[1])
    out = model.generate(
        **state.generation_inputs(question),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        **generate,
    )
    return out[:, question.shape[1] :]


def ask_text(model: Any, tokenizer: Any, state: ModelState, question: str, max_new_tokens: int = 20) -> str:
    """The greedy answer to ``question`` (tokenized as a continuation: no special tokens), decoded."""
    ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    new = ask_ids(model, state, ids, max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(new[0], skip_special_tokens=True)


def _as_batch(ids: torch.Tensor | list[int]) -> torch.Tensor:
    """Token ids as a (1, T) long tensor: a state holds one document."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(
            f"a state holds one sequence: give token ids of shape (T,) or (1, T), got {tuple(ids.shape)}"
        )
    return ids


def _cache_from_tensors(family: str, tensors: dict[str, torch.Tensor], num_layers: int) -> Cache:
    if family == "rmt":
        return RMTCache.from_tensors(tensors)
    return LM2Cache.from_tensors(tensors, num_layers)


def _config_diff(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """``key: state X, this model Y`` for every key that differs (the first few)."""
    keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    parts = [f"{k}: state {saved.get(k)!r}, this model {current.get(k)!r}" for k in keys[:4]]
    return "; ".join(parts) + (f"; and {len(keys) - 4} more" if len(keys) > 4 else "")
