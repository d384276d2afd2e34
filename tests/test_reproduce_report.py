"""experiments.reproduce_report.write_report: answers from several experiments to one question."""

import pathlib

from experiments import reproduce_report


def test_answers_from_two_experiments_are_separate_paragraphs(tmp_path, monkeypatch):
    table_answer = "BLEU by regime:\n\n| regime | BLEU |\n|---|---|\n| teacher_forcing | 5.96 |"
    sections = {
        "first": ("## `first`\n", {16: table_answer}),
        "second": ("## `second`\n", {16: "A phrase-based baseline scores 24.81."}),
    }
    monkeypatch.setattr(
        reproduce_report, "experiment_section", lambda name, workdir, exit_code=0: sections[name]
    )
    text = reproduce_report.write_report(pathlib.Path(tmp_path), ["first", "second"], {})
    # The second answer starts a paragraph after a blank line, not a row of the first's table.
    assert "| teacher_forcing | 5.96 |\n\nA phrase-based baseline scores 24.81." in text
    assert f"**Q16. {reproduce_report.QUESTIONS[16]}** BLEU by regime:" in text
    assert (tmp_path / "report.md").read_text() == text
