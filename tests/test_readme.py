"""The README's Python blocks run as they stand (a user copies them first), and every documented
command names a module, config, config keys and flags that exist (README, experiments/README,
launch/multihost.md)."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index):
    source = BLOCKS[index]
    if "import torch" in source and importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch (the dev set-up installs torch 2.13.0 CPU)")
    exec(compile(source, f"README.md python block {index}", "exec"), {"__name__": "readme"})


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
    """(doc, command, the `--config.<key>` keys named in the command or in its block's
    comment lines after it) for every `python -m` command of the two READMEs."""
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
                keys = re.findall(r"--config\.([\w.]+)=", " ".join([command, *comments]))
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
    missing = sorted(set(keys) - _flat_keys(config))
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
