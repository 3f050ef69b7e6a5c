"""Gloss vocabulary: built from the training split only, blank = 0, glosses sorted (ids 1..V).

Out-of-vocabulary glosses of dev/test stay in the references (scoring uses strings); they have no
id, so :meth:`Vocabulary.encode` reports them instead of silently dropping them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BLANK = "<blank>"


@dataclass(frozen=True)
class Vocabulary:
    glosses: tuple[str, ...]  # index i+1 <-> glosses[i]; 0 is the CTC blank
    counts: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", {g: i + 1 for i, g in enumerate(self.glosses)})

    @classmethod
    def build(cls, train_sentences: Iterable[Sequence[str]]) -> Vocabulary:
        counts = Counter(g for sentence in train_sentences for g in sentence)
        return cls(tuple(sorted(counts)), dict(counts))

    @property
    def num_classes(self) -> int:
        return len(self.glosses) + 1

    def __contains__(self, gloss: str) -> bool:
        return gloss in self._index

    def encode(self, glosses: Sequence[str]) -> tuple[list[int], list[str]]:
        """(ids of the in-vocabulary glosses, the out-of-vocabulary glosses in order)."""
        ids, oov = [], []
        for g in glosses:
            i = self._index.get(g)
            if i is None:
                oov.append(g)
            else:
                ids.append(i)
        return ids, oov

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.glosses[i - 1] for i in ids if i != 0]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"blank": 0, "glosses": list(self.glosses), "counts": self.counts}, indent=1))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        data = json.loads(Path(path).read_text())
        return cls(tuple(data["glosses"]), dict(data.get("counts", {})))
