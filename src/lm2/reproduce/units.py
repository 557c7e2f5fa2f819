"""The units of a study as data: each a small typed record, planned once by the study and read by its
scheduler and its report alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UnitKind = Literal["tokenizer", "data", "text_tokenizer", "text_data", "train", "table1", "ppl", "mmlu", "analysis"]
_FIXED_NAMES = {"tokenizer": "tokenizer", "text_tokenizer": "text:tokenizer", "text_data": "text:data",
                "analysis": "analysis"}  # fmt: skip
_ARM_KINDS = ("train", "table1", "ppl", "mmlu")  # the units of one arm and seed


@dataclass(frozen=True)
class Unit:
    """One unit of a study: what it makes (``kind``) and of what (arm and seed, data split, retrieval).

    ``name`` is its id in messages, folder names (``units/<name, ':' as '/'>``) and results.json, e.g.
    ``train:lm2:s0``, ``table1:vanilla+rag:s1``, ``data:test``; :meth:`parse` reads it back.
    """

    kind: UnitKind
    arm: str | None = None
    seed: int | None = None
    split: str | None = None
    rag: bool = False

    @property
    def name(self) -> str:
        if self.kind in _FIXED_NAMES:
            return _FIXED_NAMES[self.kind]
        if self.kind == "data":
            return f"data:{self.split}"
        return f"{self.kind}:{self.row}:s{self.seed}"

    @property
    def row(self) -> str:
        """The arm as the tables name its row: with ``+rag`` for an arm scored over retrieved context."""
        return f"{self.arm}+rag" if self.rag else str(self.arm)

    @classmethod
    def parse(cls, name: str) -> Unit:
        for kind, fixed in _FIXED_NAMES.items():
            if name == fixed:
                return cls(kind)
        kind, _, rest = name.partition(":")
        if kind == "data" and rest:
            return cls("data", split=rest)
        row, _, seed = rest.rpartition(":")
        if kind in _ARM_KINDS and row and seed[:1] == "s" and seed[1:].isdigit():
            return cls(kind, row.removesuffix("+rag"), int(seed[1:]), rag=row.endswith("+rag"))
        raise ValueError(f"not a study unit: {name!r}")
