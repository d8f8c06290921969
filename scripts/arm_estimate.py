#!/usr/bin/env python3
"""Cycles per 256 weights of the aarch64 inner loops, ours against ggml's, by llvm-mca.

Called by scripts/arm-estimate.sh, which writes the assembly this reads:
  DIR/ours-CPU.s          the kernels crate built with `--features mca`: every
                          loop body marked by `mca!` is an LLVM-MCA-BEGIN/END region
  DIR/ggml-dot-CPU.s      vendored ggml-cpu/arch/arm/quants.c (vec_dot, NEON + dotprod path)
  DIR/ggml-repack-CPU.s   vendored ggml-cpu/arch/arm/repack.cpp (interleaved GEMVs)

ggml's sources carry no markers (vendor/ stays unmodified), so its loops are
found in the assembly: the function's first innermost loop (a backward branch
to a label, with no other loop inside), and, where GGML below says the loop
is nested, its parent loop, whose cycles are its own instructions' plus the
inner loop's times its trip count (read from the vendored source, stated
below). clang fully unrolls the fixed-count inner loops of the K-quants'
vec_dot, so those are flat.

Prints a markdown table and writes DIR/estimate.jsonl.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

CPUS = ["cortex-a55", "cortex-a76", "neoverse-n1", "neoverse-v1"]
# LLVM 19 has no scheduling model of its own for the Cortex-A76: -mcpu=cortex-a76
# tunes code generation for it but llvm-mca prices it with the Cortex-A57's
# (its resources print as A57Unit*). The Neoverse-N1 is built on the A76's
# core design and has its own model, so it is the closer estimate of an A76.
MODEL_NOTE = ("cortex-a76 is priced by LLVM 19's Cortex-A57 model (it has none for the A76); "
              "the Neoverse-N1, the same core design as the A76, is the closer estimate of an A76 board.")
MCA = "llvm-mca-19"
ITER = 200

# format -> (block bytes, values per block): the bytes per 256 weights follow.
BYTES = {
    "q4_0": (18, 32), "q5_0": (22, 32), "q8_0": (34, 32), "iq4_nl": (18, 32),
    "q2_k": (84, 256), "q3_k": (110, 256), "q4_k": (144, 256), "q5_k": (176, 256),
    "q6_k": (210, 256), "iq4_xs": (136, 256), "iq2_xxs": (66, 256), "iq2_xs": (74, 256),
    "iq2_s": (82, 256), "iq3_xxs": (98, 256), "iq3_s": (110, 256), "tq1_0": (54, 256),
    "tq2_0": (66, 256),
}

# Our regions (mca! names) -> format.
CODES = {0: "q4_0", 1: "q5_0", 2: "iq4_nl", 3: "q8_0"}  # formats::Codes, in order
GGML_TYPE = {16: "iq2_xxs", 17: "iq2_xs", 18: "iq3_xxs", 21: "iq3_s", 22: "iq2_s",
             34: "tq1_0", 35: "tq2_0"}

# ggml's loops: function, weights per iteration of the loop taken (the
# parent's, where nested), and the inner loop's trip count if nested.
# From vendor/llama.cpp/ggml/src/ggml-cpu/arch/arm/{quants.c,repack.cpp}.
GGML = {
    # vec_dot: Q4_0/Q5_0/Q8_0/IQ4_NL take two blocks per iteration
    # (`for (; ib + 1 < nb; ib += 2)`); the K-quants one block (inner loops
    # unrolled by clang); the i-quants one block with an inner loop of four
    # (`ib32 += 2` over 8, or `ib64` over 4).
    "vec_dot": {
        "q4_0": ("ggml_vec_dot_q4_0_q8_0", 64, None),
        "q5_0": ("ggml_vec_dot_q5_0_q8_0", 64, None),
        "q8_0": ("ggml_vec_dot_q8_0_q8_0", 64, None),
        "iq4_nl": ("ggml_vec_dot_iq4_nl_q8_0", 64, None),
        "q2_k": ("ggml_vec_dot_q2_K_q8_K", 256, None),
        "q3_k": ("ggml_vec_dot_q3_K_q8_K", 256, None),
        "q4_k": ("ggml_vec_dot_q4_K_q8_K", 256, None),
        "q5_k": ("ggml_vec_dot_q5_K_q8_K", 256, None),
        "q6_k": ("ggml_vec_dot_q6_K_q8_K", 256, None),
        "iq4_xs": ("ggml_vec_dot_iq4_xs_q8_K", 256, None),
        "tq1_0": ("ggml_vec_dot_tq1_0_q8_K", 256, None),
        "tq2_0": ("ggml_vec_dot_tq2_0_q8_K", 256, None),
        "iq2_xxs": ("ggml_vec_dot_iq2_xxs_q8_K", 256, 4),
        "iq2_xs": ("ggml_vec_dot_iq2_xs_q8_K", 256, 4),
        "iq2_s": ("ggml_vec_dot_iq2_s_q8_K", 256, 4),
        "iq3_xxs": ("ggml_vec_dot_iq3_xxs_q8_K", 256, 4),
        "iq3_s": ("ggml_vec_dot_iq3_s_q8_K", 256, 4),
    },
    # The interleaved GEMVs ggml repacks these formats for (dotprod: 4x4 /
    # 8x4; i8mm: 4x8 / 8x8): four rows x one block per iteration, or for
    # Q4_K/Q5_K eight rows x one block with an inner loop of four sub-blocks
    # of 64 (`for (int sb = 0; sb < QK_K / 64; sb++)`).
    "repack dotprod": {
        "q4_0": ("ggml_gemv_q4_0_4x4_q8_0", 128, None),
        "iq4_nl": ("ggml_gemv_iq4_nl_4x4_q8_0", 128, None),
        "q8_0": ("ggml_gemv_q8_0_4x4_q8_0", 128, None),
        "q4_k": ("ggml_gemv_q4_K_8x4_q8_K", 2048, 4),
        "q5_k": ("ggml_gemv_q5_K_8x4_q8_K", 2048, 4),
        # eight rows x one block: two halves, each a loop of four sub-blocks
        "q6_k": ("ggml_gemv_q6_K_8x4_q8_K", 2048, {"base": 2, 3: 4, "op": "sdot", "ops": 128}),
    },
    "repack i8mm": {
        "q4_0": ("ggml_gemv_q4_0_4x8_q8_0", 128, None),
        "q8_0": ("ggml_gemv_q8_0_4x8_q8_0", 128, None),
        "q4_k": ("ggml_gemv_q4_K_8x8_q8_K", 2048, 4),
        "q5_k": ("ggml_gemv_q5_K_8x8_q8_K", 2048, 4),
        # ggml's choice on an i8mm CPU; `sdot` on eight rows x one block,
        # a loop over two halves around one over four sub-blocks
        "q6_k": ("ggml_gemv_q6_K_8x8_q8_K", 2048, {"base": 2, 3: 2, 4: 4, "op": "sdot", "ops": 128}),
    },
}


# ggml's GEMMs on repacked weights (batch >= 4 activation rows): function,
# weight x column products per iteration of the loop taken, nested trips.
# Q8_0: four weight rows x four columns x one block per iteration; Q4_K:
# eight rows x four columns x one block, with the inner loop of four
# sub-blocks of 64; deeper nests by their loop tree ([`tree_cycles`]).
# (ggml's Q4_0 GEMMs are inline assembly without the labels this reads:
# not estimated.)
GGML_GEMM = {
    "gemm dotprod": {
        "q8_0": ("ggml_gemm_q8_0_4x4_q8_0", 512, None),
        "q4_k": ("ggml_gemm_q4_K_8x4_q8_K", 8192, 4),
        # eight rows x four columns x one block: four sub-blocks, eight reads each
        "q5_k": ("ggml_gemm_q5_K_8x4_q8_K", 8192, {"base": 3, 4: 4, 5: 8, "op": "sdot", "ops": 512}),
        # two halves, each four sub-blocks
        "q6_k": ("ggml_gemm_q6_K_8x4_q8_K", 8192, {"base": 3, 4: 2, 5: 4, "op": "sdot", "ops": 512}),
        # four rows x four columns x one block, straight-line
        "iq4_nl": ("ggml_gemm_iq4_nl_4x4_q8_0", 512, {"base": 3, "op": "sdot", "ops": 32}),
    },
    "gemm i8mm": {
        "q8_0": ("ggml_gemm_q8_0_4x8_q8_0", 512, None),
        "q4_k": ("ggml_gemm_q4_K_8x8_q8_K", 8192, 4),
        "q5_k": ("ggml_gemm_q5_K_8x8_q8_K", 8192, {"base": 3, 4: 4, 5: 4, "op": "smmla", "ops": 256}),
        "q6_k": ("ggml_gemm_q6_K_8x8_q8_K", 8192, {"base": 3, 4: 2, 5: 4, "op": "smmla", "ops": 256}),
    },
}
# Our panel tile's shape per format (panel_tile_by_shape!): q, g, p.
TILE_SHAPE = {"q4_0": (8, 1, 0), "q5_0": (8, 1, 0), "q8_0": (8, 1, 0), "iq4_nl": (8, 1, 0),
              "q2_k": (64, 1, 8), "q3_k": (64, 1, 0), "q4_k": (8, 8, 4), "q5_k": (8, 8, 4),
              "q6_k": (4, 16, 0), "iq4_xs": (8, 8, 0), "iq2_xxs": (8, 8, 0), "iq2_xs": (4, 16, 0),
              "iq2_s": (4, 16, 0), "iq3_xxs": (8, 8, 0), "iq3_s": (8, 8, 0), "tq1_0": (64, 1, 0),
              "tq2_0": (64, 1, 0)}
# The formats ggml repacks on ARM for its GEMMs (repack.cpp,
# ggml_repack_get_optimal_repack_type); the others run its vec_dot per column.
GGML_REPACKED = {"q4_0", "q8_0", "iq4_nl", "q4_k", "q5_k", "q6_k"}

# The roofline's boards: CPU model, clock (GHz), cores, peak DRAM bandwidth
# (GB/s) and where the figures come from. Peak = transfers/s x bus bytes.
BOARDS = [
    ("RK3566 board (4x Cortex-A55)", "cortex-a55", 1.8, 4, 12.8,
     "32-bit LPDDR4/4X (laosan.tv/?p=66, RK3566 specifications); the data rate, "
     "3200 MT/s, is assumed: the page does not give it"),
    ("Raspberry Pi 5 (4x Cortex-A76)", "neoverse-n1", 2.4, 4, 17.1,
     "32-bit LPDDR4X at 4267 MT/s (circuitdigest.com, 'The New Raspberry Pi 5 is here'); "
     "cycles from the Neoverse-N1 model: the A76's core design, which LLVM 19 models (it has no A76 model)"),
    ("AWS Graviton2 (64x Neoverse-N1)", "neoverse-n1", 2.5, 64, 204.8,
     "8 channels DDR4-3200 (bateloved.github.io/Analyzing-DataCenter-Workloads/analysis.html, M6g: 204.8 GB/s)"),
    ("AWS Graviton3 (64x Neoverse-V1)", "neoverse-v1", 2.6, 64, 307.2,
     "8 channels DDR5-4800 (en.wikichip.org/wiki/AWS_Graviton3: 307.2 GB/s)"),
]


_INST = {}


def decode_inst(word):
    """An `.inst 0x...` word (how clang prints some i8mm intrinsics) as its instruction."""
    if word not in _INST:
        w = int(word, 16)
        r = subprocess.run(["llvm-mc-19", "--disassemble", "-triple=aarch64", "-mattr=+i8mm,+dotprod,+fullfp16"],
                           input=" ".join(f"0x{(w >> (8 * i)) & 0xFF:02x}" for i in range(4)),
                           capture_output=True, text=True)
        lines = [l.strip() for l in r.stdout.splitlines() if l.strip() and not l.strip().startswith(".")]
        if r.returncode != 0 or not lines:
            raise SystemExit(f"llvm-mc cannot decode .inst {word}: {r.stderr.strip()}")
        _INST[word] = lines[-1]
    return _INST[word]


def instructions(lines):
    """The instruction lines of a piece of assembly (no labels, directives, comments)."""
    out = []
    for l in lines:
        t = l.split("//")[0].strip()
        m = re.match(r"^\.inst\s+(0x[0-9a-fA-F]+)$", t)
        if m:
            out.append(decode_inst(m.group(1)))
            continue
        if not t or t.endswith(":") or t.startswith(".") or re.match(r"^[\w.$]+:", t):
            continue
        out.append(t)
    return out


def mca_cycles(insns, cpu):
    """llvm-mca's cycles per iteration of a straight-line body."""
    if not insns:
        return 0.0
    src = "\n".join(insns) + "\n"
    r = subprocess.run([MCA, "-mtriple=aarch64", f"-mcpu={cpu}", f"-iterations={ITER}"],
                       input=src, capture_output=True, text=True)
    m = re.search(r"Total Cycles:\s+(\d+)", r.stdout)
    if r.returncode != 0 or not m:
        raise SystemExit(f"llvm-mca -mcpu={cpu} failed: {r.stderr.strip().splitlines()[:2]}")
    return int(m.group(1)) / ITER


def regions(path, raw=None):
    """Our marked regions: name -> instruction lines (the first of equal
    names), or a string saying why the region cannot be estimated: a loop
    inside it (llvm-mca takes straight-line code), or its end not after its
    beginning in the text. `raw`, if given, gets every region's lines
    whatever they hold."""
    out, cur, body = {}, None, []
    for line in open(path):
        m = re.search(r"LLVM-MCA-BEGIN (.*)$", line)
        if m:
            if cur:
                out.setdefault(cur, "its end is not after its beginning in the assembly")
            cur, body = m.group(1).strip(), []
            continue
        if "LLVM-MCA-END" in line and cur:
            inner = loops(body)
            out.setdefault(cur, body if not inner else "a loop inside the marked body")
            if raw is not None:
                raw.setdefault(cur, body)
            cur = None
            continue
        if cur:
            body.append(line)
    return out


def with_one_loop(body, op, total, cpu):
    """Cycles per pass of a region that holds one loop: the straight-line
    rest once, plus the loop's body times its trip count, found from `op`
    (the multiply instruction): the region runs `total` of them, so the trip
    count is (total - those outside the loop) / those in its body. None if
    there is not exactly one loop or the count does not divide."""
    ls = loops(body)
    if len(ls) != 1:
        return None
    a, b = ls[0]
    count = lambda lines: sum(1 for t in instructions(lines) if t.split()[0] == op)
    inside, outside = count(body[a:b + 1]), count(body[:a] + body[b + 1:])
    if inside == 0 or (total - outside) % inside != 0 or total < outside:
        return None
    trip = (total - outside) // inside
    return mca_cycles(instructions(body[:a] + body[b + 1:]), cpu) + trip * mca_cycles(
        instructions(body[a:b + 1]), cpu)


def range_cycles(body, a, z, need, cpu, g):
    """Cycles per iteration of the loop `body[a..=z]` (found by its backward
    branch) that must run `need` = {instruction: count} per iteration: its
    own instructions once, plus each loop directly inside it times its trip
    count. A loop holding further loops is the sub-block loop, `g` trips; a
    loop without is run as often as the counts still needed divide by its
    own (the groups' multiplies, or the mins' `smull`/`smlal`). None where
    the counts do not come out whole, or a loop inside does none of them."""
    ls = [(c, d) for (c, d) in loops(body) if a < c and d < z]
    kids = [(c, d) for (c, d) in ls if not any((e, f) != (c, d) and e <= c and d <= f for (e, f) in ls)]
    kids = sorted(set(kids))
    inside = lambda i: any(c <= i <= d for c, d in kids)
    own = [l for i, l in enumerate(body[a:z + 1], a) if not inside(i)]
    count = lambda lines, op: sum(1 for t in instructions(lines) if t.split()[0].startswith(op))
    left = {op: n - count(own, op) for op, n in need.items()}
    cyc = mca_cycles(instructions(own), cpu)
    for c, d in kids:
        nested = any(a2 > c and b2 < d for (a2, b2) in loops(body))
        if nested:
            if g <= 1:
                return None
            sub = {op: left[op] // g for op in left if count(body[c:d + 1], op)}
            inner = range_cycles(body, c, d, sub, cpu, 1)
            if inner is None:
                return None
            cyc += g * inner
            for op in sub:
                left[op] -= g * sub[op]
            continue
        flat = {op: count(body[c:d + 1], op) for op in left}
        ops = [op for op in left if flat[op]]
        if not ops or left[ops[0]] % flat[ops[0]]:
            return None
        trip = left[ops[0]] // flat[ops[0]]
        cyc += trip * mca_cycles(instructions(body[c:d + 1]), cpu)
        for op in left:
            left[op] -= trip * flat[op]
    return cyc if all(v == 0 for v in left.values()) else None


def block_loop_cycles(body, begin, kv, cpu):
    """A panel tile's block, from its beginning marker: the smallest loop
    around it that does the whole block's multiplies and mins, priced by
    [`range_cycles`]. (The marked region itself can miss instructions the
    compiler moved across the markers, and in some shapes its end is laid
    out before its beginning.)"""
    macs = 2 * 4 * kv["q"] * kv["g"] * kv["v"] * kv["lanes"]
    op, per = ("usmmla", 32) if kv["mm"] else ("sdot", 16)
    # the mins: two widening multiplies (or multiply-adds) per row, column
    # vector and pair
    need = {op: macs // per, ("smull", "smlal"): 4 * kv["v"] * kv["p"]}
    for a, z in sorted((x for x in loops(body) if x[0] <= begin <= x[1]), key=lambda x: x[1] - x[0]):
        cyc = range_cycles(body, a, z, need, cpu, kv["g"])
        if cyc is not None:
            return cyc
    return None


def functions(path):
    cur, body, out = None, [], {}
    for line in open(path):
        m = re.match(r"^([A-Za-z_][\w.$]*):", line)
        if m and not m.group(1).startswith(".L"):
            if cur:
                out[cur] = body
            cur, body = m.group(1), []
        elif cur is not None:
            body.append(line.rstrip("\n"))
    if cur:
        out[cur] = body
    return out


BRANCH = re.compile(r"^\s+(b(\.\w+)?|cbn?z|tbn?z)\s+.*?(\.LBB\w+)\s*$")


def loops(body):
    labels = {m.group(1): i for i, l in enumerate(body) if (m := re.match(r"^(\.LBB\w+):", l))}
    found = []
    for j, l in enumerate(body):
        m = BRANCH.match(l)
        if m and m.group(3) in labels and labels[m.group(3)] < j:
            found.append((labels[m.group(3)], j))
    return found


def loop_tree(body):
    """The loops of a function from LLVM's comments on its basic blocks:
    each block's innermost loop header (None outside loops), and per header
    its parent header and depth."""
    # A block starts at a label, or at a fall-through block's `// %bb.N:` comment.
    labels = [i for i, l in enumerate(body) if re.match(r"^(\.LBB\w+:|\s*// %bb\.\d+:)", l)]
    blocks, parent, depth = [(0, labels[0] if labels else len(body), None)], {}, {}
    for n, start in enumerate(labels):
        end = labels[n + 1] if n + 1 < len(labels) else len(body)
        m = re.match(r"^\.L(BB\w+):", body[start])
        name = m.group(1) if m else None
        text, j = body[start], start + 1
        while j < end and body[j].strip().startswith("//"):
            text, j = text + " " + body[j], j + 1
        if m := re.search(r"Loop Header: Depth=(\d+)", text):
            header, depth[name] = name, int(m.group(1))
            ps = re.findall(r"Parent Loop (\w+) Depth=(\d+)", text)
            parent[name] = max(ps, key=lambda p: int(p[1]))[0] if ps else None
        else:
            m = re.search(r"in Loop: Header=(\w+) Depth=", text)
            header = m.group(1) if m else None
        blocks.append((start, end, header))
    return blocks, parent, depth


def tree_cycles(body, spec, cpu):
    """Cycles per iteration of a loop nest: the loop at depth `spec["base"]`
    holding the most instructions, its own instructions once plus each child
    loop's cycles times its trip count (`spec[depth]`, from the C source).
    Checked: the multiplies (`spec["op"]`) counted through the trips must be
    `spec["ops"]`."""
    blocks, parent, depth = loop_tree(body)
    own = {}
    for s, e, h in blocks:
        own.setdefault(h, []).extend(body[s:e])
    children = lambda h: [c for c in depth if parent[c] == h]
    size = lambda h: len(own.get(h, [])) + sum(size(c) for c in children(h))
    base = [h for h in depth if depth[h] == spec["base"]]
    if not base:
        return None, f"no loop at depth {spec['base']}"
    top = max(base, key=size)

    def walk(h):
        ins = instructions(own.get(h, []))
        ops = sum(1 for t in ins if t.split()[0] == spec["op"])
        cyc = mca_cycles(ins, cpu) if ins else 0.0
        for c in children(h):
            trip = spec.get(depth[c])
            if trip is None:
                raise ValueError(f"no trip count for depth {depth[c]}")
            cc, co = walk(c)
            cyc, ops = cyc + trip * cc, ops + trip * co
        return cyc, ops

    try:
        cyc, ops = walk(top)
    except ValueError as e:
        return None, str(e)
    if ops != spec["ops"]:
        return None, f"{ops} {spec['op']} through the trip counts, not {spec['ops']}"
    return cyc, None


def ggml_cycles(fns, fn, nested, cpu):
    """Cycles per iteration of `fn`'s first innermost loop, or of its parent with
    the inner loop counted `nested` times (or, for a dict, of the loop nest
    [`tree_cycles`] describes)."""
    body = fns.get(fn)
    if body is None:
        return None, f"{fn} not in the assembly"
    if isinstance(nested, dict):
        return tree_cycles(body, nested, cpu)
    ls = loops(body)
    inner = [(a, b) for (a, b) in ls if not any((c, d) != (a, b) and a <= c and d <= b for (c, d) in ls)]
    if not inner:
        return None, f"{fn}: no loop found"
    a, b = min(inner)
    if nested is None:
        return mca_cycles(instructions(body[a:b + 1]), cpu), None
    parents = [(c, d) for (c, d) in ls if (c, d) != (a, b) and c <= a and b <= d]
    if not parents:
        return None, f"{fn}: no loop around the inner one"
    pa, pb = max(parents)  # the innermost parent
    own = body[pa:a] + body[b + 1:pb + 1]
    return mca_cycles(instructions(own), cpu) + nested * mca_cycles(instructions(body[a:b + 1]), cpu), None


def two_col_format(kernel, kv):
    """The format of a two-column region (`*.cols` at c=2, `*_mm.pair`)."""
    base = kernel.split(".")[0]
    if base in ("q8_0", "q8_0_mm"):
        return CODES.get(kv.get("codes"))
    if base == "q4_k":
        return "q5_k" if kv.get("fifth") else "q4_k"
    if base in ("grid_mm", "ternary", "grid"):
        return GGML_TYPE.get(kv.get("ggml_type"))
    return base.removesuffix("_mm")


def keyvals(name):
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", name)}


def ours_rows(regs):
    """(format, kernel, isa, weights per iteration, instructions, calls) for one column."""
    rows = []
    for name, body in regs.items():
        kv = keyvals(name)
        parts = name.split()
        kernel, isa = parts[0], parts[1] if len(parts) > 1 and "=" not in parts[1] else ""
        isa = "dotprod" if "dotprod" in isa else "neon"
        if kernel.startswith("tile.") or kv.get("c") != 1:
            continue
        if kernel in ("q8_0.cols", "q8_0.x4"):
            fmt = CODES.get(kv["codes"])
        elif kernel in ("grid.cols", "ternary.cols", "planes.lut"):
            fmt = GGML_TYPE.get(kv["ggml_type"])
        elif kernel == "q4_k.cols":
            fmt = "q5_k" if kv["fifth"] else "q4_k"
        else:
            fmt = kernel.split(".")[0]
        if fmt is None:
            continue
        if kv.get("pf"):
            # The build with software prefetch: priced apart (its own table).
            isa += " prefetch"
        if isinstance(body, str):
            rows.append((fmt, kernel, isa, kv["w"], body, 0))
            continue
        insns = instructions(body)
        calls = sum(1 for i in insns if re.match(r"^bl\s", i))
        rows.append((fmt, kernel, isa, kv["w"], insns, calls))
    return rows


def main():
    d = Path(sys.argv[1])
    results = []
    for cpu in CPUS:
        raw = {}
        regs = regions(d / f"ours-{cpu}.s", raw)
        dot = functions(d / f"ggml-dot-{cpu}.s")
        rep = functions(d / f"ggml-repack-{cpu}.s")
        for fmt, kernel, isa, w, insns, calls in ours_rows(regs):
            if isinstance(insns, str):
                results.append(dict(cpu=cpu, format=fmt, side="llmkernel", path=f"{kernel} {isa}",
                                    cycles_per_256=None, note=insns))
                continue
            cyc = mca_cycles(insns, cpu)
            results.append(dict(cpu=cpu, format=fmt, side="llmkernel", path=f"{kernel} {isa}",
                                cycles_per_256=cyc * 256 / w, calls=calls))
        for path, table in GGML.items():
            if path == "repack i8mm" and cpu != "neoverse-v1":
                continue
            fns = dot if path == "vec_dot" else rep
            for fmt, (fn, w, nested) in table.items():
                cyc, why = ggml_cycles(fns, fn, nested, cpu)
                results.append(dict(cpu=cpu, format=fmt, side="ggml", path=f"{path} ({fn})",
                                    cycles_per_256=None if cyc is None else cyc * 256 / w,
                                    note=why))
        for path, table in GGML_GEMM.items():
            if path == "gemm i8mm" and cpu != "neoverse-v1":
                continue
            for fmt, (fn, macs, nested) in table.items():
                cyc, why = ggml_cycles(rep, fn, nested, cpu)
                results.append(dict(cpu=cpu, format=f"gemm {fmt}", side="ggml", path=f"{path} ({fn})",
                                    cycles_per_256=None if cyc is None else cyc * 256 / macs,
                                    per="256 weight x column products", note=why))
        # Two columns: the dotprod row kernels at c=2 against the i8mm 2-row
        # kernels (whole block bodies; a region with one loop by its trip count).
        if cpu == "neoverse-v1":
            for name, body in regs.items():
                kv = keyvals(name)
                kernel = name.split()[0]
                if not ((kernel.endswith("_mm.pair") and kv.get("c", 2) == 2 and kv.get("n", 2) == 2)
                        or (kv.get("c") == 2 and "dotprod" in name and ".cols" in kernel)):
                    continue
                fmt = two_col_format(kernel, kv)
                if fmt is None:
                    continue
                if isinstance(body, str):
                    # A pair region with one loop (the grid formats' scale
                    # sub-blocks): counted by its trip count, w / 16 `smmla`
                    # per column pair.
                    cyc = (with_one_loop(raw[name], "smmla", kv["w"] // 16, cpu)
                           if "_mm.pair" in kernel and name in raw else None)
                    if cyc is None:
                        continue
                else:
                    cyc = mca_cycles(instructions(body), cpu)
                # weights per iteration: w (x 2 columns, both kernels)
                results.append(dict(cpu=cpu, format=fmt, side="llmkernel", path=f"two columns {kernel}",
                                    cycles_per_256=cyc * 256 / kv["w"], per="256 weights x 2 columns"))
        # The panel tile's block: 2 rows x 4QG values x V*lanes columns, as
        # the loop around its marked beginning ([`block_loop_cycles`]): the
        # marked region itself can lose instructions the compiler moves
        # across its markers, and some shapes lay its end first.
        ours = functions(d / f"ours-{cpu}.s")
        seen = set()
        for fn, body in ours.items():
            for i, line in enumerate(body):
                m = re.search(r"LLVM-MCA-BEGIN (tile\.block.*)$", line)
                if not m or m.group(1).strip() in seen:
                    continue
                name = m.group(1).strip()
                seen.add(name)
                kv = keyvals(name)
                if kv["mm"] and cpu != "neoverse-v1":
                    continue
                macs = 2 * 4 * kv["q"] * kv["g"] * kv["v"] * kv["lanes"]
                cyc = block_loop_cycles(body, i, kv, cpu)
                results.append(dict(cpu=cpu, format=f"tile q={kv['q']} g={kv['g']} p={kv['p']}", side="llmkernel",
                                    path="tile " + ("i8mm" if kv["mm"] else "dotprod"),
                                    cycles_per_256=None if cyc is None else cyc * 256 / macs,
                                    per="256 weight x column products",
                                    note=None if cyc is not None else "no loop around it does the block's multiplies"))
    with open(d / "estimate.jsonl", "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    report(results)


def report(results):
    fmts = [f for f in BYTES]
    print("GEMV, one column: cycles per 256 weights (lower is better); ours = best llmkernel")
    print("path at the CPU's ISA, ggml = best of vec_dot and its repacked GEMVs.")
    print(f"({MODEL_NOTE})\n")
    print("| format | bytes/256 | " + " | ".join(f"{c} ours | ggml | ratio" for c in CPUS) + " |")
    print("|---|---|" + "---|---|---|" * len(CPUS))
    for fmt in fmts:
        bb, bl = BYTES[fmt]
        cells = []
        for cpu in CPUS:
            rs = [r for r in results if r["cpu"] == cpu and r["format"] == fmt]
            ours = [r for r in rs if r["side"] == "llmkernel" and r["path"].endswith("dotprod")
                    and r["cycles_per_256"] is not None]
            ggml = [r for r in rs if r["side"] == "ggml" and r["cycles_per_256"] is not None]
            o = min(ours, key=lambda r: r["cycles_per_256"], default=None)
            g = min(ggml, key=lambda r: r["cycles_per_256"], default=None)
            if o is None or g is None:
                gs = f"{g['cycles_per_256']:.1f}" if g else "-"
                cells.append(f"- | {gs} | -")
                continue
            mark = "*" if o.get("calls") else ""
            cells.append(f"{o['cycles_per_256']:.1f}{mark} | {g['cycles_per_256']:.1f} | "
                         f"{o['cycles_per_256'] / g['cycles_per_256']:.2f}")
        print(f"| {fmt} | {bb * 256 // bl} | " + " | ".join(cells) + " |")
    print("\n`*`: the loop calls a function that llvm-mca does not follow (its cost is missing).")
    print("\nWhich paths were best (ours / ggml), per CPU:\n")
    for cpu in CPUS:
        picks = []
        for fmt in fmts:
            rs = [r for r in results if r["cpu"] == cpu and r["format"] == fmt and r["cycles_per_256"]]
            o = min((r for r in rs if r["side"] == "llmkernel" and r["path"].endswith("dotprod")),
                    key=lambda r: r["cycles_per_256"], default=None)
            g = min((r for r in rs if r["side"] == "ggml"), key=lambda r: r["cycles_per_256"], default=None)
            if o and g:
                picks.append(f"{fmt}: {o['path'].split()[0]} / {g['path'].split(' (')[0]}")
        print(f"- {cpu}: " + "; ".join(picks))
    notes = sorted({(r["format"], r["side"], r["path"], r["note"]) for r in results if r.get("note")})
    if notes:
        print("\nNot estimated (`-` above), on every CPU model:\n")
    for fmt, side, path, note in notes:
        print(f"- {fmt}, {side} {path}: {note}")
    print("\nRoofline: the bandwidth one core streams weights at, at the estimated rate")
    print("(bytes per 256 weights x GHz / cycles per 256), ours / ggml's; a GEMV is")
    print("memory-bound once the cores used stream more than the board's peak.\n")
    print("| format | " + " | ".join(b[0] for b in BOARDS) + " |")
    print("|---|" + "---|" * len(BOARDS))
    for fmt in fmts:
        bb, bl = BYTES[fmt]
        per256 = bb * 256 / bl
        cells = []
        for name, cpu, ghz, cores, peak, _ in BOARDS:
            rs = [r for r in results if r["cpu"] == cpu and r["format"] == fmt and r["cycles_per_256"]]
            o = min((r["cycles_per_256"] for r in rs if r["side"] == "llmkernel" and r["path"].endswith("dotprod")), default=None)
            g = min((r["cycles_per_256"] for r in rs if r["side"] == "ggml"), default=None)
            f = lambda c: "-" if c is None else f"{per256 * ghz / c:.1f}"
            cells.append(f"{f(o)} / {f(g)}")
        print(f"| {fmt} | " + " | ".join(cells) + " |")
    print("\nPeaks: " + "; ".join(f"{b[0]}: {b[4]} GB/s, {b[2]} GHz ({b[5]})" for b in BOARDS) + ".")
    print("\nSoftware prefetch (`prfm pldl1keep` 8 KB ahead, per 64 bytes of each block): our")
    print("one-column GEMV's cycles per 256 weights without / with it, at the loop's best ISA.")
    print("llvm-mca has no memory model: this is only what the hints cost in issue slots. The")
    print("gain (a core's stream kept going from DRAM) needs a board; the run-time rule turns")
    print("prefetch off where every core is in-order (the Cortex-A55 board here).\n")
    print("| format | " + " | ".join(CPUS) + " |")
    print("|---|" + "---|" * len(CPUS))
    for fmt in fmts:
        cells = []
        for cpu in CPUS:
            rs = [r for r in results if r["cpu"] == cpu and r["format"] == fmt and r["side"] == "llmkernel"
                  and r.get("cycles_per_256")]
            pair = None
            for r in sorted((r for r in rs if r["path"].endswith("dotprod")), key=lambda r: r["cycles_per_256"]):
                w = [x for x in rs if x["path"] == r["path"] + " prefetch"]
                if w:
                    pair = (r["cycles_per_256"], w[0]["cycles_per_256"])
                    break
            cells.append("-" if pair is None else f"{pair[0]:.1f} / {pair[1]:.1f} ({100 * (pair[1] / pair[0] - 1):+.0f} %)")
        print(f"| {fmt} | " + " | ".join(cells) + " |")
    print("\nTwo columns on the Neoverse-V1: cycles per 256 weights (both columns), our")
    print("dotprod row kernel against our i8mm 2-row kernel, whole block bodies:\n")
    print("| format | dotprod (1 row x 2 columns) | i8mm (2 rows x 2 columns) | ggml vec_dot x 2 |")
    print("|---|---|---|---|")
    two = [r for r in results if r["path"].startswith("two columns")]
    for fmt in sorted({r["format"] for r in two}):
        d = [r for r in two if r["format"] == fmt and ".cols" in r["path"]]
        m = [r for r in two if r["format"] == fmt and "_mm." in r["path"]]
        if not d:
            # No straight-line dotprod region at two columns (the grid
            # formats decode through loops): twice our one-column GEMV.
            d = [dict(r, path="2 x " + r["path"], cycles_per_256=2 * r["cycles_per_256"]) for r in results
                 if r["cpu"] == "neoverse-v1" and r["format"] == fmt and r["side"] == "llmkernel"
                 and r["path"].endswith("dotprod") and r.get("cycles_per_256")]
            d = sorted(d, key=lambda r: r["cycles_per_256"])[:1]
        g = [r for r in results if r["cpu"] == "neoverse-v1" and r["format"] == fmt and r["side"] == "ggml"
             and r["path"].startswith("vec_dot") and r.get("cycles_per_256")
             and fmt not in ("q4_0", "q8_0")]  # these have an i8mm vec_dot of two columns, not estimated
        f = lambda rs: " / ".join(f"{r['cycles_per_256']:.1f}"
                                  + (" (2 x 1 column)" if r["path"].startswith("2 x ") else "") for r in rs) or "-"
        print(f"| {fmt} | {f(d)} | {f(m)} | " + (f"{2 * g[0]['cycles_per_256']:.1f}" if g else "-") + " |")
    print("\nPanel tile, one block (its float steps, mins and activation scales included):\ncycles per 256 weight x column products\n")
    print("| shape | " + " | ".join(CPUS) + " |")
    print("|---|" + "---|" * len(CPUS))
    shapes = sorted({(r["format"], r["path"]) for r in results if r["format"].startswith("tile")})
    for fmt, path in shapes:
        cells = []
        for cpu in CPUS:
            r = [x for x in results if x["cpu"] == cpu and x["format"] == fmt and x["path"] == path]
            cells.append(f"{r[0]['cycles_per_256']:.2f}" if r and r[0]["cycles_per_256"] else "-")
        print(f"| {fmt} {path.split()[1]} | " + " | ".join(cells) + " |")
    print("\nBatch >= 16 (cycles per 256 weight x column products; ours: the tile's block loop")
    print("for the format's shape; ggml: its GEMM on repacked weights where it has one")
    print("(`-` where not priced), else its vec_dot, one column at a time):\n")
    print("| format | " + " | ".join(f"{c} ours dotprod / ggml" for c in CPUS) + " | neoverse-v1 ours i8mm / ggml i8mm |")
    print("|---|" + "---|" * (len(CPUS) + 1))

    def get(cpu, fmt_key, path):
        r = [x for x in results if x["cpu"] == cpu and x["format"] == fmt_key and x["path"].startswith(path)]
        return f"{r[0]['cycles_per_256']:.2f}" if r and r[0]["cycles_per_256"] else "-"

    for fmt in TILE_SHAPE:
        q, gg, pp = TILE_SHAPE[fmt]
        tile = f"tile q={q} g={gg} p={pp}"

        def theirs(cpu, isa):
            if fmt in GGML_REPACKED:
                g = get(cpu, f"gemm {fmt}", f"gemm {isa}")
                if g == "-" and isa == "i8mm":
                    g = get(cpu, f"gemm {fmt}", "gemm dotprod")
                    return g if g == "-" else g + " (dotprod)"
                return g
            v = get(cpu, fmt, "vec_dot")
            return v if v == "-" else v + " (vec_dot)"
        cells = [f"{get(cpu, tile, 'tile dotprod')} / {theirs(cpu, 'dotprod')}" for cpu in CPUS]
        cells.append(f"{get('neoverse-v1', tile, 'tile i8mm')} / {theirs('neoverse-v1', 'i8mm')}")
        print(f"| {fmt} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
