"""Where a GGUF file keeps its integers and strings: the sites the fuzzer mutates.

A GGUF (v2/v3) file is: magic "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv metadata pairs
(u64-length key, u32 value type, value: a scalar, a u64-length string, or an array: u32 element
type, u64 count, elements); n_tensors tensor infos (u64-length name, u32 n_dims, u64 dims, u32 type,
u64 offset); padding to the alignment; the tensor data.
"""
from __future__ import annotations

from dataclasses import dataclass

SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # type -> bytes
STRING, ARRAY = 8, 9
MAX_SITES_PER_ARRAY = 64  # a 49152-token vocabulary: sample its elements, not all of them


@dataclass(frozen=True)
class Site:
    offset: int
    size: int   # bytes; for str_bytes the string's length
    kind: str   # header, key_len, value_type, value, str_len, str_bytes, arr_type, arr_n, elem, elem_str_len,
                # name_len, n_dims, dim, tensor_type, tensor_offset


def gguf_sites(data: bytes) -> tuple[list[Site], int]:
    """The sites of an intact GGUF file, and where its tensor data starts (after alignment)."""
    sites: list[Site] = []
    pos = 4

    def u(n: int, kind: str) -> int:
        nonlocal pos
        v = int.from_bytes(data[pos: pos + n], "little")
        sites.append(Site(pos, n, kind))
        pos += n
        return v

    def string(len_kind: str, keep: bool = True) -> bytes:
        nonlocal pos
        n = u(8, len_kind) if keep else int.from_bytes(data[pos: pos + 8], "little")
        if not keep:
            pos += 8
        s = data[pos: pos + n]
        if keep and n:
            sites.append(Site(pos, n, "str_bytes"))
        pos += n
        return s

    u(4, "header")
    n_tensors = u(8, "header")
    n_kv = u(8, "header")
    alignment = 32
    for _ in range(n_kv):
        key = string("key_len")
        vtype = u(4, "value_type")
        if vtype == STRING:
            string("str_len")
        elif vtype == ARRAY:
            etype = u(4, "arr_type")
            n = u(8, "arr_n")
            keep = set(range(0, n, max(1, n // MAX_SITES_PER_ARRAY)))
            for i in range(n):
                if etype == STRING:
                    string("elem_str_len", keep=i in keep)
                else:
                    size = SCALAR[etype]
                    if i in keep:
                        sites.append(Site(pos, size, "elem"))
                    pos += size
        else:
            size = SCALAR[vtype]
            v = u(size, "value")
            if key == b"general.alignment":
                alignment = v
    for _ in range(n_tensors):
        string("name_len")
        n_dims = u(4, "n_dims")
        for _ in range(n_dims):
            u(8, "dim")
        u(4, "tensor_type")
        u(8, "tensor_offset")
    data_offset = pos + (-pos % alignment)
    return sites, data_offset
