"""What a compiled XLA program runs per step of each of its loops.

A recurrent layer's time goes into its `while` loops, and on CPU each top-level instruction of
a loop body is one thunk the runtime dispatches every step (a dot, a fused elementwise kernel,
a copy, an in-place update of a `[time, ...]` buffer). So the body's instructions are what a
scan costs beyond its FLOPs (docs/design.md, Interop and performance), and two things about
them are worth checking without a timer:

- how many there are (`ops_per_step`), against another implementation of the same layer;
- that a `[time, ...]` buffer carried through a loop is only updated in place
  (`whole_buffer_writes`): an instruction that produces a whole `[time, ...]` array in some
  other way (a `copy`, a fusion ending in anything but `dynamic-update-slice`) rewrites
  `time` steps' worth of memory every step.

Works on the text of `jax.jit(f).lower(...).compile().as_text()`; the bookkeeping
instructions (`parameter`, `get-tuple-element`, `tuple`, `constant`, `bitcast`) run no kernel
and are left out. Checked on XLA:CPU (jaxlib 0.10.2). It never raises on other programs
(GPU ones, where XLA may wrap a loop body's kernels in a command-buffer `call`, are unverified
here): a line it cannot read is skipped, and a fusion whose computation it cannot find gets
root "".
"""

from __future__ import annotations

import dataclasses
import re

_BOOKKEEPING = frozenset({"parameter", "get-tuple-element", "tuple", "constant", "bitcast"})
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*?\{\n(.*?)^\}", re.S | re.M)
# A shape is one array (`f32[16,8,256]{2,1,0}`, TPU layouts with `:T(8,128)` tiles) or a tuple
# of them, whose layouts may hold one level of parentheses. The last group is the rest of the
# line (operands and attributes, e.g. a fusion's `calls=`).
_INSTRUCTION = re.compile(
    r"^\s*(ROOT )?%([\w.\-]+) = (\((?:[^()]|\([^()]*\))*\)|\S+) ([\w\-]+)\((.*)$", re.M
)
_ARRAY = re.compile(r"\w+\[([\d,]*)\]")


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One top-level instruction of a loop body.

    `shapes`: the dims of each array it produces (one entry; several for a tuple); `opcode`:
    HLO's (`fusion`, `copy`, `dot`, ...); `root`: for a fusion, the opcode of its fused
    computation's root (what it ends in, e.g. `dynamic-update-slice`), else `opcode`.
    """

    name: str
    shapes: tuple[tuple[int, ...], ...]
    opcode: str
    root: str


def _computations(hlo_text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in _COMPUTATION.finditer(hlo_text)}


def _root_opcode(body: str) -> str:
    """The opcode of `body`'s ROOT instruction ("" if no line reads as one)."""
    for match in _INSTRUCTION.finditer(body):
        if match.group(1):
            return match.group(4)
    return ""


def loop_bodies(hlo_text: str) -> list[list[Instruction]]:
    """The instructions of every `while` loop's body in `hlo_text` (compiled HLO), in program
    order, without the bookkeeping ones; one list per loop, in the order the loops appear."""
    computations = _computations(hlo_text)
    bodies = []
    for name in re.findall(r" while\(.*?body=%([\w.\-]+)", hlo_text):
        instructions = []
        body = computations.get(name, "")
        for match in _INSTRUCTION.finditer(body):
            _, instruction, shape, opcode, rest = match.groups()
            if opcode in _BOOKKEEPING:
                continue
            root = opcode
            if opcode == "fusion":
                called = re.search(r"calls=%([\w.\-]+)", rest)
                root = _root_opcode(computations.get(called.group(1), "")) if called else ""
            shapes = tuple(
                tuple(int(d) for d in dims.split(",") if d) for dims in _ARRAY.findall(shape)
            )
            instructions.append(Instruction(instruction, shapes, opcode, root))
        bodies.append(instructions)
    return bodies


def ops_per_step(hlo_text: str) -> list[int]:
    """Per `while` loop in `hlo_text`, how many instructions its body runs every step."""
    return [len(body) for body in loop_bodies(hlo_text)]


def whole_buffer_writes(hlo_text: str, time: int) -> list[Instruction]:
    """Loop-body instructions that produce a whole `[time, ...]` array (rank >= 2) other than
    by `dynamic-update-slice` (which XLA runs in place on a loop-carried buffer): each costs
    a pass over `time` steps' worth of memory per step. Empty for a well-formed scan.

    A `[time, ...]` array is recognised by its leading dimension alone, so `time` must differ
    from the leading dimension of every per-step array (the batch above all): at batch ==
    time a per-step `[batch, hidden]` product is reported too. Measure with shapes that keep
    them apart (the tests and the benchmark's configs do)."""
    found = []
    for body in loop_bodies(hlo_text):
        for instruction in body:
            writes_time_array = any(len(s) >= 2 and s[0] == time for s in instruction.shapes)
            if writes_time_array and instruction.root != "dynamic-update-slice":
                found.append(instruction)
    return found
