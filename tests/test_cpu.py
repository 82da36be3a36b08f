"""The host CPU as int8 sees it, parsed from real /proc/cpuinfo layouts of the CPU classes seen so far."""

from __future__ import annotations

from edgekit.cpu import describe, host_cpu, missing_dot_product
from edgekit.devices.runner import cpu_info, machine_info

AMD_ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme de pse sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 bmi2 sha_ni
"""
XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8
"""
# Raspberry Pi 5 (Cortex-A76): the kernel prints Features, CPU implementer and part, no model name
PI5 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b
"""


def test_x86_without_vnni():
    cpu = cpu_info(AMD_ZEN3)
    assert cpu["vendor"] == "AuthenticAMD" and cpu["model"] == "AMD EPYC"
    assert cpu["features"] == ["avx2"] and cpu["int8_dot_product"] is False
    assert missing_dot_product(cpu) == "no AVX-VNNI, AVX512-VNNI or AMX"


def test_x86_with_vnni_and_amx():
    cpu = cpu_info(XEON_AMX)
    assert cpu["features"] == ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"]
    assert cpu["int8_dot_product"] is True
    assert describe(cpu).startswith("Intel(R) Xeon(R) Platinum 8480+ (")


def test_arm_board_with_dotprod():
    cpu = cpu_info(PI5)
    assert cpu["vendor"] == "0x41" and cpu["features"] == ["asimd", "asimddp"] and cpu["int8_dot_product"] is True
    assert cpu["arch"] == "aarch64"  # from the text, not from the machine that parses it
    assert cpu_info(PI5.replace(" asimddp", ""))["int8_dot_product"] is False


def test_unknown_when_the_kernel_does_not_say():
    assert cpu_info("")["int8_dot_product"] is None and cpu_info("")["features"] == []


def test_this_host_is_recorded_where_runner_figures_go():
    assert machine_info()["cpu"] == host_cpu() == cpu_info()
    assert host_cpu()["model"]  # Linux always names it
