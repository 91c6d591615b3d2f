"""Writes nf4.json: NF4 quantisation by bitsandbytes on the CPU, for Finch's QLoRA tests.

    pip install torch bitsandbytes==0.50.2 && python3 make_nf4.py

For each input (float32 values, written as their bit patterns), bitsandbytes.functional.quantize_4bit with
quant_type="nf4" and blocksize 64, once plain and once with compress_statistics=True (QLoRA's double
quantisation: the absmax values less their mean, quantised blockwise to 8 bits in blocks of 256 with the
signed dynamic map), and dequantize_4bit of each. Every float is written as its IEEE-754 bit pattern so the
test can compare bit for bit.
"""
import json
import struct

import torch
import bitsandbytes
import bitsandbytes.functional as F


def bits(t):
    return [struct.unpack("<I", struct.pack("<f", float(v)))[0] for v in t.reshape(-1).tolist()]


def case(name, values):
    values = values.to(torch.float32).contiguous()
    out = {"name": name, "values": bits(values)}
    q, s = F.quantize_4bit(values, blocksize=64, quant_type="nf4", compress_statistics=False)
    out["plain"] = {"packed": q.reshape(-1).tolist(), "absmax": bits(s.absmax),
                    "dequantized": bits(F.dequantize_4bit(q, s))}
    q, s = F.quantize_4bit(values, blocksize=64, quant_type="nf4", compress_statistics=True)
    out["double"] = {"packed": q.reshape(-1).tolist(), "absmax_codes": s.absmax.reshape(-1).tolist(),
                     "absmax_scales": bits(s.state2.absmax), "offset": bits(s.offset.reshape(1))[0],
                     "dequantized": bits(F.dequantize_4bit(q, s))}
    return out


generator = torch.Generator().manual_seed(20261206)
cases = [
    # A weight-like matrix: 12 rows of 576 (108 blocks of 64, absmax in one block of 256 with a partial one).
    case("normal-12x576", torch.randn(12, 576, generator=generator) * 0.05),
    # 300 blocks: one full block of 256 absmax values and a partial second.
    case("normal-300-blocks", torch.randn(300 * 64, generator=generator) * 0.02),
    # Values on the code's midpoints and its ends, a zero block, and heavy outliers.
    case("edges", torch.cat([
        torch.tensor([-1.0, 1.0, 0.0, 0.5, -0.5, 0.03979015, -0.04552501, 0.6427869] * 8),
        torch.zeros(64),
        torch.randn(64, generator=generator) * torch.tensor([100.0] + [0.01] * 63),
    ])),
]
code = bits(F.get_4bit_type("nf4", device="cpu"))
dynamic = bits(F.create_dynamic_map(signed=True))
json.dump({"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__, "nf4_code": code,
           "dynamic_map": dynamic, "cases": cases}, open("nf4.json", "w"))
print("wrote nf4.json")
