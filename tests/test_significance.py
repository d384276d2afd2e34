"""experiments.significance: the command line compares systems with a baseline on the same
sentences (the library's paired test), and names a file that is missing, has another number
of lines or is not UTF-8 (file and line), with exit status 2 and no output written."""

import json
import re
import types

import numpy as np
import pytest

from experiments import significance
from rnn_jax import exits
from rnn_jax.bleu import paired_bleu_significance
from tests.module_cli import StartedModule, run_module


def _run(*args):
    return run_module("experiments.significance", *args)


def _run_all(*arg_lists):
    """One run per argument list, all started at once (each is mostly imports, on one core)."""
    started = [StartedModule("experiments.significance", *args) for args in arg_lists]
    try:
        return [run.result() for run in started]
    finally:
        for run in started:
            run.close()


def _files(tmp_path):
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(20)]
    references = [" ".join(rng.choice(words, size=7)) for _ in range(60)]
    good = [r if i % 3 else r.replace("w1", "w2") for i, r in enumerate(references)]
    bad = [" ".join(rng.choice(words, size=7)) for _ in references]
    paths = {}
    for name, lines in (("refs", references), ("base", bad), ("good", good)):
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text("".join(f"{line}\n" for line in lines))
    return paths, references, bad, good


def test_table_and_json_equal_the_library_test(tmp_path):
    paths, references, bad, good = _files(tmp_path)
    output = tmp_path / "sig.json"
    result = _run(
        f"--references={paths['refs']}",
        f"--baseline={paths['base']}",
        f"--systems={paths['good']}",
        "--samples=2000",
        f"--output={output}",
    )
    assert result.returncode == 0, result.stderr
    expected = paired_bleu_significance(bad, good, references, samples=2000, tokenize="none")
    record = json.loads(output.read_text())["results"][str(paths["good"])]
    assert record == expected
    assert f"| {expected['difference']:+.2f} | {expected['p_value']:.4f} |" in result.stdout
    assert "two-sided approximate randomisation, 2000 samples, seed 12345" in result.stdout


def test_a_short_or_missing_file_is_named_with_exit_status_2(tmp_path):
    paths, *_ = _files(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("w1 w2\n")
    output = tmp_path / "sig.json"
    common = [f"--references={paths['refs']}", f"--baseline={paths['base']}", f"--output={output}"]
    short_run, missing_run = _run_all(
        [*common, f"--systems={paths['good']},{short}"],
        [*common, f"--systems={tmp_path / 'none.txt'}"],
    )
    assert short_run.returncode == 2
    assert f"--systems: {short} has 1 lines, --references {paths['refs']} 60" in short_run.stderr
    assert missing_run.returncode == 2 and "--systems: cannot read" in missing_run.stderr
    assert not output.exists()


def test_no_systems_empty_references_a_repeated_system_or_unknown_tokenizer_are_named(tmp_path):
    """These crashed with a traceback (StopIteration for an empty --systems, IndexError in
    sacrebleu for empty files, KeyError for an unknown tokenizer) or silently merged a file
    listed twice into one row."""
    paths, *_ = _files(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    output = tmp_path / "sig.json"
    common = [f"--references={paths['refs']}", f"--baseline={paths['base']}", f"--output={output}"]
    nowhere = tmp_path / "no_such_folder" / "sig.json"
    no_systems, repeated, empty_files, result, no_folder = _run_all(
        [*common, "--systems="],
        [*common, f"--systems={paths['good']},{paths['good']}"],
        [
            f"--references={empty}",
            f"--baseline={empty}",
            f"--systems={empty}",
            f"--output={output}",
        ],
        [*common, f"--systems={paths['good']}", "--tokenize=nope"],
        # It failed after the whole test, with a traceback.
        [*common[:2], f"--systems={paths['good']}", f"--output={nowhere}"],
    )
    assert no_systems.returncode == 2, no_systems.stderr
    assert "--systems: expected one or more" in no_systems.stderr
    assert repeated.returncode == 2, repeated.stderr
    assert f"--systems: {paths['good']} listed more than once" in repeated.stderr
    assert empty_files.returncode == 2, empty_files.stderr
    assert f"--references: {empty} has no lines" in empty_files.stderr
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--tokenize" in result.stderr and "13a" in result.stderr
    assert no_folder.returncode == 2, no_folder.stderr
    assert f"--output: {nowhere}: its folder" in no_folder.stderr
    assert not output.exists()


def _tiny_corpus(seed, size=5):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(8)]

    def corrupt(references, p):
        return [
            " ".join(w if rng.random() > p else str(rng.choice(words)) for w in r.split())
            for r in references
        ]

    references = [" ".join(rng.choice(words, size=int(rng.integers(4, 9)))) for _ in range(size)]
    return references, corrupt(references, 0.5), corrupt(references, 0.3)


@pytest.mark.parametrize("seed", [2, 7])
def test_paired_bootstrap_p_value_equals_exhaustive_resampling_of_corpus_bleu(seed):
    """Paired bootstrap (Koehn 2004, as Moses's script and sacrebleu compute it: p is the share
    of resamples whose |difference| minus the resamples' mean |difference| exceeds the real
    one) against all 5^5 resamples of a 5-sentence corpus, each scored by corpus BLEU from
    summed n-gram statistics (experiments.mert's, checked against sacrebleu in test_mert.py).
    On these corpora the average of sentence BLEUs gives another p-value, so a test that
    averaged sentence scores would fail here."""
    import itertools

    from experiments import mert

    references, baseline, system = _tiny_corpus(seed)
    stats = {
        name: np.stack([mert.bleu_statistics(h, r) for h, r in zip(out, references, strict=True)])
        for name, out in (("baseline", baseline), ("system", system))
    }
    resamples = np.array(list(itertools.product(range(len(references)), repeat=len(references))))

    def exact_p(score):  # score: [..., sentences, statistics] -> [...]
        real = abs(score(stats["system"]) - score(stats["baseline"]))
        diffs = np.abs(score(stats["system"][resamples]) - score(stats["baseline"][resamples]))
        return float(np.mean(diffs - diffs.mean() > real))

    exact = exact_p(lambda s: mert.bleu(s.sum(-2)))
    sentence_average = exact_p(lambda s: mert.bleu(s).mean(-1))
    assert 0.05 < exact < 0.5 and abs(exact - sentence_average) > 0.1
    samples = 20_000
    result = paired_bleu_significance(
        baseline, system, references, test="bs", samples=samples, tokenize="none"
    )
    assert abs(result["p_value"] - exact) < 4 * np.sqrt(exact * (1 - exact) / samples) + 1e-3


@pytest.mark.parametrize("test", ["ar", "bs"])
def test_p_values_carry_the_plus_one_correction(test):
    """p = (r + 1) / (R + 1) for r of R trials at least as extreme: never 0, and exactly
    1 / (R + 1) when no trial is (a much better system), for any number of samples."""
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(20)]
    references = [" ".join(rng.choice(words, size=8)) for _ in range(40)]
    bad = [" ".join(rng.choice(words, size=8)) for _ in references]
    for samples in (1, 9, 50):
        result = paired_bleu_significance(
            bad, references, references, test=test, samples=samples, tokenize="none"
        )
        assert result["difference"] > 50
        assert result["p_value"] == pytest.approx(1 / (samples + 1), abs=1e-12)
    references, baseline, system = _tiny_corpus(7)  # p about 0.17 (bootstrap)
    for samples in (1, 9, 50):
        p = paired_bleu_significance(
            baseline, system, references, test=test, samples=samples, tokenize="none"
        )["p_value"]
        count = p * (samples + 1)
        assert count >= 1 - 1e-9 and abs(count - round(count)) < 1e-9


def test_significance_names_a_file_that_is_not_utf8_with_file_and_line(
    tmp_path, monkeypatch, capsys
):
    """A Latin-1 system output was a UnicodeDecodeError traceback (exit 1); now its file:line
    and exit status 2, before any test runs and with nothing written. CRLF files read as
    before (text mode's newline translation); with lone-CR line ends the line named is the one
    read_lines reads (it was always 1). An --output that is a directory is named too."""
    references = tmp_path / "refs.txt"
    references.write_text("a b c\nd e f\ng h\n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("a b c\nd e f\ng caf\u00e9\n".encode("latin-1"))
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"a b c\r\nd e f\r\ng h\r\n")
    assert significance.read_lines(crlf) == significance.read_lines(references)
    with pytest.raises(ValueError, match=re.escape(f"{latin}:3: not UTF-8")):
        significance.read_lines(latin)
    old_mac = tmp_path / "old_mac.txt"  # lone CR line ends: read as 3 lines, so named line 3
    old_mac.write_bytes(latin.read_bytes().replace(b"\n", b"\r"))
    with pytest.raises(ValueError, match=re.escape(f"{old_mac}:3: not UTF-8")):
        significance.read_lines(old_mac)
    output = tmp_path / "sig.json"
    flags = dict(references=str(references), baseline=str(crlf), systems=[str(latin)])
    flags.update(test="ar", samples=10, tokenize="none", output=str(output))
    monkeypatch.setattr(significance, "FLAGS", types.SimpleNamespace(**flags))
    with pytest.raises(SystemExit) as exit_info:
        significance.main(["significance"])
    assert exit_info.value.code == exits.REFUSED
    assert f"--systems: {latin}:3: not UTF-8" in capsys.readouterr().err
    assert not output.exists()
    # An --output that is a directory: named before the test (IsADirectoryError after it).
    flags.update(systems=[str(crlf)], output=str(tmp_path))
    monkeypatch.setattr(significance, "FLAGS", types.SimpleNamespace(**flags))
    with pytest.raises(SystemExit) as exit_info:
        significance.main(["significance"])
    assert exit_info.value.code == exits.REFUSED
    assert f"--output: {tmp_path} is a directory" in capsys.readouterr().err


def test_the_seed_of_the_draws_is_recorded_and_a_malformed_one_named(monkeypatch, capsys):
    """p depends on SACREBLEU_SEED's draws: the result and the table caption say which seed
    (or that the draws were unseeded); a value that is neither an integer nor 'none' is
    named before any work (it was int()'s bare error from inside the test)."""
    references, baseline, system = _tiny_corpus(2)
    run = lambda: paired_bleu_significance(  # noqa: E731
        baseline, system, references, samples=10, tokenize="none"
    )
    monkeypatch.setenv("SACREBLEU_SEED", "7")
    result = run()
    assert result["seed"] == 7
    assert "10 samples, seed 7 (SACREBLEU_SEED)." in significance.markdown({"s": result}, "b")
    for unseeded in ("none", "0"):
        monkeypatch.setenv("SACREBLEU_SEED", unseeded)
        result = run()
        assert result["seed"] is None
        assert "10 samples, unseeded." in significance.markdown({"s": result}, "b")
    monkeypatch.setenv("SACREBLEU_SEED", "seven")
    with pytest.raises(ValueError, match=r"SACREBLEU_SEED='seven': must be an integer"):
        run()
    # the command line names it before reading any file (it was a traceback, exit 1)
    flags = dict(references="r.txt", baseline="b.txt", systems=["s.txt"], output="")
    monkeypatch.setattr(significance, "FLAGS", types.SimpleNamespace(**flags))
    with pytest.raises(SystemExit) as exit_info:
        significance.main(["significance"])
    assert exit_info.value.code == exits.REFUSED
    assert "SACREBLEU_SEED='seven'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"), [("systems", ["s.txt", ""]), ("systems", ["", ""]), ("baseline", "")]
)
def test_an_empty_file_name_is_named(flag, value, tmp_path, monkeypatch, capsys):
    """`--systems=s.txt,` read "" as the current folder ("cannot read : Is a directory") and
    `--systems=,` said "--systems:  listed more than once"."""
    flags = dict(references="r.txt", baseline="b.txt", systems=["s.txt"], output="")
    flags[flag] = value
    monkeypatch.setattr(significance, "FLAGS", types.SimpleNamespace(**flags))
    with pytest.raises(SystemExit) as exit_info:
        significance.main(["significance"])
    assert exit_info.value.code == exits.REFUSED
    shown = ",".join(value) if flag == "systems" else value
    assert f"--{flag}={shown}: an empty file name" in capsys.readouterr().err


def test_a_positional_argument_is_refused_in_one_line(capsys):
    """It was absl's usage error: the module's help, then the message, exit 1."""
    with pytest.raises(SystemExit) as exit_info:
        significance.main(["significance", "x.txt"])
    assert exit_info.value.code == exits.REFUSED
    assert capsys.readouterr().err == "unexpected arguments: ['x.txt']\n"
