"""`python -m scripts.isa_check [FILE ...]`: find instructions beyond an x86-64 level in machine code.

A portable llama.cpp build must hold nothing a CPU of its level may lack: an AVX-512/AMX kernel in a build that
was meant to be x86-64-v3 is what segfaulted on an Intel Xeon (issue 13), and it would run unnoticed on any
CPU that happens to have AVX-512. So the code itself is checked, disassembled with binutils' `objdump -d`,
instruction by instruction. With no FILE it checks the llama.cpp build llama-server comes from (the binary
and every library beside it). Exit code 1 and one line per kind of finding when anything is beyond the level.

What counts as beyond, and why each rule is exact rather than a list of mnemonics:
- **EVEX encoding** (first opcode byte 0x62, after segment or address-size prefixes): in 64-bit mode 0x62
  is nothing but the EVEX prefix, which only AVX-512 (and its successors AVX10 and APX) use. That catches
  AVX-512 code on xmm and ymm registers too (AVX512VL: `vpternlogd`, a masked `vaddps`, a `{1toN}`
  broadcast), which no register name would reveal.
- **Opmask registers** `%k0`-`%k7` as operands: AVX-512's mask instructions (`kmovw`, `kortestw`, ...) are
  VEX-encoded, so the EVEX rule alone would miss them.
- **AMX**: the `%tmm` tile registers and the tile instructions (`ldtilecfg`, `tileloadd`, `tdpbssd`, ...),
  VEX-encoded too.
- **Extensions in no x86-64 level** whatever their encoding: AVX-VNNI and its INT8/INT16 forms (`vpdpbusd`,
  ...), AVX-IFMA (`vpmadd52luq`), AVX-NE-CONVERT and BF16 conversion (`vcvtne*`, `vbcstne*`), GFNI, AES,
  PCLMULQDQ and SHA.
- For the baseline level (x86-64, SSE2) also any **VEX encoding** (first opcode byte 0xc4 or 0xc5, which in
  64-bit mode are nothing else: AVX, AVX2, FMA, F16C, BMI1/2) and the SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT,
  LZCNT and MOVBE instructions (x86-64-v2 and v3). Not `tzcnt`: its encoding runs as `bsf` on older CPUs, and
  compilers emit it on purpose for any x86-64.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

V3 = "x86-64-v3"
BASELINE = "x86-64"
LEVELS = (BASELINE, V3)

# One instruction per line: --insn-width=15 keeps even the longest x86 instruction's bytes on its line, so no
# continuation line (bytes only) can pass for the start of an instruction.
_LINE = re.compile(r"^ *[0-9a-f]+:\t((?:[0-9a-f]{2} )+) *\t(.*)$", re.MULTILINE)
_SYMBOL = re.compile(r"^[0-9a-f]+ <([^>]+)>:$", re.MULTILINE)
# Segment overrides and the address-size prefix may precede a VEX or EVEX prefix; 66/F2/F3, LOCK and REX may not.
_PREFIXES = {"26", "2e", "36", "3e", "64", "65", "67"}
_OPMASK = re.compile(r"%k[0-7]\b")
_AMX = re.compile(r"%tmm[0-7]\b|^(?:ldtilecfg|sttilecfg|tile\w+|tdp\w+|tcmm\w+)\b")
_NO_LEVEL = re.compile(
    r"^(?:vpdp[bw][su]{2}ds?|v?pmadd52[lh]uq|vcvtne\w+|vbcstne\w+|v?gf2p8\w+|v?aes\w+|v?pclmul\w+|"
    r"sha(?:1|256|512)\w+)\b"
)
_V2_V3 = re.compile(
    r"^(?:addsubp[sd]|h(?:add|sub)p[sd]|lddqu|movddup|movs[hl]dup|fisttp\w*"  # SSE3
    r"|pabs[bwd]|palignr|ph(?:add|sub)(?:w|d|sw)|pmaddubsw|pmulhrsw|pshufb|psign[bwd]"  # SSSE3
    r"|p?blendv?(?:ps|pd|b|w)|dpp[sd]|extractps|insertps|mpsadbw|packusdw|pcmpeqq|pextr[bdq]|pinsr[bdq]"
    r"|pm(?:ax|in)(?:sb|sd|ud|uw)|pmov[sz]x\w+|pmuldq|pmulld|ptest|round[ps][sd]|movntdqa|phminposuw"  # SSE4.1
    r"|pcmp[ei]str[im]|pcmpgtq|crc32\w*"  # SSE4.2
    r"|popcnt|lzcnt|movbe)\b"
)


@dataclass(frozen=True)
class Finding:
    rule: str
    symbol: str
    instruction: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.instruction}  (in {self.symbol})"


def _opcode(raw: str) -> str:
    """The first byte after the prefixes that may precede a VEX or EVEX prefix."""
    return next((byte for byte in raw.split() if byte not in _PREFIXES), "")


def _rule(level: str, opcode: str, text: str) -> str | None:
    """The rule this instruction (its first opcode byte, its text) breaks at `level`, None when it is allowed."""
    mnemonic = text.removeprefix("{vex} ").removeprefix("{evex} ")
    if opcode == "62":
        return "EVEX encoding (AVX-512)"
    if _OPMASK.search(text):
        return "opmask register (AVX-512)"
    if _AMX.search(mnemonic):
        return "AMX"
    if _NO_LEVEL.match(mnemonic):
        return "extension in no x86-64 level (VNNI, IFMA, BF16, GFNI, AES, SHA, ...)"
    if level == BASELINE:
        if opcode in ("c4", "c5"):
            return "VEX encoding (AVX, AVX2, FMA, F16C, BMI)"
        if _V2_V3.match(mnemonic):
            return "SSE3/SSSE3/SSE4/POPCNT/LZCNT (x86-64-v2, v3)"
    return None


@dataclass(frozen=True)
class Report:
    instructions: int  # how many were disassembled: a check of nothing must not pass for a clean build
    vex: int  # how many are VEX-encoded (AVX, AVX2, FMA, ...): x86-64-v3 code that uses its level has some
    findings: list[Finding]


def check_disassembly(disassembly: str, level: str = V3) -> Report:
    """The instructions in `objdump -d --insn-width=15` output that a CPU of `level` may not have."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level}")
    symbols = [(m.start(), m.group(1)) for m in _SYMBOL.finditer(disassembly)]
    findings, count, vex, where = [], 0, 0, 0
    for match in _LINE.finditer(disassembly):
        count += 1
        text = match.group(2).strip()
        opcode = _opcode(match.group(1))
        vex += opcode in ("c4", "c5")
        rule = _rule(level, opcode, text)
        if rule is not None:
            while where + 1 < len(symbols) and symbols[where + 1][0] < match.start():
                where += 1
            symbol = symbols[where][1] if symbols and symbols[where][0] < match.start() else "?"
            findings.append(Finding(rule, symbol, " ".join(text.split())))
    return Report(count, vex, findings)


def disassemble(path: Path) -> str:
    result = subprocess.run(["objdump", "-d", "--insn-width=15", str(path)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"objdump -d {path} failed: {result.stderr.strip()}")
    return result.stdout


def check_files(paths: Iterable[Path], level: str = V3) -> dict[Path, Report]:
    return {path: check_disassembly(disassemble(path), level) for path in paths}


def build_files(binary: Path) -> list[Path]:
    """llama-server and the libraries beside it in its build directory, each file once (not its symlinks)."""
    directory = binary.resolve().parent
    files = {binary.resolve(), *(p.resolve() for p in directory.glob("lib*.so*"))}
    return sorted(files)


def summary(reports: dict[Path, Report]) -> list[str]:
    lines = []
    for path, report in reports.items():
        by_rule: dict[str, list[Finding]] = {}
        for finding in report.findings:
            by_rule.setdefault(finding.rule, []).append(finding)
        for rule, findings in by_rule.items():
            lines.append(f"{path.name}: {len(findings)} x {rule}, first: {findings[0].instruction} "
                         f"(in {findings[0].symbol})")
    return lines


def main(argv: list[str] | None = None) -> int:
    from backends.llamacpp.llama_server import find_binary

    args = sys.argv[1:] if argv is None else argv
    level = V3
    if args[:1] == ["--level"]:
        level, args = args[1], args[2:]
    paths = [Path(a) for a in args] or build_files(find_binary())
    reports = check_files(paths, level)
    problems = summary(reports)
    for line in problems:
        print(line)
    total = sum(r.instructions for r in reports.values())
    print(f"{total} instructions in {len(paths)} file(s); {'beyond' if problems else 'nothing beyond'} {level}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
