"""experiments.smt_baseline: the pieces written here (grow-diag-final-and, the distortion
limit, the LM adapter) against hand-worked values, brute force and nltk.lm; a tiny corpus whose
seen sentence must come back exactly; the smoke run end to end; a bad config value."""

import json
import math
import os
import random
import subprocess
import sys

import pytest
from nltk.lm import Vocabulary, WittenBellInterpolated
from nltk.lm.preprocessing import padded_everygram_pipeline
from nltk.translate import PhraseTable
from nltk.translate.gdfa import grow_diag_final_and as nltk_grow_diag_final_and
from nltk.translate.stack_decoder import _Hypothesis

from experiments import smt_baseline
from experiments.configs import smt_baseline as smt_configs
from rnn_jax.train import cli

SMOKE = "experiments/configs/smt_baseline.py:smoke"


def _pharaoh(points):
    return " ".join(f"{i}-{j}" for i, j in sorted(points))


def test_grow_diag_final_and_by_hand():
    # Intersection {(0,0),(1,1)}. Growing from (1,1): (1,2) (target 2 unaligned) and (2,2)
    # (source 2 unaligned). (3,0) is no neighbour, and final-and needs both its words
    # unaligned: target 0 is aligned, so it stays out.
    forward = {(0, 0), (1, 1), (3, 0)}
    backward = {(0, 0), (1, 1), (2, 2), (1, 2)}
    expected = {(0, 0), (1, 1), (1, 2), (2, 2)}
    assert smt_baseline.grow_diag_final_and(4, 3, forward, backward) == expected
    # Why it is written here: nltk 3.10.4's returns the union (its "not aligned" tests always
    # pass), (3, 0) included.
    union = sorted(forward | backward)
    assert nltk_grow_diag_final_and(4, 3, _pharaoh(forward), _pharaoh(backward)) == union


def test_final_and_adds_only_points_whose_words_are_both_unaligned():
    # (2,2) joins in the final step (no neighbour of (0,0)); (2,3) then has source 2 aligned.
    forward, backward = {(0, 0), (2, 2), (2, 3)}, {(0, 0)}
    assert smt_baseline.grow_diag_final_and(3, 4, forward, backward) == {(0, 0), (2, 2)}


def test_grow_diag_final_and_properties_on_random_alignments():
    """Brute-force checks on random alignments: the result lies between the intersection and
    the union; every union point left out has its source or its target word aligned (else
    final-and would have added it); and nothing a neighbour of the grown intersection could
    add is left out while both its words are unaligned."""
    rng = random.Random(0)
    for _ in range(300):
        source_length, target_length = rng.randint(1, 7), rng.randint(1, 7)
        grid = [(i, j) for i in range(source_length) for j in range(target_length)]
        forward = {p for p in grid if rng.random() < 0.3}
        backward = {p for p in grid if rng.random() < 0.3}
        result = smt_baseline.grow_diag_final_and(source_length, target_length, forward, backward)
        assert forward & backward <= result <= forward | backward
        sources, targets = {i for i, _ in result}, {j for _, j in result}
        for i, j in (forward | backward) - result:
            assert i in sources or j in targets, (forward, backward, result)


def _hypothesis(span):
    return _Hypothesis(src_phrase_span=span, previous=_Hypothesis() if span else None)


def test_distortion_score_limit_and_first_phrase():
    table = PhraseTable()
    decoder = smt_baseline.DistortionLimitedDecoder(table, None, 0.5, distortion_limit=2)
    log_half = math.log(0.5)
    assert decoder.distortion_score(_hypothesis(()), (0, 1)) == 0.0
    assert decoder.distortion_score(_hypothesis(()), (2, 3)) == pytest.approx(2 * log_half)
    assert decoder.distortion_score(_hypothesis((0, 2)), (2, 4)) == 0.0  # monotone
    assert decoder.distortion_score(_hypothesis((0, 1)), (3, 4)) == pytest.approx(2 * log_half)
    assert decoder.distortion_score(_hypothesis((0, 1)), (4, 5)) == -math.inf  # 3 > 2
    assert decoder.distortion_score(_hypothesis((3, 5)), (0, 2)) == -math.inf  # back 5
    decoder.distortion_limit = 6
    assert decoder.distortion_score(_hypothesis((3, 5)), (0, 2)) == pytest.approx(5 * log_half)


# e is seen once: with unk_cutoff 2 it is counted as <UNK>, which gets mass.
SENTENCES = [s.split() for s in ("a b c d", "a b d e", "b c a", "c d a b", "a a b")]


def _trigram_model(unk_cutoff=2):
    model = WittenBellInterpolated(3, vocabulary=Vocabulary(unk_cutoff=unk_cutoff))
    model.fit(*padded_everygram_pipeline(3, SENTENCES))
    return model


def test_decoder_language_model_matches_nltk_lm():
    model = _trigram_model()
    weight = 0.7
    adapter = smt_baseline.DecoderLanguageModel(model, weight)
    previous = _Hypothesis(trg_phrase=("a",), previous=_Hypothesis())
    hypothesis = _Hypothesis(trg_phrase=("b",), previous=previous)  # output so far: a b
    phrase = ("c", "d", "zz")  # zz: unseen, the LM's <UNK>
    expected = weight * sum(
        math.log(model.score(w, c))
        for w, c in (("c", ("a", "b")), ("d", ("b", "c")), ("zz", ("c", "d")))
    )
    assert adapter.probability_change(hypothesis, phrase) == pytest.approx(expected)
    assert adapter.probability_change(hypothesis, phrase) == pytest.approx(expected)  # cached
    start = weight * (math.log(model.score("a", ("<s>", "<s>"))))
    assert adapter.probability_change(_Hypothesis(), ("a",)) == pytest.approx(start)
    no_history = weight * (math.log(model.score("c")) + math.log(model.score("d", ("c",))))
    assert adapter.probability(("c", "d")) == pytest.approx(no_history)
    # A probability of 0 (nltk.lm gives it to <UNK> when no training word became <UNK>) is
    # floored, so that a passed-through word costs much but not -inf.
    strict = _trigram_model(unk_cutoff=1)
    assert strict.score("zz") == 0.0
    floored = smt_baseline.DecoderLanguageModel(strict, 1.0).probability(("zz",))
    assert floored == pytest.approx(math.log(1e-300))


def test_sentence_end_is_scored_when_an_expansion_completes_the_translation():
    model = _trigram_model()
    weight = 0.5
    language_model = smt_baseline.DecoderLanguageModel(model, weight)
    table = PhraseTable()
    table.add(("x",), ("a",), -1.0)
    table.add(("y",), ("b",), -2.0)
    decoder = smt_baseline.DistortionLimitedDecoder(table, language_model, 0.5, 6)
    decoder.sentence_length = 2
    start = _Hypothesis()
    partial = decoder.expansion_score(start, table.translations_for(("x",))[0], (0, 1))
    assert partial == pytest.approx(-1.0 + weight * math.log(model.score("a", ("<s>", "<s>"))))
    first = _Hypothesis(
        raw_score=partial, src_phrase_span=(0, 1), trg_phrase=("a",), previous=start
    )
    complete = decoder.expansion_score(first, table.translations_for(("y",))[0], (1, 2))
    expected = (
        partial
        - 2.0
        + weight * math.log(model.score("b", ("<s>", "a")) * model.score("</s>", ("a", "b")))
    )
    assert complete == pytest.approx(expected)


TINY = [
    ("das haus ist klein", "the house is small"),
    ("das haus ist ja groß", "the house is big"),
    ("das buch ist ja klein", "the book is small"),
    ("das haus", "the house"),
    ("das buch", "the book"),
    ("ein buch", "a book"),
    ("ein haus ist klein", "a house is small"),
]


def test_tiny_corpus_translates_a_seen_sentence_and_passes_unknown_words():
    config = smt_configs.get_config("smoke")
    with config.unlocked():
        config.smt.ibm2_iterations = 5
    pairs = [{"source": s.split(), "target": t.split()} for s, t in TINY]
    system, _ = smt_baseline.train_system(pairs, config.smt)
    assert system.translate("das buch ist ja klein".split()) == "the book is small".split()
    assert system.translate("ein haus".split()) == "a house".split()  # unseen, composed
    assert system.translate("das auto".split()) == "the auto".split()  # auto passes through


@pytest.fixture(scope="module")
def smoke_run(data_root, tmp_path_factory):
    config = cli.load_config(
        SMOKE, {"data.root": str(data_root)}, smt_baseline.RULES, trains=smt_baseline.TRAINS
    )
    workdir = tmp_path_factory.mktemp("smt_baseline")
    smt_baseline.run(config, workdir)
    return config, workdir


@pytest.mark.data
def test_smoke_run_writes_results_table_and_answer(smoke_run):
    config, workdir = smoke_run
    results = json.loads((workdir / "results.json").read_text())
    final = results["final"]
    assert all(math.isfinite(v) for v in final.values()), final
    assert 0 < final["bleu"] <= 100 and final["copy_source_bleu"] < final["bleu"]
    assert results["pairs"] == {"train": 300, "scored": 20}
    assert len(results["examples"]) == 20
    table = (workdir / "smt_baseline.md").read_text()
    assert "|---|" in table and f"{final['bleu']:.4g}" in table
    answer = smt_baseline.answers(workdir)[16]
    assert f"{final['bleu']:.2f} BLEU" in answer and "300 Multi30k pairs" in answer


def test_bad_config_value_exits_2_naming_the_key(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.smt_baseline",
            f"--workdir={tmp_path / 'run'}",
            f"--config={SMOKE}",
            "--config.smt.max_phrase_length=0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "smt.max_phrase_length=0: must be an integer >= 1" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.data
def test_answer_compares_with_the_nmt_run_beside_it_on_the_same_pairs(smoke_run, tmp_path):
    """In the main job's layout (W/smt_baseline beside W/exposure_bias) the answer quotes the
    best NMT regime trained and scored on as many pairs; other NMT points are ignored."""
    _, workdir = smoke_run
    (tmp_path / "smt_baseline").mkdir()
    (tmp_path / "smt_baseline" / "results.json").write_text((workdir / "results.json").read_text())
    same = {"train": 300, "valid": 7, "test": 20}
    points = {
        "multi30k-teacher_forcing": {
            "corpus": "multi30k",
            "regime": "teacher_forcing",
            "pairs": same,
            "metrics": {"test_greedy_bleu": [1.0, None], "test_beam_bleu": [2.0, 3.0]},
        },
        "multi30k-free_running": {
            "corpus": "multi30k",
            "regime": "free_running",
            "pairs": same,
            "metrics": {"test_greedy_bleu": [0.5, 0.5], "test_beam_bleu": [0.5, 1.5]},
        },
        "multi30k-other-data": {
            "corpus": "multi30k",
            "regime": "linear",
            "pairs": {"train": 10_000, "valid": 720, "test": 749},
            "metrics": {"test_greedy_bleu": [90.0], "test_beam_bleu": [90.0]},
        },
        "markov-teacher_forcing": {"corpus": "markov", "regime": "teacher_forcing"},
    }
    (tmp_path / "exposure_bias").mkdir()
    (tmp_path / "exposure_bias" / "results.json").write_text(json.dumps({"points": points}))
    answer = smt_baseline.answers(tmp_path / "smt_baseline")[16]
    bleu = json.loads((workdir / "results.json").read_text())["final"]["bleu"]
    assert "(teacher_forcing) scores 2.50 beam / 1.00 greedy" in answer
    assert f"SMT is {bleu - 2.5:.1f} BLEU ahead" in answer and "90.00" not in answer
