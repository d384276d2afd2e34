"""Vocabularies: token <-> id maps built from training data, saved beside checkpoints.

A `Vocabulary` is an immutable, ordered list of token strings. The special tokens it was
built with come first, in the order `pad, unk, bos, eos` (a role set to `None` is left out),
so `pad` is id 0 whenever there is one and a float mask is simply `ids != pad_id`. The other
tokens follow by decreasing training frequency, ties broken by the token string, so the same
training data always gives the same ids.

    vocab = Vocabulary.build(train_sentences, min_freq=1, max_size=None)
    ids = vocab.encode(["the", "cat", "<eos>"])        # int32 [len]
    vocab.save(workdir / "vocab.json"); Vocabulary.load(workdir / "vocab.json")

Out-of-vocabulary tokens map to `unk_id`; a vocabulary built with `unk=None` raises on them
(closed vocabularies: Penn Treebank, Tiny Shakespeare characters). `added_specials` are the
specials that never occur in the training data (the ones the pipeline adds; `num_specials`
counts them): for PTB, whose files already contain `<unk>` and get one `<eos>` per line, there
are none and `len(vocab)` is 10,000. `oov_rate` counts a data token spelled like an added
special (a test sentence's "<unk>" where training had none) as unseen in training.

A data token spelled like `unk`, `bos` or `eos` *is* that special (PTB's "<unk>" is its
unknown word, and readers append "<eos>"), as in torchtext and Hugging Face tokenizers. The
pad is the exception: padding is never data, and the pad id is what padding masks out (`ids
!= pad_id`), so a text's literal "<pad>" is a word the vocabulary cannot hold: `encode` gives
it `unk_id` like any unseen word, `build` never counts it as the pad (the pad is always one of
`added_specials`), and a closed vocabulary (no `unk`) refuses it, naming where it is.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

from rnn_jax.files import not_a_file, write_text_atomic
from rnn_jax.predicates import is_finite_number, is_int

SPECIAL_ROLES = ("pad", "unk", "bos", "eos")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """An ordered token list plus the names of its special tokens.

    Attributes:
      tokens: every token, specials first; the id of a token is its index.
      pad, unk, bos, eos: the special token strings, or `None` when the role is absent.
      added_specials: the specials that were added (did not occur in the training data);
        `num_specials` is their number.
    """

    tokens: tuple[str, ...]
    pad: str | None = "<pad>"
    unk: str | None = "<unk>"
    bos: str | None = "<bos>"
    eos: str | None = "<eos>"
    added_specials: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for token in self.tokens:
            if not isinstance(token, str):
                raise TypeError(
                    f"Vocabulary token {token!r} ({type(token).__name__}) is not a string"
                )
        if len(set(self.tokens)) != len(self.tokens):
            dup = [t for t, c in collections.Counter(self.tokens).items() if c > 1]
            raise ValueError(f"Vocabulary tokens must be distinct; repeated: {dup[:10]}")
        for role in SPECIAL_ROLES:
            token = getattr(self, role)
            if token is not None and token not in self._index:
                raise ValueError(f"Vocabulary {role}={token!r} is not one of its tokens")
        specials = [getattr(self, role) for role in SPECIAL_ROLES]
        if len(set(self.added_specials)) != len(self.added_specials) or any(
            token is None or token not in specials for token in self.added_specials
        ):
            raise ValueError(
                f"Vocabulary added_specials={self.added_specials!r} must be distinct specials "
                f"of the vocabulary ({[t for t in specials if t is not None]})"
            )

    @property
    def num_specials(self) -> int:
        """How many specials were added (did not occur in the training data)."""
        return len(self.added_specials)

    # Cached on first use: `cached_property` writes to the instance `__dict__` directly, which
    # a frozen dataclass allows (its fields, and so `==` and `hash`, are unaffected).
    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(
        cls,
        sequences: Iterable[Sequence[str]] | collections.Counter,
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        pad: str | None = "<pad>",
        unk: str | None = "<unk>",
        bos: str | None = "<bos>",
        eos: str | None = "<eos>",
    ) -> Vocabulary:
        """Builds a vocabulary from training token sequences (or a token Counter).

        Args:
          sequences: iterable of token lists, or a `collections.Counter` of token counts.
          min_freq: keep tokens seen at least this often (a number >= 1).
          max_size: at most this many tokens in total, specials included (an integer; None = no
            limit).
          pad, unk, bos, eos: special token strings; `None` leaves the role out.

        Raises:
          TypeError: when `sequences` is a string or holds one where a token sequence belongs
            (`["a b", "c"]` would otherwise be read character by character); a character
            vocabulary takes `[list(text)]` or `collections.Counter(text)`.
        """
        # A NaN (or inf) min_freq kept no token at all: every `count >= nan` is False.
        if not is_finite_number(min_freq) or min_freq < 1:
            raise ValueError(f"min_freq={min_freq!r} must be a number >= 1")
        if max_size is not None and not is_int(max_size):
            # A float failed inside the slice below ("slice indices must be integers"); True
            # was a size of 1.
            raise ValueError(f"max_size={max_size!r} must be an integer or None")
        pad_at = None  # where the data holds a token spelled like the pad, if it does
        if isinstance(sequences, collections.Counter):
            counts = sequences
            if pad is not None and counts.get(pad):
                pad_at = "the Counter"
        else:
            if isinstance(sequences, str):
                raise TypeError(
                    f"Vocabulary.build: sequences is a string ({sequences[:30]!r}); expected "
                    "an iterable of token sequences, e.g. [['the', 'cat'], ...]"
                )
            counts = collections.Counter()
            for index, tokens in enumerate(sequences):
                if isinstance(tokens, str):
                    raise TypeError(
                        f"Vocabulary.build: sequences[{index}] is a string ({tokens[:30]!r}), "
                        "not a sequence of tokens; split it into tokens first (a character "
                        "vocabulary: list(text))"
                    )
                counts.update(tokens)
                if pad_at is None and pad is not None and counts.get(pad):
                    pad_at = f"sequences[{index}]"
        for token in counts:
            # An int token made a vocabulary that encoded every string as <unk>; a mix of
            # types failed in the sort below ("'<' not supported between 'int' and 'str'").
            if not isinstance(token, str):
                raise TypeError(
                    f"Vocabulary.build: token {token!r} ({type(token).__name__}) is not a string"
                )
        specials = [t for t in (pad, unk, bos, eos) if t is not None]
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct, got {specials}")
        if pad_at is not None and unk is None:
            # `encode` maps a data "<pad>" to unk; without one it could only be the pad id,
            # which padding masks out: the token would silently weigh nothing.
            raise ValueError(
                f"Vocabulary.build: the data holds the pad token {pad!r} ({pad_at}); a "
                "vocabulary without unk cannot encode it as anything but padding; rename the "
                "token in the data or choose another pad"
            )
        if max_size is not None and max_size < len(specials):
            raise ValueError(f"max_size={max_size} is smaller than the {len(specials)} specials")
        rest = sorted(
            (t for t, c in counts.items() if c >= min_freq and t not in specials),
            key=lambda t: (-counts[t], t),
        )
        if max_size is not None:
            rest = rest[: max_size - len(specials)]
        # The pad is never a data token (a data "<pad>" encodes as unk), so it is always added.
        added = tuple(t for t in specials if t == pad or counts.get(t, 0) == 0)
        return cls(tuple(specials + rest), pad, unk, bos, eos, added)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        """Whether `token`, read as data, has an id of its own: false for the pad, which
        `encode` maps to unk (a reference's "<pad>" counted as in-vocabulary matched a
        hypothesis's `<unk>` in the translation BLEU)."""
        return token in self._data_index

    def _id(self, role: str) -> int:
        token = getattr(self, role)
        if token is None:
            raise ValueError(f"this vocabulary has no {role} token ({role}=None when built)")
        return self._index[token]

    @property
    def pad_id(self) -> int:
        return self._id("pad")

    @property
    def unk_id(self) -> int:
        return self._id("unk")

    @property
    def bos_id(self) -> int:
        return self._id("bos")

    @property
    def eos_id(self) -> int:
        return self._id("eos")

    @functools.cached_property
    def _data_index(self) -> dict[str, int]:
        # `_index` without the pad: the ids a data token can have (see the module docstring).
        return {t: i for t, i in self._index.items() if t != self.pad}

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """Token strings -> int32 ids `[len(tokens)]`; OOV -> `unk_id` (error if no unk).

        A token spelled like the pad is data, not padding: it gets `unk_id` (a closed
        vocabulary refuses it, naming its position), never `pad_id`.
        """
        index = self._data_index
        if self.unk is None:
            try:
                return np.fromiter((index[t] for t in tokens), dtype=np.int32, count=len(tokens))
            except KeyError as e:
                token = e.args[0]
                if token == self.pad:
                    raise ValueError(
                        f"token {token!r} at position {list(tokens).index(token)} is spelled like "
                        "the pad token, which is not a data token; this closed vocabulary "
                        "(built with unk=None) has no other id for it"
                    ) from None
                raise ValueError(
                    f"token {token!r} is not in this closed vocabulary (built with unk=None)"
                ) from None
        unk_id = index[self.unk]

        def lookup(token: str) -> int:
            # only a token the index lacks is type-checked: ids or undecoded bytes passed for
            # tokens would otherwise all read as unk (`build` refuses them too)
            i = index.get(token)
            if i is None:
                if not isinstance(token, str):
                    raise TypeError(
                        f"Vocabulary.encode: token {token!r} ({type(token).__name__}) is not "
                        "a string"
                    )
                return unk_id
            return i

        return np.fromiter(map(lookup, tokens), np.int32, len(tokens))

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> token strings.

        Raises:
          ValueError: for an id that is not an integer (4.7, inf, "5" or True: `int` would
            truncate, overflow or parse it, and a bool mask is not ids) or is outside
            [0, len(self)) (a negative id would otherwise index from the end). An integral
            float (4.0) is that integer.
        """
        tokens = []
        for i in ids:
            # The library's one meaning of an integer (`predicates`), plus integral floats: a
            # bool (a mask passed for ids) decoded as pad/unk tokens, and an infinite float
            # raised OverflowError, not the documented ValueError.
            if not (is_int(i) or (is_finite_number(i) and float(i).is_integer())):
                raise ValueError(f"id {i!r} is not an integer")
            j = int(i)
            if not 0 <= j < len(self.tokens):
                raise ValueError(f"id {j} is outside the vocabulary [0, {len(self.tokens)})")
            tokens.append(self.tokens[j])
        return tokens

    def oov_rate(self, sequences: Iterable[Sequence[str]]) -> float:
        """Fraction of tokens (over all sequences) unseen in training: not in the vocabulary, or
        spelled like one of its `added_specials` (those never occurred in the training data, so
        a test token "<unk>" or "<pad>" is no more seen than any other new word)."""
        total = oov = 0
        seen = self._index.keys() - set(self.added_specials)
        for tokens in sequences:
            total += len(tokens)
            oov += sum(1 for t in tokens if t not in seen)
        return oov / total if total else 0.0

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (what `save` writes and a checkpoint stores)."""
        return {
            "tokens": list(self.tokens),
            **{role: getattr(self, role) for role in SPECIAL_ROLES},
            "added_specials": list(self.added_specials),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        """The vocabulary `to_dict` gave. A dict saved before session 23 holds `num_specials`
        (a count) instead of `added_specials`: 0 or every special says which were added; any
        other count cannot, and is refused."""
        d = dict(d)
        if "added_specials" not in d and "num_specials" in d:
            specials = [d[r] for r in SPECIAL_ROLES if d.get(r) is not None]
            if int(d["num_specials"]) not in (0, len(specials)):
                raise ValueError(
                    f"vocabulary dict with num_specials={d['num_specials']} of the specials "
                    f"{specials} (saved before session 23): which were added is unknown; "
                    "rebuild the vocabulary"
                )
            d["added_specials"] = specials if int(d["num_specials"]) else []
        missing = {"tokens", *SPECIAL_ROLES, "added_specials"} - set(d)
        if missing:
            raise ValueError(f"vocabulary dict is missing keys {sorted(missing)}")
        for key in ("tokens", "added_specials"):
            # tuple("abc") would be the three characters.
            if not isinstance(d[key], list | tuple):
                raise ValueError(f"vocabulary dict {key}={d[key]!r:.80} is not a list")
        return cls(tuple(d["tokens"]), *(d[r] for r in SPECIAL_ROLES), tuple(d["added_specials"]))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary as JSON (UTF-8), atomically: a temporary file beside `path` is
        renamed over it, so a reader (or a crash mid-write) sees the old file or the whole new
        one."""
        write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Reads a vocabulary written by `save`.

        Raises:
          FileNotFoundError: no such file. ValueError: naming `path`, when it is not JSON or
            lacks a vocabulary's keys.
        """
        if not os.path.isfile(path):
            what = not_a_file(path)
            raise FileNotFoundError(f"vocabulary file {path} {what}")
        with open(path, encoding="utf-8") as f:
            try:
                return cls.from_dict(json.load(f))
            except (ValueError, TypeError, AttributeError) as error:
                raise ValueError(f"{os.fspath(path)}: not a saved vocabulary ({error})") from None
