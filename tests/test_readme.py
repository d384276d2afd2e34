"""The README's Python blocks run as they stand (a user copies them first), and every documented
command names a module, config, config keys and flags that exist (README, experiments/README,
launch/multihost.md)."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import re
import types
from collections.abc import Mapping

import jax
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


# A shape a block's comment claims: `# ys [4, 10, 32]`, `# W_ih [16, 128], W_hh [32, 128]`
# (keys of the value assigned), `# (h, c), each [4, 32]` (every array the statement assigns).
_SHAPE_CLAIM = re.compile(r"(\w+) \[(\d+(?:, \d+)*)\]")


def _shape_claims(source: str) -> dict[int, list[tuple[str, tuple[int, ...]]]]:
    """{line number: [(name, shape), ...]} for each comment of `source` that claims shapes."""
    claims = {}
    for number, line in enumerate(source.splitlines(), 1):
        code, hash_, comment = line.partition("#")
        if hash_ and (found := _SHAPE_CLAIM.findall(comment)):
            claims[number] = [(name, tuple(map(int, dims.split(", ")))) for name, dims in found]
    return claims


def _check_shape_claims(statement: ast.stmt, claims: list, namespace: dict, where: str) -> None:
    """Each claimed shape is that of the variable, of that key of the value the statement
    assigns, or ("each") of every array it assigns."""
    targets = statement.targets if isinstance(statement, ast.Assign) else []
    assigned = [namespace[n.id] for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    for name, shape in claims:
        if name == "each":
            arrays = jax.tree.leaves(assigned)
        elif name in namespace and not isinstance(namespace[name], types.ModuleType):
            arrays = [namespace[name]]
        else:
            arrays = [value[name] for value in assigned if isinstance(value, Mapping)]
        assert arrays, f"{where}: the comment names {name!r}, which the statement does not assign"
        got = [tuple(array.shape) for array in arrays]
        claim = f"{name} {list(shape)}"
        assert all(g == shape for g in got), f"{where}: the comment says {claim}, got {got}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index):
    """The block runs, one top-level statement at a time (one run, no extra compiles), and
    every shape its comments claim (`# ys [4, 10, 32]`) is the shape it computes."""
    source = BLOCKS[index]
    if "import torch" in source and importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch (the dev set-up installs torch 2.13.0 CPU)")
    where = f"README.md python block {index}"
    claims = _shape_claims(source)
    namespace = {"__name__": "readme"}
    for statement in ast.parse(source).body:
        module = ast.Module(body=[statement], type_ignores=[])
        exec(compile(module, where, "exec"), namespace)
        lines = range(statement.lineno, statement.end_lineno + 1)
        for number in [n for n in lines if n in claims]:
            _check_shape_claims(statement, claims.pop(number), namespace, f"{where} line {number}")
    # a claim inside a loop or function body would otherwise go unchecked
    assert not claims, f"{where}: shape comments not on a top-level statement: {claims}"


DOCS = [
    README,
    README.parent / "experiments" / "README.md",
    README.parent / "launch" / "multihost.md",
]
CONFIGS = README.parent / "experiments" / "configs"


def _shell_blocks(text: str) -> list[str]:
    """Each fenced bash block, and each inline `python -m ...` span, with continuations joined."""
    blocks = re.findall(r"^\s*```bash\n(.*?)^\s*```", text, flags=re.S | re.M)
    spans = re.findall(r"`(python -m [^`]+)`", text)
    return [re.sub(r"\\\n\s*", " ", block) for block in blocks + spans]


def _documented_commands() -> list[tuple[str, str, list[str]]]:
    """(doc, command, the `--config.<key>=<value>` overrides, as (key, value) pairs, named in
    the command or in its block's comment lines after it) for every `python -m` command of the
    READMEs."""
    commands = []
    for doc in DOCS:
        for block in _shell_blocks(doc.read_text()):
            lines = block.splitlines()
            for i, line in enumerate(lines):
                command = line.split(" #")[0].strip()
                if not command.startswith("python -m "):
                    continue
                comments = []
                for later in lines[i + 1 :]:
                    if later.strip().startswith("python -m "):
                        break
                    if later.strip().startswith("#"):
                        comments.append(later)
                keys = re.findall(r"--config\.([\w.]+)=([^\s,;)]+)", " ".join([command, *comments]))
                commands.append((str(doc.relative_to(README.parent)), command, keys))
    return commands


def _flat_keys(config, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        keys.add(prefix + key)
        if hasattr(value, "items"):
            keys |= _flat_keys(value, prefix + key + ".")
    return keys


def _load_config_module(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(f"readme_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readmes_have_commands():
    assert len(_documented_commands()) >= 20


@pytest.mark.parametrize(
    "doc, command, keys", _documented_commands(), ids=lambda v: str(v)[:60] if v else ""
)
def test_readme_command_names_a_module_config_variant_and_keys_that_exist(doc, command, keys):
    """A documented command must still run: its module exists, its `--config=<file>:<variant>`
    loads, and each `--config.<key>` it (or a comment under it) names is a key of that config."""
    module = command.split()[2]
    if "<" in module:  # the template `python -m experiments.<name> ...`: every config file
        for path in sorted(CONFIGS.glob("[!_]*.py")):
            config_module = _load_config_module(path)
            for variant in ("smoke", "quick", "full"):
                config_module.get_config(variant)
        return
    assert importlib.util.find_spec(module) is not None, f"{doc}: no module {module}: {command}"
    spec = re.search(r"--config=(\S+)", command)
    if spec is None:
        assert not keys, f"{doc}: --config.<key> without --config=: {command}"
        return
    path, _, variant = spec.group(1).partition(":")
    config = _load_config_module(README.parent / path).get_config(variant)
    missing = sorted({key for key, _ in keys} - _flat_keys(config))
    assert not missing, f"{doc}: {command}: no config key(s) {missing} in {path}:{variant}"


_DEFINED = re.compile(r"""(?:DEFINE_\w+|add_argument)\(\s*["'](?:--)?(\w+)["']""")


def _flags_of(module: str) -> set[str]:
    """The flags `python -m module` takes, read from its source (no import: absl flags are
    global, and two modules defining `--workdir` cannot both be imported): its own DEFINE_*
    and argparse `add_argument` names, plus the training CLI's when it runs through it."""
    source = pathlib.Path(importlib.util.find_spec(module).origin).read_text()
    names = set(_DEFINED.findall(source))
    if "cli.main(" in source or "grid.main(" in source:
        cli_source = (README.parent / "rnn_jax" / "train" / "cli.py").read_text()
        names |= set(_DEFINED.findall(cli_source))
    return names


@pytest.mark.parametrize(
    "doc, command, keys", _documented_commands(), ids=lambda v: str(v)[:60] if v else ""
)
def test_readme_command_flags_exist(doc, command, keys):
    """Every `--flag` of a documented command (other than `--config.<key>`, checked above) is
    one its module defines: a renamed flag is an absl error on the user's first try."""
    module = command.split()[2]
    if "<" in module:
        return
    used = {
        name
        for name in re.findall(r"(?<![\w-])--(\w[\w.]*)", " ".join(command.split()[3:]))
        if not name.startswith("config.")
    }
    unknown = sorted(used - _flags_of(module) - {"config"})
    assert not unknown, f"{doc}: {command}: no flag(s) {unknown} in {module}"


def _override_value(config, key: str, text: str):
    """The value `--config.<key>=<text>` sets, as the CLI parses it: None for "None", the text
    for a str field, else the Python literal (`0`, `0.3`, `True`)."""
    if text == "None":
        return None
    current = config
    for part in key.split("."):
        current = current[part]
    if isinstance(current, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


@pytest.mark.parametrize(
    "doc, command, keys",
    [c for c in _documented_commands() if c[2] and "--config=" in c[1]],
    ids=lambda v: str(v)[:60] if v else "",
)
def test_readme_command_override_values_pass_the_experiments_rules(doc, command, keys):
    """The values a documented command (or a comment under it) sets, applied together to its
    config, pass the runtime's and the experiment's rules (`cli.load_config`, what the CLI
    checks before anything runs): a value the experiment no longer accepts
    (`--config.smt.lm_smoothing=witten-bell` after a rename) is an error on the first try."""
    from rnn_jax.train import cli

    module = importlib.import_module(command.split()[2])
    path, _, variant = re.search(r"--config=(\S+)", command).group(1).partition(":")
    config = _load_config_module(README.parent / path).get_config(variant)
    values = {key: _override_value(config, key, text) for key, text in keys}
    try:
        cli.load_config(
            f"{README.parent / path}:{variant}",
            values,
            getattr(module, "RULES", None),
            trains=getattr(module, "TRAINS", True),
        )
    except ValueError as error:
        pytest.fail(f"{doc}: {command} with {values}: {error}")
