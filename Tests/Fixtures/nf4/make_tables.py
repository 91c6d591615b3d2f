"""Writes Sources/FinchTensor/Quantization/QuantizationTables.swift from nf4.json (run make_nf4.py first):
the NF4 values and the signed 8-bit dynamic map as bitsandbytes computes them, as float32 bit patterns.

    python3 make_tables.py   (from this folder; standard library only)
"""
import json
from pathlib import Path

fixture = json.load(open("nf4.json"))


def rows(values, per=8):
    return "\n".join("        " + ", ".join("0x%08X" % v for v in values[i:i + per]) + ","
                     for i in range(0, len(values), per))


swift = f'''/// The value tables of bitsandbytes' block quantisation, as IEEE-754 float32 bit patterns, written by
/// Tests/Fixtures/nf4/make_tables.py from bitsandbytes {fixture['bitsandbytes']} (`get_4bit_type("nf4")` and
/// `create_dynamic_map(signed=True)`): tables of the formats, so quantised weights mean what they mean there.
enum QuantizationTables {{
    /// The 16 NF4 values (QLoRA's 4-bit NormalFloat), ascending, from −1 to 1 with 0 at index 7.
    static let nf4: [Float] = [
{rows(fixture['nf4_code'])}
    ].map {{ Float(bitPattern: $0) }}

    /// The 256 values of the signed 8-bit dynamic type (a dynamic exponent and fraction), ascending from
    /// about −0.993 to 1: the code double quantisation stores the NF4 block scales in.
    static let dynamic8: [Float] = [
{rows(fixture['dynamic_map'])}
    ].map {{ Float(bitPattern: $0) }}
}}
'''
target = Path(__file__).resolve().parents[3] / "Sources/FinchTensor/Quantization/QuantizationTables.swift"
target.write_text(swift)
print(f"wrote {target}")
