"""The llama.cpp build holds no instruction a CPU of its level may lack (issue 13: a -march=native build with
AVX-512/AMX kernels segfaulted on an Intel Xeon; the machines the tests run on would run such code unnoticed).

The build itself is disassembled (scripts/isa_check.py says what counts and why). The checker is first shown
to catch what it must — AVX-512 on zmm, on ymm with a mask or a broadcast, AMX, AVX-VNNI — and to pass what
x86-64-v3 code really holds, on small functions compiled here with gcc. The baseline build (for CPUs without
AVX2) is not compiled in the test run (10 minutes); its configuration is, and the kernels' source file
compiled with exactly the command it gets.
"""

from __future__ import annotations

import filecmp
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from backends.llamacpp.llama_server import find_binary
from scripts.isa_check import BASELINE, V3, Report, build_files, check_disassembly, check_files, disassemble

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VERSION = (ROOT / "backends" / "llamacpp" / "LLAMA_CPP_PYTHON_VERSION").read_text().strip()

EVEX = "EVEX encoding (AVX-512)"
OPMASK = "opmask register (AVX-512)"
AMX = "AMX"
NO_LEVEL = "extension in no x86-64 level (VNNI, IFMA, BF16, GFNI, AES, SHA, ...)"
VEX = "VEX encoding (AVX, AVX2, FMA, F16C, BMI)"
V2_V3 = "SSE3/SSSE3/SSE4/POPCNT/LZCNT (x86-64-v2, v3)"

# What a compiler makes of a plain loop at each level: -march=x86-64-v4 is AVX-512 (F, BW, CD, DQ, VL).
LOOP = """
void axpy(float *restrict x, const float *restrict y, float a, int n) { for (int i = 0; i < n; i++) x[i] += a * y[i]; }
int bits(unsigned long x) { return __builtin_popcountl(x) + __builtin_clzl(x | 1); }
"""
INTRINSICS = "#include <immintrin.h>\n"


def compiled(tmp_path: Path, source: str, *flags: str) -> str:
    """`source` compiled with gcc and `flags`, disassembled."""
    obj = tmp_path / f"snippet{len(list(tmp_path.iterdir()))}.o"
    subprocess.run(["gcc", "-O3", "-Wno-psabi", *flags, "-x", "c", "-c", "-", "-o", str(obj)], input=source,
                   text=True, check=True, capture_output=True)
    return disassemble(obj)


def rules(report: Report) -> set[str]:
    return {finding.rule for finding in report.findings}


@pytest.mark.parametrize(
    ("flags", "source", "expected"),
    [
        (["-march=x86-64-v4"], LOOP, {EVEX}),  # the vectorised loop on zmm registers
        (["-mavx512f"], INTRINSICS + "__m512 f(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }", {EVEX}),
        # AVX512VL on ymm and xmm registers: no zmm anywhere, still AVX-512
        (["-mavx512f", "-mavx512vl"],
         INTRINSICS + "__m256i f(__m256i a, __m256i b, __m256i c) { return _mm256_ternarylogic_epi32(a, b, c, 0x96); }",
         {EVEX}),
        (["-mavx512f", "-mavx512vl"],
         INTRINSICS + "__m256 f(__m256 a, __m256 b, __mmask8 k) { return _mm256_mask_add_ps(a, k, a, b); }",
         {EVEX, OPMASK}),  # kmovw to the mask register is VEX-encoded: only the opmask rule sees it
        (["-mavx512f", "-mavx512vl"],
         INTRINSICS + "__m128 f(__m128 a, const float *p) { return _mm_add_ps(a, _mm_set1_ps(*p)); }",
         {EVEX}),  # vaddps (%rdi){1to4}: an embedded broadcast
        (["-mavx512f", "-mavx512bf16", "-mavx512vl"],
         INTRINSICS + "__m256bh f(__m256 a, __m256 b) { return _mm256_cvtne2ps_pbh(a, b); }", {EVEX}),
        (["-mamx-tile", "-mamx-int8"],
         INTRINSICS + "void f(const void *cfg, const void *a, const void *b, void *c) { _tile_loadconfig(cfg);"
         " _tile_loadd(1, a, 64); _tile_loadd(2, b, 64); _tile_zero(0); _tile_dpbssd(0, 1, 2);"
         " _tile_stored(0, c, 64); _tile_release(); }",
         {AMX}),
        (["-mavxvnni"],
         INTRINSICS + "__m256i f(__m256i s, __m256i a, __m256i b) { return _mm256_dpbusd_avx_epi32(s, a, b); }",
         {NO_LEVEL}),  # VEX-encoded, but AVX-VNNI is in no x86-64 level
    ],
    ids=["v4-loop-zmm", "avx512f-zmm", "avx512vl-ymm", "avx512-mask", "avx512-broadcast", "avx512-bf16",
         "amx", "avx-vnni"],
)
def test_the_checker_finds_avx512_amx_and_vnni(tmp_path: Path, flags: list[str], source: str, expected: set[str]):
    report = check_disassembly(compiled(tmp_path, source, *flags), V3)

    assert rules(report) == expected, report.findings


def test_the_checker_passes_what_x86_64_v3_code_holds(tmp_path: Path) -> None:
    v3 = INTRINSICS + LOOP + """
    __m256 fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
    __m256i gather(const int *p, __m256i i) { return _mm256_i32gather_epi32(p, i, 4); }
    __m256 half(__m128i h) { return _mm256_cvtph_ps(h); }
    unsigned long deposit(unsigned long x, unsigned long m) { return _pdep_u64(x, m) + _lzcnt_u64(x); }
    """
    disassembly = compiled(tmp_path, v3, "-march=x86-64-v3")
    report = check_disassembly(disassembly, V3)

    assert report.findings == []
    # ... and it is the level's code, not code that would pass anything: AVX2, FMA, F16C, BMI2 on ymm.
    assert report.vex > 10
    for mnemonic in ("vfmadd", "vpgatherdd", "vcvtph2ps", "pdep", "lzcnt", "%ymm"):
        assert mnemonic in disassembly
    # At the baseline level the same code is beyond it, rule by rule.
    assert rules(check_disassembly(disassembly, BASELINE)) == {VEX, V2_V3}


def test_the_baseline_checker_passes_plain_x86_64_and_finds_x86_64_v2(tmp_path: Path) -> None:
    assert check_disassembly(compiled(tmp_path, LOOP, "-march=x86-64"), BASELINE).findings == []
    v2 = check_disassembly(compiled(tmp_path, LOOP, "-march=x86-64-v2"), BASELINE)
    assert rules(v2) == {V2_V3}
    assert "popcnt" in {f.instruction.split()[0] for f in v2.findings}  # and the loop's SSE3, by this gcc


# ---- the build ---------------------------------------------------------------------------------------------


def build_dir() -> Path:
    """The cached build llama-server comes from: <cache>/<version>-<level>-<key> (scripts/build_llamacpp.sh)."""
    return find_binary().resolve().parent.parent


def script_flags(level: str) -> list[str]:
    result = subprocess.run([str(ROOT / "scripts" / "build_llamacpp.sh"), "--flags"], capture_output=True,
                            text=True, check=True, env={**os.environ, "LLAMA_CPP_LEVEL": level})
    return result.stdout.splitlines()


def test_llama_server_and_its_libraries_hold_nothing_beyond_their_level(llama_cpp_installed) -> None:
    build = build_dir()
    version, level, *flags = (build / ".complete").read_text().splitlines()
    assert (version, flags) == (VERSION, script_flags(level)), "the cached build is not what the script builds"
    files = build_files(find_binary())
    names = {path.name.split(".so")[0] for path in files}
    assert {"llama-server", "libllama", "libggml", "libggml-base", "libggml-cpu", "libmtmd"} <= names

    reports = check_files(files, level)  # 2.4 million instructions: about 9 s

    problems = [f"{path.name}: {finding}" for path, report in reports.items() for finding in report.findings]
    assert problems == [], f"{len(problems)} instructions beyond {level}:\n" + "\n".join(problems[:20])
    assert all(report.instructions > 0 for report in reports.values())
    assert sum(report.instructions for report in reports.values()) > 1_000_000
    ggml_cpu = next(report for path, report in reports.items() if path.name.startswith("libggml-cpu"))
    if level == V3:  # the kernels are really AVX2/FMA code, not a baseline build that would pass trivially
        assert ggml_cpu.vex > 10_000


def test_llama_cpp_python_loads_the_libraries_that_were_checked(llama_cpp_installed) -> None:
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.origin is not None
    libs = Path(spec.origin).parent / "lib"
    built = find_binary().resolve().parent
    copies = sorted(p for p in libs.glob("lib*.so*") if not p.is_symlink())
    assert {p.name.split(".so")[0] for p in copies} == {"libllama", "libggml", "libggml-base", "libggml-cpu",
                                                         "libmtmd"}
    for copy in copies:
        assert filecmp.cmp(copy, built / copy.name, shallow=False), f"{copy} is not the build's {copy.name}"


# The compiler's instruction-set options each level's build gives its sources (ggml-cpu's; nothing else has any).
LEVEL_OPTIONS = {BASELINE: set(), V3: {"-msse4.2", "-mf16c", "-mfma", "-mbmi2", "-mavx", "-mavx2"}}


@pytest.mark.parametrize("level", [BASELINE, V3])
def test_each_level_compiles_its_kernels_for_that_level_alone(
    llama_cpp_installed, tmp_path: Path, level: str
) -> None:
    """Configured (not built: that is 10 minutes) with the script's flags for the level, and the file with the
    x86 kernels compiled with exactly the command it gets: also the baseline build, for CPUs without AVX2,
    which is not the one installed here."""
    source = build_dir().parent / "src" / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
    assert (source / "CMakeLists.txt").is_file(), f"{source}: the source the build was made from is gone"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []  # as scripts/build_llamacpp.sh chooses
    subprocess.run(["cmake", "-S", str(source), "-B", str(tmp_path), *generator,
                    "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *script_flags(level)],
                   capture_output=True, text=True, check=True)
    commands = json.loads((tmp_path / "compile_commands.json").read_text())

    options = {arg for c in commands for arg in shlex.split(c["command"]) if arg.startswith("-m")}
    assert options == LEVEL_OPTIONS[level]

    kernels = next(c for c in commands if c["file"].endswith("ggml-cpu/arch/x86/quants.c"))
    argv = shlex.split(kernels["command"])
    subprocess.run(argv, cwd=kernels["directory"], capture_output=True, text=True, check=True)
    report = check_disassembly(disassemble(Path(kernels["directory"]) / argv[argv.index("-o") + 1]), level)
    assert report.findings == []
    assert report.instructions > 1000
    assert (report.vex > 1000) == (level == V3)  # AVX2 kernels at v3, none at the baseline
