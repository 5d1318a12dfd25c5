"""What a compiled program does per run, read from its optimised HLO text.

XLA's `cost_analysis()` counts the body of every while loop once, whatever its trip count: a
30-layer `lax.scan` reports one layer, a k-step greedy `fori_loop` one step. Here the costs are
counted per instruction the way XLA's HloCostAnalysis counts them — flops: 2 x output x
contracted elements of a dot or convolution (valid window taps only), one per element of an
elementwise op, one per input element of a reduction; bytes: operand + output bytes of every
instruction outside fusions — and every computation is weighted by the number of times it runs
per program run (a loop body: its trip count times its caller's; a loop condition: one more).
With every loop counted once the totals land within a few % of XLA's own (`Costs.flops_once`,
`bytes_once`; the test checks it). One refinement on the bytes: a fusion operand that the fusion
only slices (a layer scan's stacked weights, read one layer per iteration) counts as the slice.

Trip counts come from XLA's known_trip_count, else the loop condition (`i < N` against a
constant, the form `lax.scan` / `fori_loop` lower to); a loop whose count cannot be read counts
once and is counted in `Costs.unknown_loops`.

Collectives (all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute, their async
`-start` forms counted once) are counted with the same weights: what crosses the interconnect
per run.
"""

from __future__ import annotations

import glob
import math
import os
import re
import tempfile
from typing import NamedTuple

import numpy as np

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128|f8\w*)\[([\d,]*)\](\{[^}]*\})?")
_SPACE = re.compile(r"S\(([1-9]\d*)\)")  # a layout's memory space other than device memory
_HEADER = re.compile(r"^(ENTRY\s+)?%?([^\s(]+)\s*\(.*->.*\{\s*$")
_INSTR = re.compile(r"^\s+(ROOT\s+)?%?([^\s=]+)\s*=\s*(.*)$")
_CALLEE = re.compile(
    r"\b(calls|body|condition|to_apply|true_computation|false_computation)=%?([^\s,}]+)"
)
# Instructions that move no data of their own (views, control flow, bookkeeping).
_FREE = {
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "call",
    "conditional", "after-all", "opt-barrier", "partition-id", "replica-id", "copy-done",
    "slice-done", "all-reduce-done", "all-gather-done", "collective-permute-done", "async-done",
    "async-update",
}  # fmt: skip


_ELEMENTWISE = {
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "remainder", "power", "atan2",
    "negate", "abs", "sign", "floor", "ceil", "round-nearest-afz", "round-nearest-even", "clamp",
    "compare", "select", "and", "or", "xor", "not", "shift-left", "shift-right-logical",
    "shift-right-arithmetic", "convert", "is-finite",
}  # fmt: skip


class Instr(NamedTuple):
    name: str
    shape: str
    opcode: str
    operands: tuple[str, ...]  # names of the operand instructions
    args: str  # the raw operand text (a constant's value)
    attrs: str
    root: bool = False


class Costs(NamedTuple):
    """Per run of the program, per device (the HLO of an SPMD program is one device's)."""

    flops: float  # loop bodies counted by their trip counts
    bytes_accessed: float  # every memory space (XLA's "bytes accessed")
    hbm_bytes: float  # device memory (HBM) only: the roofline's bytes
    flops_once: float  # every loop body counted once: XLA's cost_analysis() convention
    bytes_once: float
    loop_trips: tuple[int, ...]  # trip counts of the loops found
    unknown_loops: int  # loops whose trip count could not be read (counted once)
    collectives: dict[str, float]  # kind -> instructions executed per run
    collective_bytes: float  # bytes of the collectives' results per run


def _split_top(s: str, sep: str = ",") -> list[str]:
    """`s` split at `sep` outside (), {} and []."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append(s[start:i])
            start = i + 1
    out.append(s[start:])
    return [x.strip() for x in out if x.strip()]


def _matching(s: str, start: int) -> int:
    """Index of the parenthesis closing the one at `start`."""
    depth = 0
    for i in range(start, len(s)):
        if s[i] == "(":
            depth += 1
        elif s[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced HLO text: {s[:80]}")


def _parse_instr(name: str, rest: str) -> Instr:
    if rest.startswith("("):
        end = _matching(rest, 0)
        shape, rest = rest[: end + 1], rest[end + 1 :].lstrip()
    else:
        shape, _, rest = rest.partition(" ")
    op_end = rest.index("(")
    opcode = rest[:op_end].strip()
    close = _matching(rest, op_end)
    operands = tuple(
        tok.split()[-1].lstrip("%")
        for tok in _split_top(rest[op_end + 1 : close])
        if tok.split()[-1].startswith("%")
    )
    return Instr(name, shape, opcode, operands, rest[op_end + 1 : close], rest[close + 1 :])


def parse(text: str) -> tuple[dict[str, list[Instr]], str]:
    """HLO module text -> ({computation: instructions}, entry computation name)."""
    comps: dict[str, list[Instr]] = {}
    entry, current = None, None
    for line in text.splitlines():
        if current is None:
            m = _HEADER.match(line)
            if m:
                current = m.group(2)
                comps[current] = []
                if m.group(1):
                    entry = current
            continue
        if line.startswith("}"):
            current = None
            continue
        m = _INSTR.match(line)
        if m:
            comps[current].append(
                _parse_instr(m.group(2), m.group(3))._replace(root=bool(m.group(1)))
            )
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return comps, entry


def arrays(shape: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(dtype, dims, layout) of every array in a (tuple) shape string."""
    return [
        (m.group(1), tuple(int(d) for d in m.group(2).split(",") if d), m.group(3) or "")
        for m in _ARRAY.finditer(shape)
    ]


def shape_bytes(shape: str, hbm_only: bool = False) -> float:
    """Bytes of a (tuple) shape; with hbm_only, of its arrays in device memory only (not those
    a TPU layout places in another memory space, `S(n)`: on-chip VMEM, SMEM)."""
    return sum(
        _BYTES.get(dt, 1) * math.prod(dims)
        for dt, dims, layout in arrays(shape)
        if not (hbm_only and _SPACE.search(layout))
    )


def _trip_count(instr: Instr, comps: dict[str, list[Instr]]) -> int | None:
    """Trip count of a while instruction: XLA's known_trip_count, else `i < N` against a
    constant in its condition (i from 0: the form lax.scan and fori_loop lower to)."""
    m = re.search(r'"known_trip_count":\{"n":"(\d+)"', instr.attrs)
    if m:
        return int(m.group(1))
    m = re.search(r"condition=%?([^\s,}]+)", instr.attrs)
    cond = comps.get(m.group(1), []) if m else []
    consts = {
        i.name: int(i.args)
        for i in cond
        if i.opcode == "constant" and re.fullmatch(r"-?\d+", i.args.strip())
    }
    compares = [i for i in cond if i.opcode == "compare" and len(i.operands) == 2]
    if len(compares) != 1:
        return None
    (a, b), attrs = compares[0].operands, compares[0].attrs
    direction = re.search(r"direction=(\w+)", attrs)
    direction = direction.group(1) if direction else ""
    if direction == "LT" and b in consts:
        return max(consts[b], 0)
    if direction == "GT" and a in consts:
        return max(consts[a], 0)
    return None


def _multipliers(
    comps: dict[str, list[Instr]], entry: str, trips: bool
) -> tuple[dict[str, float], set[str], dict[str, int | None]]:
    """(times each computation runs per program run, the fused computations, the trip count of
    each while instruction). With trips=False every loop counts once (XLA's own counting)."""
    mult: dict[str, float] = {}
    fused: set[str] = set()
    loops: dict[str, int | None] = {}

    def visit(comp: str, w: float, inside_fusion: bool) -> None:
        mult[comp] = mult.get(comp, 0.0) + w
        if inside_fusion:
            fused.add(comp)
        for ins in comps.get(comp, ()):
            if ins.opcode == "while":
                n = loops.setdefault(ins.name, _trip_count(ins, comps))
                n = (1 if n is None else n) if trips else 1
                callees = dict(_CALLEE.findall(ins.attrs))
                visit(callees["body"], w * n, inside_fusion)
                visit(callees["condition"], w * (n + 1 if trips else 1), inside_fusion)
                continue
            for kind, callee in _CALLEE.findall(ins.attrs):
                if kind != "to_apply" and callee in comps:  # (to_apply: scalar reducers)
                    visit(callee, w, inside_fusion or ins.opcode == "fusion")
            branches = re.search(r"branch_computations=\{([^}]*)\}", ins.attrs)
            for callee in _split_top(branches.group(1)) if branches else ():
                visit(callee.lstrip("%"), w, inside_fusion)

    visit(entry, 1.0, False)
    return mult, fused, loops


def _dims(attrs: str, key: str) -> list[int]:
    m = re.search(rf"{key}=\{{([\d,]*)\}}", attrs)
    return [int(x) for x in m.group(1).split(",") if x] if m else []


def _flops(ins: Instr, symbols: dict[str, str]) -> float:
    """XLA's way of counting an instruction's flops: 2 x output elements x contracted elements
    of a dot, a convolution or a GPU library matmul (custom call), one per output element of an
    elementwise op (transcendentals are
    counted apart, not as flops), one per input element of a reduction."""
    if ins.opcode in _ELEMENTWISE:
        return float(sum(math.prod(d) for _, d, _ in arrays(ins.shape)))
    if ins.opcode in ("reduce", "reduce-window") and ins.operands:
        n_in = len(ins.operands) // 2  # reduce(inputs..., inits...)
        return float(
            sum(math.prod(d) for o in ins.operands[:n_in] for _, d, _ in arrays(symbols.get(o, "")))
        )
    gemm = ins.opcode == "custom-call" and re.search(
        r'custom_call_target="[^"]*(gemm|matmul)', ins.attrs
    )
    if not (gemm or ins.opcode in ("dot", "convolution")) or len(ins.operands) < 2:
        return 0.0
    out = arrays(ins.shape)
    lhs, rhs = (arrays(symbols.get(o, "")) for o in ins.operands[:2])
    if not out or not lhs or not rhs:
        return 0.0
    n_out = math.prod(out[0][1])
    if gemm or ins.opcode == "dot":  # (a GPU library matmul: dimensions in its backend config)
        if gemm:
            m = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', ins.attrs)
            dims = [int(x.strip('" ')) for x in m.group(1).split(",") if x.strip()] if m else []
        else:
            dims = _dims(ins.attrs, "lhs_contracting_dims")
        return 2.0 * n_out * math.prod(lhs[0][1][i] for i in dims)
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", ins.attrs)
    if not labels:
        return 0.0
    lhs_l, rhs_l, out_l = labels.groups()
    if len(lhs_l) != len(lhs[0][1]) or len(rhs_l) != len(rhs[0][1]) or len(out_l) != len(out[0][1]):
        return 0.0
    window = dict(re.findall(r"(\w+)=([-\dx_]+)", _window(ins.attrs)))
    macs = out[0][1][out_l.index("b")] * out[0][1][out_l.index("f")] * rhs[0][1][rhs_l.index("i")]
    for d in sorted(c for c in out_l if c.isdigit()):
        i = int(d)
        macs *= _valid_taps(
            size=rhs[0][1][rhs_l.index(d)],
            n_in=lhs[0][1][lhs_l.index(d)],
            n_out=out[0][1][out_l.index(d)],
            stride=_field(window, "stride", i, 1),
            pad_lo=int(re.match(r"-?\d+", _field(window, "pad", i, "0_0")).group()),
            lhs_dilate=_field(window, "lhs_dilate", i, 1),
            rhs_dilate=_field(window, "rhs_dilate", i, 1),
        )
    return 2.0 * macs


def _window(attrs: str) -> str:
    m = re.search(r"window=\{([^}]*)\}", attrs)
    return m.group(1) if m else ""


def _field(window: dict, key: str, i: int, default):
    if key not in window:
        return default
    v = window[key].split("x")[i]
    return v if isinstance(default, str) else int(v)


def _valid_taps(
    size: int, n_in: int, n_out: int, stride: int, pad_lo: int, lhs_dilate: int, rhs_dilate: int
) -> int:
    """(output position, window tap) pairs of one spatial dimension of a convolution that land
    on an input element (not padding, not a hole of lhs dilation): what XLA multiplies."""
    p = np.arange(n_out, dtype=np.int64) * stride - pad_lo
    span = (n_in - 1) * lhs_dilate
    total = 0
    for t in range(size):
        x = p + t * rhs_dilate
        total += int(np.count_nonzero((x >= 0) & (x <= span) & (x % lhs_dilate == 0)))
    return total


def _sliced_reads(comp: str, comps: dict[str, list[Instr]]) -> dict[int, float]:
    """{parameter number: bytes read} for the parameters of a fused computation that it only
    slices (dynamic-slice, slice, gather of that operand, or a nested fusion that only slices
    it): those bytes are read, not the whole array (a layer scan's stacked weights)."""
    body = comps.get(comp, [])
    users: dict[str, list[tuple[Instr, int]]] = {}
    for i in body:
        for pos, o in enumerate(i.operands):
            users.setdefault(o, []).append((i, pos))
    out = {}
    for p in (i for i in body if i.opcode == "parameter"):
        total = 0.0
        for u, pos in users.get(p.name, []):
            if u.opcode in ("dynamic-slice", "slice", "gather") and pos == 0:
                total += shape_bytes(u.shape)
                continue
            inner = re.search(r"calls=%?([^\s,}]+)", u.attrs) if u.opcode == "fusion" else None
            read = _sliced_reads(inner.group(1), comps).get(pos) if inner else None
            if read is None:
                break
            total += read
        else:
            if users.get(p.name):
                out[int(p.args)] = total
    return out


def _in_place(comp: str, comps: dict[str, list[Instr]]) -> tuple[set[int], dict[int, str]]:
    """The parameters of a fused computation that it updates in place (its root, or an element
    of its root tuple, is a dynamic-update-slice of the parameter, as a scan writes one
    iteration's slice into a stacked buffer), and {root element: the update's shape}: the
    buffer is neither read nor written whole, only the update is written."""
    body = {i.name: i for i in comps.get(comp, [])}
    root = next((i for i in body.values() if i.root), None)
    if root is None:
        return set(), {}

    def through_bitcasts(i: Instr | None) -> Instr | None:
        while i is not None and i.opcode == "bitcast" and i.operands:
            i = body.get(i.operands[0])
        return i

    elements = [body.get(o) for o in root.operands] if root.opcode == "tuple" else [root]
    params, updates = set(), {}
    for k, e in enumerate(elements):
        e = through_bitcasts(e)
        if e is None or e.opcode != "dynamic-update-slice" or len(e.operands) < 2:
            continue
        buffer = through_bitcasts(body.get(e.operands[0]))
        update = body.get(e.operands[1])
        if buffer is not None and buffer.opcode == "parameter" and update is not None:
            params.add(int(buffer.args))
            updates[k] = update.shape
    return params, updates


def _instr_bytes(
    ins: Instr, symbols: dict[str, str], comps: dict[str, list[Instr]], hbm_only: bool = False
) -> float:
    """Operand + output bytes of one instruction of a non-fused computation (with hbm_only:
    only those in device memory)."""
    if ins.opcode in _FREE:
        return 0.0
    if ins.opcode.endswith("-start"):  # async pairs: the moved array once (a tuple shape)
        return max(
            (shape_bytes(_array_text(a), hbm_only) for a in arrays(ins.shape)),
            default=0.0,
        )  # fmt: skip
    sliced, in_place, updates = {}, set(), {}
    if ins.opcode == "fusion":
        m = re.search(r"calls=%?([^\s,}]+)", ins.attrs)
        if m:
            sliced = _sliced_reads(m.group(1), comps)
            in_place, updates = _in_place(m.group(1), comps)
    elif ins.opcode == "dynamic-update-slice" and len(ins.operands) > 1:
        in_place, updates = {0}, {0: symbols.get(ins.operands[1], "")}
    outputs = arrays(ins.shape) if ins.shape.startswith("(") else [None]
    total = 0.0
    for k, out in enumerate(outputs):
        whole = ins.shape if out is None else _array_text(out)
        if k in updates:  # only the update is written (if the buffer is in device memory)
            total += shape_bytes(updates[k]) if shape_bytes(whole, hbm_only) else 0.0
        else:
            total += shape_bytes(whole, hbm_only)
    for pos, o in enumerate(ins.operands):
        shape = symbols.get(o, "")
        if pos in in_place:
            continue
        if pos in sliced:
            total += sliced[pos] if shape_bytes(shape, hbm_only) else 0.0
        else:
            total += shape_bytes(shape, hbm_only)
    return total


def _array_text(array: tuple[str, tuple[int, ...], str]) -> str:
    dt, dims, layout = array
    return f"{dt}[{','.join(map(str, dims))}]{layout}"


def analyze(text: str) -> Costs:
    """Per-run costs of the program whose optimised HLO is `text`."""
    comps, entry = parse(text)
    mult, fused, loops = _multipliers(comps, entry, trips=True)
    once, _, _ = _multipliers(comps, entry, trips=False)
    flops = {True: 0.0, False: 0.0}
    moved = {True: 0.0, False: 0.0}
    hbm = 0.0
    collectives: dict[str, float] = {}
    collective_bytes = 0.0
    for comp, w in mult.items():
        symbols = {i.name: i.shape for i in comps.get(comp, ())}
        f = sum(_flops(i, symbols) for i in comps.get(comp, ()))
        body = [] if comp in fused else comps[comp]
        b = sum(_instr_bytes(i, symbols, comps) for i in body)
        hbm += w * sum(_instr_bytes(i, symbols, comps, hbm_only=True) for i in body)
        for real, weight in ((True, w), (False, once.get(comp, 0.0))):
            flops[real] += weight * f
            moved[real] += weight * b
        for i in comps.get(comp, ()):
            kind = i.opcode.removesuffix("-start")
            if kind in COLLECTIVES:
                collectives[kind] = collectives.get(kind, 0.0) + w
                sizes = [_BYTES.get(dt, 1) * math.prod(d) for dt, d, _ in arrays(i.shape)]
                collective_bytes += w * max(sizes, default=0)
    return Costs(
        flops=flops[True],
        bytes_accessed=moved[True],
        hbm_bytes=hbm,
        flops_once=flops[False],
        bytes_once=moved[False],
        loop_trips=tuple(n for n in loops.values() if n is not None),
        unknown_loops=sum(n is None for n in loops.values()),
        collectives=collectives,
        collective_bytes=collective_bytes,
    )


def optimized_text(compiled, recompile) -> str:
    """The optimised HLO of a `jax.stages.Compiled`. Some TPU programs (SparseCore offloads:
    async-update instructions jaxlib's HLO reader rejects) cannot be read back through
    `as_text()`; then `recompile(compiler_options)` compiles the same program again with XLA
    dumping the text itself, which is read from the dump."""
    import jax

    from jaxsel.plan.chips import quiet_stderr

    try:
        with quiet_stderr():
            return compiled.as_text()
    except jax.errors.JaxRuntimeError:
        with tempfile.TemporaryDirectory(prefix="jaxsel-plan-") as tmp:
            recompile({"xla_dump_to": tmp, "xla_dump_hlo_as_text": True})
            (path,) = glob.glob(os.path.join(tmp, "*.after_optimizations.txt"))
            with open(path, encoding="utf-8") as f:
                return f.read()


def costs(compiled, recompile) -> tuple[Costs, dict]:
    """`analyze` of a `jax.stages.Compiled` (see `optimized_text` for `recompile`), and XLA's
    own `cost_analysis()` (loop bodies once: `Costs.flops_once` / `bytes_once` should be close
    to its "flops" / "bytes accessed")."""
    xla = compiled.cost_analysis()
    xla = xla[0] if isinstance(xla, list | tuple) else xla
    return analyze(optimized_text(compiled, recompile)), dict(xla or {})
