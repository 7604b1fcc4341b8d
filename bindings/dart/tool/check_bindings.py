#!/usr/bin/env python3
"""Checks that the Dart bindings (lib/src/bindings.g.dart) match the C header
(crates/tidesync-ffi/include/tidesync.h) symbol by symbol: every `ts_*` function with its
native signature (return and argument types, in order) and its Dart signature (the Dart type
of each argument, and the names), every `TS_*` constant with its value, the `TsBuf` struct's
fields, and the callback typedefs. No Dart SDK is needed: CI runs this where none can be
installed. Exit status 0 when they match; otherwise one line per difference.

    python3 bindings/dart/tool/check_bindings.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = HERE.parents[2] / "crates" / "tidesync-ffi" / "include" / "tidesync.h"
BINDINGS = HERE.parent / "lib" / "src" / "bindings.g.dart"

# C type -> (dart:ffi native type, Dart type)
SCALARS = {
    "uint64_t": ("ffi.Uint64", "int"),
    "int64_t": ("ffi.Int64", "int"),
    "uint32_t": ("ffi.Uint32", "int"),
    "int32_t": ("ffi.Int32", "int"),
    "size_t": ("ffi.Size", "int"),
    "bool": ("ffi.Bool", "bool"),
    "void": ("ffi.Void", "void"),
    "uint8_t": ("ffi.Uint8", "int"),
}
TYPEDEFS = {"TsDoorbell", "TsDartPostCObject"}


def native_of(c_type: str) -> tuple[str, str]:
    """The dart:ffi native type and the Dart type of a C type."""
    t = c_type.replace("const ", "").strip()
    if t.endswith("*"):
        inner = t[:-1].strip()
        if inner == "TsBuf":
            native = "ffi.Pointer<TsBuf>"
        else:
            native = f"ffi.Pointer<{SCALARS[inner][0]}>"
        return native, native
    if t in TYPEDEFS:
        return t, t
    return SCALARS[t]


def split_args(text: str) -> list[str]:
    """Splits a parameter list on top-level commas (generics have commas inside <>)."""
    out, depth, current = [], 0, ""
    for ch in text:
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        out.append(current.strip())
    return out


def parse_header(text: str):
    constants = dict(re.findall(r"^#define (TS_\w+) (\d+)$", text, re.M))
    functions = {}
    for ret, name, args in re.findall(r"^(\w+) (ts_\w+)\(([^)]*)\);", text, re.M | re.S):
        params = []
        for arg in split_args(" ".join(args.split())):
            if arg == "void":
                continue
            m = re.match(r"(.*?)(\w+)$", arg)
            params.append((native_of(m.group(1)), m.group(2)))
        functions[name] = (native_of(ret), params)
    struct = re.search(r"typedef struct \{(.*?)\} TsBuf;", text, re.S)
    fields = re.findall(r"^\s*([\w\s\*]+?)\s*(\w+);", struct.group(1), re.M) if struct else []
    typedefs = {
        name: (ret, " ".join(args.split()))
        for ret, name, args in re.findall(r"typedef (\w+) \(\*(\w+)\)\(([^)]*)\);", text)
    }
    return constants, functions, fields, typedefs


def parse_dart(text: str):
    constants = dict(re.findall(r"^const int (TS_\w+) = (\d+);$", text, re.M))
    functions = {}
    pattern = re.compile(
        r"@ffi\.Native<(.+?) Function\((.*?)\)>\(\)\s*external (\w+) (ts_\w+)\((.*?)\);", re.S
    )
    for native_ret, native_args, dart_ret, name, dart_params in pattern.findall(text):
        natives = split_args(native_args)
        params = []
        for dart_param in split_args(dart_params):
            m = re.match(r"(.*?)\s+(\w+)$", dart_param)
            params.append((m.group(1).strip(), m.group(2)))
        functions[name] = (native_ret.strip(), dart_ret, natives, params)
    struct = re.search(r"final class TsBuf extends ffi\.Struct \{(.*?)\n\}", text, re.S)
    fields = re.findall(r"(@ffi\.\w+\(\)\s*)?external ([\w.<>]+) (\w+);", struct.group(1)) if struct else []
    typedefs = dict(re.findall(r"typedef (Ts\w+Function) = (.+?);", text))
    return constants, functions, fields, typedefs


def main() -> int:
    h_consts, h_funcs, h_fields, h_typedefs = parse_header(HEADER.read_text())
    d_consts, d_funcs, d_fields, d_typedefs = parse_dart(BINDINGS.read_text())
    problems = []

    for name in sorted(set(h_consts) | set(d_consts)):
        if h_consts.get(name) != d_consts.get(name):
            problems.append(f"constant {name}: header {h_consts.get(name)}, Dart {d_consts.get(name)}")

    for name in sorted(set(h_funcs) | set(d_funcs)):
        if name not in d_funcs:
            problems.append(f"function {name} is in the header but not in the Dart bindings")
            continue
        if name not in h_funcs:
            problems.append(f"function {name} is in the Dart bindings but not in the header")
            continue
        (h_native_ret, h_dart_ret), h_params = h_funcs[name]
        d_native_ret, d_dart_ret, d_natives, d_params = d_funcs[name]
        if (h_native_ret, h_dart_ret) != (d_native_ret, d_dart_ret):
            problems.append(f"{name}: returns {h_native_ret}/{h_dart_ret} in the header, {d_native_ret}/{d_dart_ret} in Dart")
        if len(h_params) != len(d_natives) or len(h_params) != len(d_params):
            problems.append(f"{name}: {len(h_params)} arguments in the header, {len(d_natives)} native / {len(d_params)} Dart")
            continue
        for i, (((h_native, h_dart), h_name), d_native, (d_dart, d_name)) in enumerate(zip(h_params, d_natives, d_params)):
            if h_native != d_native:
                problems.append(f"{name} argument {i} ({h_name}): native type {h_native} in the header, {d_native} in Dart")
            if h_dart != d_dart:
                problems.append(f"{name} argument {i} ({h_name}): Dart type should be {h_dart}, is {d_dart}")
            if h_name != d_name:
                problems.append(f"{name} argument {i}: named {h_name} in the header, {d_name} in Dart")

    expected_fields = [(native_of(t)[0], n) for t, n in h_fields]
    actual_fields = [(t, n) for _, t, n in d_fields]
    if [n for _, n in expected_fields] != [n for _, n in actual_fields]:
        problems.append(f"TsBuf fields: header {expected_fields}, Dart {actual_fields}")
    else:
        for (h_type, h_name), (d_type, _), (annotation, _, _) in zip(expected_fields, actual_fields, d_fields):
            dart_native = annotation.strip()[1:-2].strip() if annotation else d_type
            if h_type not in (d_type, dart_native):
                problems.append(f"TsBuf.{h_name}: {h_type} in the header, {dart_native or d_type} in Dart")

    for name, (ret, args) in h_typedefs.items():
        native_ret = native_of(ret)[0]
        natives = [native_of(re.match(r"(.*?)(\w+)$", a).group(1))[0] for a in split_args(args)]
        d = d_typedefs.get(f"{name}Function")
        want = f"{native_ret} Function({', '.join(natives)})"
        got = None
        if d:
            head, _, params = d.partition(" Function(")
            params = re.sub(r"(ffi\.[\w<>.]+) \w+", r"\1", params.rstrip(")"))
            got = f"{head} Function({params})"
        if got != want:
            problems.append(f"typedef {name}: header {want}, Dart {got}")

    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} difference(s) between {HEADER.name} and {BINDINGS.name}")
        return 1
    print(f"bindings match the header: {len(h_funcs)} functions, {len(h_consts)} constants, TsBuf, {len(h_typedefs)} callbacks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
