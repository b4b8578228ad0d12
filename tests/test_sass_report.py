"""benchmarks/sass_report.py's reading of a cuobjdump SASS listing (the tool itself needs a CUDA build and
NVIDIA's disassembler; the parsing is checked here on a listing of the same form)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("sass_report", os.path.join(ROOT, "benchmarks", "sass_report.py"))
sass_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sass_report)

LISTING = """
	code for sm_90
		Function : _ZN8pixelops4cuda4conv1aEv
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                       /* 0x00000a00ff017b82 */
        /*0010*/                   LDS R4, [R2+0x10] ;                          /* 0x0000100002047984 */
        /*0020*/              @!P0 FFMA.FTZ R5, R4, R4, R5 ;                    /* 0x0000000404058223 */
        /*0030*/                   LD.E R6, desc[UR4][R8.64] ;                  /* 0x0000000408067980 */
        /*0040*/                   STL [R1], R9 ;                               /* 0x0000000901007387 */
		Function : _ZN8pixelops4cuda4conv1bEv
        /*0000*/                   HMMA.1688.F32.TF32 R4, R8, R12, R4 ;         /* 0x0000000c0804723c */
        /*0010*/               @P1 HMMA.1688.F32.TF32 R4, R8, R12, R4 ;         /* 0x0000000c0804723c */
        /*fff0*/                   NOP ;                                        /* 0x0000000000007918 */
        /*10000*/                  EXIT ;                                       /* 0x000000000000794d */
"""


def test_kernels_counts_each_functions_opcodes():
    got = dict(sass_report.kernels(LISTING))
    assert set(got) == {"_ZN8pixelops4cuda4conv1aEv", "_ZN8pixelops4cuda4conv1bEv"}
    a, b = got["_ZN8pixelops4cuda4conv1aEv"], got["_ZN8pixelops4cuda4conv1bEv"]
    # predicated instructions count under their opcode; modifiers (.FTZ, .E, .1688) are dropped
    assert (a["LDC"], a["LDS"], a["FFMA"], a["LD"], a["STL"], sum(a.values())) == (1, 1, 1, 1, 1, 5)
    # addresses past 0xffff (long kernels) have five digits
    assert (b["HMMA"], b["NOP"], b["EXIT"], sum(b.values())) == (2, 1, 1, 4)
