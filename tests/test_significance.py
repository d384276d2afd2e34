"""experiments.significance: the command line compares systems with a baseline on the same
sentences (the library's paired test), and names a file that is missing or has another
number of lines, with exit status 2 and no output written."""

import json

import numpy as np

from rnn_jax.metrics import paired_bleu_significance
from tests.module_cli import run_module


def _run(*args):
    return run_module("experiments.significance", *args)


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
    assert "two-sided approximate randomisation, 2000 samples" in result.stdout


def test_a_short_or_missing_file_is_named_with_exit_status_2(tmp_path):
    paths, *_ = _files(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("w1 w2\n")
    output = tmp_path / "sig.json"
    common = [f"--references={paths['refs']}", f"--baseline={paths['base']}", f"--output={output}"]
    result = _run(*common, f"--systems={paths['good']},{short}")
    assert result.returncode == 2
    assert f"--systems: {short} has 1 lines, --references {paths['refs']} 60" in result.stderr
    result = _run(*common, f"--systems={tmp_path / 'none.txt'}")
    assert result.returncode == 2 and "--systems: cannot read" in result.stderr
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
    result = _run(*common, "--systems=")
    assert result.returncode == 2, result.stderr
    assert "--systems: expected one or more" in result.stderr
    result = _run(*common, f"--systems={paths['good']},{paths['good']}")
    assert result.returncode == 2, result.stderr
    assert f"--systems: {paths['good']} listed more than once" in result.stderr
    result = _run(
        f"--references={empty}", f"--baseline={empty}", f"--systems={empty}", f"--output={output}"
    )
    assert result.returncode == 2, result.stderr
    assert f"--references: {empty} has no lines" in result.stderr
    result = _run(*common, f"--systems={paths['good']}", "--tokenize=nope")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--tokenize" in result.stderr and "13a" in result.stderr
    assert not output.exists()
