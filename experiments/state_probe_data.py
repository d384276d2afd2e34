"""The state probe's data: UD sentences -> the probe streams, their probed positions and
every target's labels (`experiments.state_probe`'s probe-train and probe-test).

A stream joins sentences with `<eos>` after each (`stream`); its probed positions are the word
tokens t with t >= max(`probe.distances`) and t + 1 < T (`probe_positions`); the label columns,
in `target_names` order (`probe_targets`, `control_labels`), are the word k back as one of the
`probe.num_words` most frequent training tokens or "other", the UPOS tag of word t and of
token t + 1, then Hewitt & Liang's (2019) control tasks of those two tags, a random tag per LM
token type (`rnn_jax.probe_baselines.control_task`). `load_sentences` reads UD English-EWT and
refuses, before the LM trains, a probe set with no position to probe; `probe_sets` builds the
two `ProbeSet`s the experiment fits and scores its probes on.
"""

from __future__ import annotations

import collections
import dataclasses

import ml_collections
import numpy as np

from rnn_jax import probe_baselines
from rnn_jax.data.lm_corpus import LMCorpus
from rnn_jax.data.registry import load_dataset
from rnn_jax.data.vocab import Vocabulary
from rnn_jax.train import config as cfg

EOS = "<eos>"
UPOS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)  # fmt: skip
NEXT_UPOS = (*UPOS, EOS)  # the token after the last word is the sentence end
# The targets of a word's tag (and their control tasks): what `logistic` probes and what the
# lexical baseline is computed for. Each control target is "<target>_control".
TAG_TARGETS = ("upos", "upos_next")
CONTROL = "_control"
SPLITS = ("train", "valid", "test")


def distances(config: ml_collections.ConfigDict) -> list[int]:
    """`probe.distances` as ints (the rule has checked them)."""
    return [int(v) for v in str(config.probe.distances).split(",")]


def target_names(ks: list[int]) -> list[str]:
    """The probe targets, in table order: word k back for each k, the two UPOS ones, then
    their control tasks."""
    return [f"word_k{k}" for k in ks] + [*TAG_TARGETS] + [t + CONTROL for t in TAG_TARGETS]


def stream(sentences: list[dict]) -> tuple[list[str], list[str]]:
    """(forms, tags) `[T]` of `sentences` joined with `<eos>` after each (tag `<eos>`).

    Raises ValueError naming the first sentence whose `tokens` and `upos` differ in length
    (every later tag would sit on another word)."""
    forms, tags = [], []
    for index, sentence in enumerate(sentences):
        if len(sentence["tokens"]) != len(sentence["upos"]):
            raise ValueError(
                f"sentence {index}: {len(sentence['tokens'])} tokens but "
                f"{len(sentence['upos'])} UPOS tags"
            )
        forms += [*sentence["tokens"], EOS]
        tags += [*sentence["upos"], EOS]
    return forms, tags


def frequent_words(forms: list[str], num_words: int) -> dict[str, int]:
    """The `num_words` most frequent tokens of `forms` -> class ids 0.. (ties: by string);
    every other token is class `num_words` ("other")."""
    counts = collections.Counter(forms)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))[:num_words]
    return {w: i for i, w in enumerate(ranked)}


def probe_targets(
    forms: list[str], tags: list[str], words: dict[str, int], ks: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(positions int `[m]`, labels int `[m, len(ks) + 2]`) of a stream of `forms` and `tags`.

    Positions: word tokens (not `<eos>`) with t >= max(ks) and t + 1 < T. Label columns, in
    `target_names` order: the class of forms[t - k] in `words` (`len(words)`: other) per k,
    the index of tags[t] in `UPOS`, of tags[t + 1] in `NEXT_UPOS`.
    """
    positions = probe_positions(forms, ks)
    other = len(words)
    word_ids = np.array([words.get(f, other) for f in forms])
    tag_ids = np.array([NEXT_UPOS.index(t) for t in tags])
    columns = [word_ids[positions - k] for k in ks]
    columns += [tag_ids[positions], tag_ids[positions + 1]]
    if (columns[-2] == len(UPOS)).any():
        raise ValueError("a word position carries the <eos> tag")
    return positions, np.stack(columns, axis=1)


def probe_positions(forms: list[str], ks: list[int]) -> np.ndarray:
    """The probed positions of a stream of `forms`: int64 `[m]`, the word tokens (not `<eos>`)
    with t >= max(ks) (every distance reaches back into the stream) and t + 1 < T (a next
    tag exists)."""
    return np.array([t for t in range(max(ks), len(forms) - 1) if forms[t] != EOS], np.int64)


def holdout_cut(count: int, config: ml_collections.ConfigDict) -> int:
    """Where the last `probe.holdout_fraction` of `count` probe-train positions begins."""
    return int(count * (1 - config.probe.holdout_fraction))


def num_classes(config: ml_collections.ConfigDict) -> list[int]:
    """Per target (`target_names` order): words + other, UPOS, UPOS + `<eos>`, and the
    controls as their tasks."""
    tags = [len(UPOS), len(NEXT_UPOS)]
    return [config.probe.num_words + 1] * len(distances(config)) + tags + tags


def control_labels(words: np.ndarray, train_tags: np.ndarray, seed: int) -> np.ndarray:
    """The control tasks of `TAG_TARGETS` at word types `words [m]`: int `[m, 2]`, column i a
    random tag per word type (`probe_baselines.control_task` seeded `seed + i`), drawn from the
    distribution of target i in `train_tags int [n, 2]` (probe-train's UPOS, next UPOS).

    The types are the LM's tokens (`lm_types`), not the word forms: every form the LM reads
    as `<unk>` gets one control tag, since a probe of its states cannot tell them apart."""
    columns = []
    for i, classes in enumerate((len(UPOS), len(NEXT_UPOS))):
        counts = np.bincount(train_tags[:, i], minlength=classes)
        columns.append(probe_baselines.control_task(list(words), counts, seed + i))
    return np.stack(columns, axis=1)


def lm_types(vocab: Vocabulary, forms: np.ndarray) -> np.ndarray:
    """The token the LM reads for each word form `forms str [m]`: the form itself when it is
    in `vocab`, else `vocab.unk` (str `[m]`)."""
    return np.array(vocab.tokens, dtype=object)[vocab.encode(list(forms))]


def load_sentences(config: ml_collections.ConfigDict) -> dict[str, list[dict]]:
    """UD English-EWT by split, train cut to `data.train_sentences` (0: all).

    Raises:
      ConfigError: naming the key when a split holds fewer sentences than asked for, or
        `probe.train_sentences` exceeds `data.train_sentences` (probe-train is text the LM
        read: its first sentences).
    """
    lm_sentences, probe_sentences = config.data.train_sentences, config.probe.train_sentences
    if lm_sentences and probe_sentences > lm_sentences:
        # probe_sets cut the LM's training sentences: fewer than asked for, silently.
        raise cfg.ConfigError(
            f"probe.train_sentences={probe_sentences}: more than the LM's "
            f"data.train_sentences={lm_sentences} (probe-train is text the LM read)"
        )
    splits = dict(load_dataset("ud_en_ewt", config.data.root).splits)
    asked = {
        "data.train_sentences": ("train", config.data.train_sentences),
        "probe.train_sentences": ("train", config.probe.train_sentences),
        "probe.test_sentences": (config.probe.test_split, config.probe.test_sentences),
    }
    for key, (split, count) in asked.items():
        if count > len(splits[split]):
            raise cfg.ConfigError(
                f"{key}={count}: UD English-EWT {split!r} has only {len(splits[split])} sentences"
            )
    splits["train"] = splits["train"][: lm_sentences or None]
    _check_probe_positions(config, splits)
    return splits


def _check_probe_positions(config: ml_collections.ConfigDict, splits: dict[str, list]) -> None:
    """ConfigError, before the LM trains, when a probe set has no word position to probe
    (`probe_targets` keeps t >= max(probe.distances)), or probe-train too few for both sides
    of its holdout split: a test set of one 7-word sentence at distance 8 wrote NaN
    accuracies with verdicts beside them, and an empty probe-train failed after training in
    the control task, naming no key."""
    p, ks = config.probe, distances(config)
    for name, sentences in probe_sentences(config, splits).items():
        positions = len(probe_positions(stream(sentences)[0], ks))
        held_out = name == "train"  # probe-train needs rows on both sides of its holdout cut
        if (not 0 < holdout_cut(positions, config) < positions) if held_out else positions < 1:
            too_few = f", too few to hold out probe.holdout_fraction={p.holdout_fraction} of them"
            raise cfg.ConfigError(
                f"probe.{name}_sentences={p[f'{name}_sentences']} with probe.distances="
                f"{p.distances!r}: {positions} word positions at or past distance {max(ks)} to "
                f"probe{too_few if held_out else ''}; probe more sentences or shorter distances"
            )


def probe_sentences(
    config: ml_collections.ConfigDict, sentences: dict[str, list[dict]]
) -> dict[str, list[dict]]:
    """{"train": probe-train's sentences (the first of the LM's training text), "test":
    probe-test's (of `probe.test_split`; `probe.test_sentences=0`: all)}."""
    p = config.probe
    return {
        "train": sentences["train"][: p.train_sentences],
        "test": sentences[p.test_split][: p.test_sentences or None],
    }


@dataclasses.dataclass(frozen=True)
class ProbeSet:
    """A probe stream: LM ids `tokens [T]`, the probed `positions [m]`, the word forms there
    `words str [m]` and `labels [m, targets]` (`target_names` order)."""

    tokens: np.ndarray
    positions: np.ndarray
    words: np.ndarray
    labels: np.ndarray


def probe_sets(
    config: ml_collections.ConfigDict, sentences: dict[str, list[dict]], corpus: LMCorpus
) -> tuple[dict[str, ProbeSet], dict[str, int]]:
    """({"train", "test"}: ProbeSet) and the word classes (from the LM's training stream); the
    control tasks' tags are drawn from probe-train's tag distribution."""
    words = frequent_words(stream(sentences["train"])[0], config.probe.num_words)
    streams = {}
    for name, chosen_sentences in probe_sentences(config, sentences).items():
        forms, tags = stream(chosen_sentences)
        positions, labels = probe_targets(forms, tags, words, distances(config))
        streams[name] = (forms, positions, np.array(forms, dtype=object)[positions], labels)
    train_tags = streams["train"][3][:, -len(TAG_TARGETS) :]
    sets = {}
    for name, (forms, positions, forms_there, labels) in streams.items():
        controls = control_labels(lm_types(corpus.vocab, forms_there), train_tags, config.seed)
        sets[name] = ProbeSet(
            corpus.vocab.encode(forms), positions, forms_there, np.hstack([labels, controls])
        )
    return sets, words
