"""The main job: every experiment's `quick` variant in turn, then one report.

    python -m experiments.reproduce [--workdir=runs/reproduce] [--only=a,b] [--skip=c]

Runs `python -m experiments.<name> --workdir=W/<name> --config=experiments/configs/<name>.py:quick`
for every experiment that has a config file (in the order of `ORDER`, then the rest), with a
progress line per experiment; a finished experiment (W/<name>/results.json) is not re-run, so
an interrupted reproduction continues where it stopped (one finished under another
`--variant`, or under a config whose values have changed since, as recorded in
W/<name>/reproduce_variant.json, stops it before anything runs).
Then writes W/report.md, which answers each of the seed's 20 questions with the numbers just
measured (experiments that have an `answers(workdir) -> {question: markdown}` function supply
the text; every other experiment's tables are included as they are) and links every plot;
an experiment that failed in this run, or that --only/--skip left out, is named as such in the
report's header and in a section of its own (a failed one makes the job exit 1, after the
report is written). A bad flag (an unknown experiment or variant, an empty --workdir) exits
2 before anything is written. SIGTERM and SIGHUP stop the running experiment too (it saves a
checkpoint).
Needs no download: the real corpora come from ../shared/data (RNN_JAX_DATA), everything else
is synthetic.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from absl import app, flags

from rnn_jax import exits, hardware, predicates
from rnn_jax.files import LOCK_FILE, check_workdir, lock_run, write_text_atomic
from rnn_jax.train import config as config_lib
from rnn_jax.train.config import read_json_object

REPO = pathlib.Path(__file__).resolve().parents[1]
# The issue-6 experiments first, then the runtime's and the performance work's.
ORDER = (
    "initialization",
    "exposure_bias",
    "rnn_vs_attention",
    "language_model",
    "throughput",
    "data_throughput",
)
NOT_EXPERIMENTS = ("reproduce", "grid")

QUESTIONS = {
    1: "What is a recurrent neural network?",
    2: "Why are RNNs useful for NLP tasks?",
    3: "What is the vanishing gradient problem?",
    4: "How do LSTMs address vanishing gradients?",
    5: "What is a GRU and how does it differ from an LSTM?",
    6: "What is a bidirectional RNN and why is it useful?",
    7: "How are RNNs used in language modelling?",
    8: "What is teacher forcing (and exposure bias)?",
    9: "How do RNNs compare to transformers?",
    10: "Do RNNs still have a role in modern NLP?",
    11: "What is gradient clipping and why is it used?",
    12: "How do stacked RNNs increase capacity?",
    13: "What is truncated BPTT?",
    14: "How are RNNs used for sequence labelling?",
    15: "What are the drawbacks of RNNs for long sequences?",
    16: "How did RNNs contribute to early neural MT?",
    17: "What regularisation is used with RNNs?",
    18: "Many-to-one vs many-to-many?",
    19: "Why is weight initialisation important?",
    20: "What should you know about RNNs for interviews?",
}
# Where a question is answered by library code and its tests rather than by a measurement.
LIBRARY = {
    1: "rnn_jax/cells.py (each cell's equations) and rnn_jax/scan.py (unroll), tested against "
    "per-step numpy loops; what the state holds is measured by experiments/state_probe.py "
    "(linear probes of each layer of an LSTM LM on UD English-EWT), whose answer replaces this "
    "line once it has run.",
    2: "the language, tagging and classification models in rnn_jax/models/ and their tests on "
    "PTB/Tiny Shakespeare, UD-EWT, CoNLL-2003 and SST slices; measured by "
    "experiments/word_order.py (a context-free bag, a BiLSTM on shuffled words and on the real "
    "order, on UD English-EWT tagging and SST-2), whose answer replaces this line once it has run.",
    6: "rnn_jax/layers.py (bidirectional stacks), tested against two manual passes; measured "
    "by experiments/bidirectional.py (forward, backward and bidirectional LSTM taggers at equal "
    "size on UD English-EWT), whose answer replaces this line once it has run.",
    11: "rnn_jax/train/optim.py (clip_global_norm; the pre-clip norm is logged every step).",
    12: "rnn_jax/layers.py (stacked layers, inter-layer dropout, residuals); measured by "
    "experiments/regularization.py (depth at equal size) and experiments/state_probe.py (what "
    "each layer holds), whose answers replace this line once they have run.",
    13: "rnn_jax/scan.py truncated_unroll and the language model's carried state.",
    14: "rnn_jax/models/tagger.py and rnn_jax/crf.py (BiRNN-CRF); measured by "
    "experiments/sequence_labelling.py and, softmax vs CRF head, experiments/bidirectional.py.",
    16: "rnn_jax/models/seq2seq.py (attention, scheduled sampling), rnn_jax/decoding.py "
    "(greedy, beam) and BLEU in rnn_jax/metrics.py.",
    17: "rnn_jax/train/regularizers.py and rnn_jax/models/lm.py (dropout variants, weight "
    "drop, AR/TAR).",
    18: "rnn_jax/models/classifier.py (many-to-one) vs tagger.py / lm.py (many-to-many).",
    20: 'this report, and experiments/README.md\'s "Q20 in short" (what Q1-Q19 measured and '
    "did not reproduce).",
}


def experiment_names() -> list[str]:
    """Every `experiments/<name>.py` that has `experiments/configs/<name>.py`, in ORDER."""
    configs = {p.stem for p in (REPO / "experiments" / "configs").glob("[!_]*.py")}
    modules = {p.stem for p in (REPO / "experiments").glob("[!_]*.py")}
    names = sorted((configs & modules) - set(NOT_EXPERIMENTS))
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def select(names: Sequence[str], only: Sequence[str] | None, skip: Sequence[str]) -> list[str]:
    """The experiments to run: `only` (None: all) without `skip`. An empty `--only=` (say
    `--only=$EXP` with EXP unset) is refused: it parsed to [] and ran all 14."""
    if only is not None and not [name for name in only if name]:
        raise ValueError(f"--only={','.join(only)} names no experiment; leave it out to run all")
    only = only or []
    for flag, values in (("--only", only), ("--skip", skip)):
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"{flag}={','.join(values)}: unknown {unknown}; known: {names}")
    both = sorted(set(only) & set(skip))
    if both:
        # --skip would silently win over --only for these (and with nothing else named in
        # --only, nothing would run and an empty report would be written)
        raise ValueError(f"--only and --skip both name {both}")
    selected = [n for n in names if (not only or n in only) and n not in skip]
    if not selected:
        # every experiment skipped: nothing ran, a report of none was written, exit 0 (and
        # --variant went unchecked, with no experiment to check it against)
        raise ValueError(f"--skip={','.join(skip)} leaves no experiment to run")
    return selected


def check_variant(names: Sequence[str], variant: str) -> None:
    """ValueError unless every experiment in `names` has config variant `variant`, so that a
    misspelt --variant stops before any workdir, log or report is written."""
    missing = [
        name
        for name in names
        if variant not in importlib.import_module(f"experiments.configs.{name}").VARIANTS
    ]
    if missing:
        raise ValueError(f"--variant={variant}: unknown to the config of {', '.join(missing)}")


VARIANT_FILE = "reproduce_variant.json"  # W/<name>/: the variant and config the run started with


def variant_config(name: str, variant: str) -> dict[str, Any]:
    """The flat config (`config_lib.flat_config`) experiment `name` runs with under `variant`."""
    config = importlib.import_module(f"experiments.configs.{name}").get_config(variant)
    return config_lib.flat_config(config)


def record_variant(
    workdir: pathlib.Path, variant: str, config: dict[str, Any] | None = None
) -> None:
    """Notes which config variant (and, given, which flat config) runs in `workdir`, before
    it starts."""
    record = {"variant": variant, **({} if config is None else {"config": config})}
    write_text_atomic(workdir / VARIANT_FILE, json.dumps(record) + "\n")


def _record(workdir: pathlib.Path) -> dict[str, Any]:
    try:
        record = json.loads((workdir / VARIANT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def finished_variant(workdir: pathlib.Path) -> str | None:
    """The variant recorded in `workdir`; None for a run from before the record existed."""
    return _record(workdir).get("variant")


def config_changes(name: str, workdir: pathlib.Path, variant: str) -> list[str]:
    """`'key: <then> then, <now> now'` for each key whose value in the config recorded in
    `workdir` differs from `variant`'s config of experiment `name` now (`config_lib.
    config_changes`); [] when none does or no config was recorded (a run from before configs
    were). A finished run is skipped by its results.json: one whose config file, or the
    defaults it builds on, changed since (a pull that changed a `quick` variant) was reported
    as the current config's."""
    saved = _record(workdir).get("config")
    if not isinstance(saved, dict):
        return []
    return config_lib.config_changes(saved, variant_config(name, variant))


STALLED = -1000  # exit status reported for a run the watchdog killed
NO_RESULTS = -1001  # reported for a run that exited 0 without writing its results.json
IN_USE = -1002  # reported for an experiment not run: another process holds its workdir's lock
NOT_STARTED = -1003  # reported for an experiment whose workdir could not be made
STOP_GRACE_S = 60.0  # how long a stopped experiment gets to save its checkpoint


def run_experiment(
    name: str,
    workdir: pathlib.Path,
    variant: str,
    index: str,
    stall_s: float = 0.0,
    max_restarts: int = 5,
) -> tuple[float, int]:
    """Runs one experiment as a subprocess, printing a progress line while it runs; returns
    (wall time, exit status). Its output goes to W/<name>/log.txt.

    Watchdog (`stall_s` > 0, Linux): a process can stall with its CPUs idle (the wedge of
    sessions 1-3 was jaxlib 0.10's batched LAPACK kernels deadlocking the XLA:CPU pool at a
    model's init, fixed by rnn_jax/linalg.py; docs/design.md). A run whose CPU time has not
    moved for `stall_s` seconds is killed and started again, at most `max_restarts` times;
    experiments resume from their finished points and checkpoints, so little is redone.

    The experiment runs holding an exclusive lock on W/<name>/run.lock (`rnn_jax.files.
    lock_run`, as `launch.sweep` runs do): two main jobs on one workdir trained one run side
    by side and wedged each other's checkpoints; the second now leaves it (IN_USE). On Linux
    the experiment gets SIGTERM when the main job dies, even by SIGKILL (it saves its
    checkpoint), instead of training on with nothing watching it. A workdir that cannot be
    made is NOT_STARTED (the other experiments still run); an exit 0 without results.json is
    NO_RESULTS."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        lock = lock_run(workdir)
        if lock is not None:
            record_variant(workdir, variant, variant_config(name, variant))
    except OSError as error:  # a file of the experiment's name in W, a full disk
        print(f"{index} {name}: FAILED (not started: {error})", flush=True)
        return 0.0, NOT_STARTED
    if lock is None:
        print(
            f"{index} {name}: NOT RUN: {workdir} is in use by another process (it holds "
            f"{workdir / LOCK_FILE}); rerun once that one has ended",
            flush=True,
        )
        return 0.0, IN_USE
    try:
        return _run_locked(name, workdir, variant, index, stall_s, max_restarts, lock)
    finally:
        os.close(lock)


def _run_locked(
    name: str,
    workdir: pathlib.Path,
    variant: str,
    index: str,
    stall_s: float,
    max_restarts: int,
    lock: int,
) -> tuple[float, int]:
    """`run_experiment`'s attempts, with `lock` held (and passed on to the experiment)."""
    command = [
        sys.executable,
        "-m",
        f"experiments.{name}",
        f"--workdir={workdir}",
        f"--config=experiments/configs/{name}.py:{variant}",
    ]
    start = time.monotonic()
    for attempt in range(max_restarts + 1):
        code = _run_watched(command, workdir, f"{index} {name}", start, stall_s, lock=lock)
        if code != STALLED:
            break
        message = f"no CPU time used for {stall_s:.0f}s: killed (attempt {attempt + 1})"
        with open(workdir / "log.txt", "a") as log:
            log.write(f"experiments.reproduce: {message}\n")
        print(f"\r{index} {name}: {message}{' ' * 40}", flush=True)
    elapsed = time.monotonic() - start
    if code == 0 and not (workdir / "results.json").is_file():
        # "done" was printed, and the job's last line said its log was named above
        code = NO_RESULTS
    why = (
        f"stalled {max_restarts + 1} times"
        if code == STALLED
        else "exit 0 without results.json"
        if code == NO_RESULTS
        else f"exit {code}"
    )
    status = "done" if code == 0 else f"FAILED ({why}; see {workdir / 'log.txt'})"
    print(f"\r{index} {name}: {status} in {elapsed:.0f}s{' ' * 80}", flush=True)
    return elapsed, code


def _run_watched(
    command: list[str],
    workdir: pathlib.Path,
    label: str,
    start: float,
    stall_s: float,
    poll_s: float = 5.0,
    lock: int | None = None,
) -> int:
    """One attempt: the exit status, or STALLED after killing a run that stopped using CPU.
    Either way no process of the experiment's group outlives the attempt. `lock`: a
    descriptor the experiment inherits (the run lock, held while it lives)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if env.get("RNN_JAX_DATA"):
        # The experiment runs in the checkout: a relative data root means the caller's
        # directory, as it does for an experiment run directly.
        env["RNN_JAX_DATA"] = os.path.abspath(env["RNN_JAX_DATA"])
    with open(workdir / "log.txt", "a") as log:
        # Its own process group, so that the watchdog measures and stops the experiment
        # together with any processes it starts (throughput's spawned measurements).
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            pass_fds=() if lock is None else (lock,),
            preexec_fn=_die_with_parent(),
        )
        try:
            code = _watch(process, workdir, label, start, stall_s, poll_s)
        except BaseException:
            # SIGTERM (made SystemExit by `main`), Ctrl-C or an error here: an experiment left
            # running would go on writing into its workdir with nothing watching it, and a
            # rerun would start a second trainer on the same directory.
            _stop(process)
            raise
    # The experiment has exited, but processes it started may not have: one killed (the OOM
    # killer's SIGKILL) or crashed past its cleanup leaves its children running, beside the
    # next experiment (its memory, its CPU, its timings) and writing into this workdir.
    _kill_group(process, signal.SIGKILL)
    return code


def _die_with_parent() -> Any:
    """A `preexec_fn` that asks Linux to SIGTERM the experiment when the main job dies
    (`PR_SET_PDEATHSIG`): killed by SIGKILL or SIGQUIT, which no handler sees, the main job
    left its experiment training on, and a rerun started a second one beside it. None
    elsewhere. prctl is looked up here, before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the main job died before the call
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the experiment and its children (it saves a checkpoint and exits), SIGKILL them
    after `grace_s`, or at once when a second Ctrl-C or SIGTERM cuts the grace period short."""
    if process.poll() is not None:
        _kill_group(process, signal.SIGKILL)  # children it left behind
        return
    _kill_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        _kill_group(process, signal.SIGKILL)  # a wedged XLA process ignores SIGTERM
    process.wait()


def _kill_group(process: subprocess.Popen, signum: int) -> None:
    """Signal the experiment's process group (its session: `_run_watched`)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _watch(
    process: subprocess.Popen,
    workdir: pathlib.Path,
    label: str,
    start: float,
    stall_s: float,
    poll_s: float,
) -> int:
    """Wait for `process`, printing progress; kill it and return STALLED if it stops using CPU."""
    cpu, since = _cpu_seconds(process.pid), time.monotonic()
    while True:
        try:
            return process.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        last = _last_line(workdir / "log.txt")
        elapsed = time.monotonic() - start
        print(f"\r{label}: {elapsed:5.0f}s | {last[:90]:<90}", end="", flush=True)
        now_cpu = _cpu_seconds(process.pid)
        if now_cpu is None or cpu is None or now_cpu > cpu + 0.5:
            cpu, since = now_cpu, time.monotonic()
        elif now_cpu < cpu:  # an orphan in the group exited: its time left the sum
            cpu = now_cpu
        elif stall_s > 0 and time.monotonic() - since > stall_s:
            _kill_group(process, signal.SIGKILL)  # a wedged XLA process ignores SIGTERM
            process.wait()
            return STALLED


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` and, when it leads a process group (an
    experiment: `_run_watched`), of every other process in that group, each with its children
    already reaped: an experiment waiting on a busy child is not stalled. From /proc; None
    elsewhere or when `pid` is gone."""
    ticks, found = 0, False
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if stat.parent.name == str(pid) or int(fields[2]) == pid:  # fields[2]: pgrp
            found |= stat.parent.name == str(pid)
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def _last_line(path: pathlib.Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 2000))
            lines = [x for x in f.read().decode(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def experiment_section(
    name: str, workdir: pathlib.Path, exit_code: int = 0
) -> tuple[str, dict[int, str]]:
    """(markdown section with the experiment's tables and plots, its answers by question).

    `exit_code`: the status its run in this reproduction ended with (0: it succeeded or ran
    earlier); a failed run says so, and its answers are reported only if it finished."""
    lines = [f"## `{name}`", ""]
    if exit_code:
        how = (
            "stalled (no CPU time) on its last attempt and was killed by the watchdog"
            if exit_code == STALLED
            else "exited with status 0 but wrote no results.json"
            if exit_code == NO_RESULTS
            else "was not run: another process held its folder's run.lock"
            if exit_code == IN_USE
            else "could not be started: its folder could not be made (the job's output says why)"
            if exit_code == NOT_STARTED
            else f"exited with status {exit_code}"
        )
        lines += [f"**FAILED in this run**: it {how} (log: `{name}/log.txt`).", ""]
    results_path = workdir / "results.json"
    if not results_path.is_file():
        lines += [f"Not finished: no results.json (log: `{name}/log.txt`).", ""]
        return "\n".join(lines), {}
    try:
        # JSON that is not an object (a hand-edited file) was an AttributeError traceback.
        results = read_json_object(results_path)
    except (OSError, ValueError) as error:
        lines += [f"Its results.json could not be read ({type(error).__name__}: {error}).", ""]
        return "\n".join(lines), {}
    # A member of another type (`"timing": null`, `"final": [...]`, a wall time in quotes)
    # was a traceback that lost the whole report after every experiment had run.
    timing, final = results.get("timing", {}), results.get("final", {})
    wall = timing.get("wall_s") if isinstance(timing, dict) else None
    if not predicates.is_finite_number(wall):
        wall = None
    if not isinstance(final, dict):
        lines += [f"Its results.json's `final` is not an object: {str(final)[:80]!r}.", ""]
        final = {}
    # a run finished before variants were recorded was labelled ':quick' whatever it ran
    variant = finished_variant(workdir)
    command = (
        f"python -m experiments.{name} --workdir=W/{name} "
        f"--config=experiments/configs/{name}.py:{variant or '<variant not recorded>'}"
    )
    lines += [f"Command: `{command}`" + (f" ({wall / 60:.1f} min)." if wall else "."), ""]
    answers: dict[int, str] = {}
    module = importlib.import_module(f"experiments.{name}")
    if hasattr(module, "answers"):
        try:
            answers = module.answers(workdir)
        except Exception as error:  # e.g. a run from an older version, or a bug in answers():
            # one experiment's answers must not cost the report of all the others
            lines += [f"Its answers could not be read ({type(error).__name__}: {error}).", ""]
            print(f"experiments.reproduce: {name}: answers failed: {error!r}", file=sys.stderr)
    for table in sorted(workdir.glob("*.md")):
        text = table.read_text().strip()
        lines += [_demote_headings(text), ""]
    if not list(workdir.glob("*.md")):
        scalars = {k: v for k, v in final.items() if predicates.is_finite_number(v)}
        lines += [f"- {k}: {v:.6g}" for k, v in scalars.items()] + [""]
    lines += [f"![{p.name}]({name}/{p.name})" for p in sorted(workdir.glob("*.png"))] + [""]
    return "\n".join(lines), answers


def _demote_headings(text: str) -> str:
    return "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())


def write_report(
    root: pathlib.Path,
    names: Sequence[str],
    wall: dict[str, float],
    *,
    failed: dict[str, int] | None = None,
    skipped: Sequence[str] = (),
    variant: str = "quick",
) -> str:
    """W/report.md: answers by question, then each experiment's tables and plots.

    `failed`: exit status by experiment, of those whose run in this reproduction failed;
    `skipped`: experiments left out by --only/--skip that have no finished run of this variant
    in `root` (`main` passes those that have one in `names`: `wall` lacks them). Both are
    named in the header and get a section saying so, instead of silently missing. `variant`:
    the config variant this reproduction ran (named in the header's command unless `quick`)."""
    failed = failed or {}
    sections, answers = [], {}
    for name in names:
        section, found = experiment_section(name, root / name, failed.get(name, 0))
        sections.append(section)
        for question, text in found.items():
            answers.setdefault(question, []).append(text)
    for name in skipped:
        sections.append(
            f"## `{name}`\n\nSkipped (--only/--skip): not run, and not reported, by this "
            "reproduction.\n"
        )
    lines = [
        "# rnn_jax: the seed's 20 questions, measured",
        "",
        f"Produced by `python -m experiments.reproduce --workdir={root}"
        + ("" if variant == "quick" else f" --variant={variant}")
        + f"` on {time.strftime('%Y-%m-%d %H:%M')}; experiments run: "
        + ", ".join(f"{n} ({wall[n] / 60:.1f} min)" if n in wall else n for n in names)
        + (
            f" (not run this time: {', '.join(n for n in names if n not in wall)}, reported "
            "from their earlier finished runs in this workdir)"
            if len(wall) < len(names)
            else ""
        )
        + ". experiments/README.md maps each question to its experiment and to published results.",
        "",
    ]
    if failed:
        lines += [
            "**Failed in this run** (their sections below say how; questions only they answer "
            "fall back to the text below): " + ", ".join(failed) + ".",
            "",
        ]
    if skipped:
        lines += [
            "**Skipped** (--only/--skip; questions only they answer fall back to the text "
            "below): " + ", ".join(skipped) + ".",
            "",
        ]
    lines += [_machine_line(wall), "", "## Answers by question", ""]
    for number, question in QUESTIONS.items():
        found = answers.get(number)
        fallback = (
            f"Answered by library code: {LIBRARY[number]}"
            if number in LIBRARY
            else "Not measured by this run (its experiment did not run, did not finish or was "
            "skipped)."
        )
        # Answers from several experiments are paragraphs of their own: one may end in a
        # table, which a following line would otherwise join as a row.
        lines.append(f"**Q{number}. {question}** " + ("\n\n".join(found) if found else fallback))
        lines.append("")
    text = "\n".join(lines + sections)
    write_text_atomic(root / "report.md", text)  # a stop mid-write keeps the old report whole
    return text


def _machine_line(wall: dict[str, float]) -> str:
    """Where the timings come from: they are only comparable on the same machine and load."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    total = sum(wall.values()) / 60
    cpu = hardware.cpu_description()
    return (
        f"Machine: {platform.machine()} {cpu['cpu_model']} ({cpu['cpu_simd']}), "
        f"{os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; load average (1, 5, 15 min) when the report was "
        f"written: {load}; experiments run now: {total:.1f} min in total."
    )


def define_flags() -> None:
    """The command-line flags, defined only when run as a program (importable in tests)."""
    flags.DEFINE_string("workdir", "runs/reproduce", "Where every experiment writes.")
    flags.DEFINE_list("only", None, "Run only these experiments (default: all).")
    flags.DEFINE_list("skip", [], "Experiments not to run.")
    flags.DEFINE_string("variant", "quick", "Config variant to run (tests use smoke).")
    flags.DEFINE_float(
        "stall_minutes",
        2.0,
        "Kill and restart (resuming) an experiment whose process used no CPU for this long "
        "(a guard against stalls such as the XLA:CPU pool deadlock of docs/design.md; "
        "0 disables).",
    )
    flags.DEFINE_integer(
        "max_restarts",
        5,
        "Restarts of a stalled experiment before giving up (each resumes at its next unfinished "
        "point; before rnn_jax/linalg.py, exposure_bias's Multi30k points wedged up to three "
        "times in one run).",
    )


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """The handler of SIGTERM and SIGHUP (`main`)."""
    name = signal.Signals(signum).name
    raise SystemExit(f"experiments.reproduce: stopped by {name} (signal {signum})")


def _bad_flags(message: str) -> NoReturn:
    """A flag to fix: one line, exit 2, as the experiments' own CLIs (`rnn_jax.exits`)."""
    exits.refuse(message, "experiments.reproduce")


def main(argv: Sequence[str]) -> None:
    # SIGTERM, and SIGHUP (the terminal or ssh session closing), become SystemExit, so the
    # running experiment is stopped too (`_run_watched`): it runs in a session of its own, so
    # neither reaches it directly, and left running it would go on writing into its workdir.
    # A SIGHUP ignored by the caller (`nohup`) stays ignored.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _exit_on_sigterm)
    if len(argv) > 1:
        _bad_flags(f"unexpected arguments: {argv[1:]}")
    for flag in ("stall_minutes", "max_restarts"):
        if not getattr(flags.FLAGS, flag) >= 0:  # NaN too: it would disable the watchdog
            _bad_flags(f"--{flag}={getattr(flags.FLAGS, flag)} must be >= 0")
    try:
        known = experiment_names()
        names = select(known, flags.FLAGS.only, flags.FLAGS.skip)
        check_variant(names, flags.FLAGS.variant)
        check_workdir(flags.FLAGS.workdir)
        root = pathlib.Path(flags.FLAGS.workdir).resolve()
    except ValueError as error:
        _bad_flags(str(error))
    # A finished run is skipped below: one of another variant would be reported as this one.
    other = {
        name: variant
        for name in names
        if (root / name / "results.json").is_file()
        and (variant := finished_variant(root / name)) not in (None, flags.FLAGS.variant)
    }
    if other:
        _bad_flags(
            f"{root} holds finished runs of another variant than "
            f"--variant={flags.FLAGS.variant}: "
            + ", ".join(f"{name} ({variant})" for name, variant in other.items())
            + "; use another --workdir, or delete those runs to redo them"
        )
    changed = {
        name: changes
        for name in names
        if (root / name / "results.json").is_file()
        and (changes := config_changes(name, root / name, flags.FLAGS.variant))
    }
    if changed:
        _bad_flags(
            f"{root} holds finished runs whose config has changed since they ran: "
            + "; ".join(
                f"{name} ({', '.join(changes[:3])}{' and more' if len(changes) > 3 else ''})"
                for name, changes in changed.items()
            )
            + "; use another --workdir, or delete those runs to redo them"
        )
    root.mkdir(parents=True, exist_ok=True)
    print(
        f"reproducing {len(names)} experiments ({flags.FLAGS.variant}) into {root}: "
        + ", ".join(names)
    )
    wall, failed, start = {}, {}, time.monotonic()
    for i, name in enumerate(names, 1):
        index = f"[{i}/{len(names)}]"
        if (root / name / "results.json").is_file():
            print(f"{index} {name}: finished earlier, not re-run")
            continue
        wall[name], code = run_experiment(
            name,
            root / name,
            flags.FLAGS.variant,
            index,
            stall_s=60 * flags.FLAGS.stall_minutes,
            max_restarts=flags.FLAGS.max_restarts,
        )
        if code:  # NO_RESULTS among them: an exit 0 without results.json (`run_experiment`)
            failed[name] = code
    # Left out this time but finished earlier in this workdir under this variant (e.g. one
    # experiment redone with --only): reported as they stand, so the report stays whole.
    earlier = [
        name
        for name in known
        if name not in names
        and (root / name / "results.json").is_file()
        # unrecorded (None): taken as this variant, as the check before the runs takes it
        and finished_variant(root / name) in (None, flags.FLAGS.variant)
        and not config_changes(name, root / name, flags.FLAGS.variant)
    ]
    skipped = [name for name in known if name not in names and name not in earlier]
    write_report(
        root,
        [name for name in known if name in names or name in earlier],
        wall,
        failed=failed,
        skipped=skipped,
        variant=flags.FLAGS.variant,
    )
    print(f"total {(time.monotonic() - start) / 60:.1f} min; report: {root / 'report.md'}")
    if failed:
        sys.exit(f"experiments.reproduce: failed: {', '.join(failed)} (their logs are named above)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
