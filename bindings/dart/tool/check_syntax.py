#!/usr/bin/env python3
"""Parses every .dart file of the Dart package (and its example) with the tree-sitter Dart
grammar (PyPI: tree-sitter, tree-sitter-dart) and reports every syntax error with its line.
No Dart SDK is needed: CI runs this where none can be installed. This catches what a parser
catches (unbalanced brackets, a missing semicolon, a mangled declaration), not type errors.

    python3 bindings/dart/tool/check_syntax.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import tree_sitter_dart
from tree_sitter import Language, Node, Parser

PACKAGE = Path(__file__).resolve().parents[1]


def errors(node: Node) -> list[Node]:
    """The ERROR and MISSING nodes under `node`."""
    found, stack = [], [node]
    while stack:
        n = stack.pop()
        if n.is_error or n.is_missing:
            found.append(n)
            continue
        if n.has_error:
            stack.extend(n.children)
    return found


def main() -> int:
    parser = Parser(Language(tree_sitter_dart.language()))
    files = sorted(p for p in PACKAGE.rglob("*.dart") if ".dart_tool" not in p.parts)
    bad = 0
    for path in files:
        source = path.read_bytes()
        tree = parser.parse(source)
        for node in errors(tree.root_node):
            bad += 1
            line = node.start_point[0] + 1
            text = source.splitlines()[node.start_point[0]].decode(errors="replace").strip()
            kind = "missing " + node.type if node.is_missing else "syntax error"
            print(f"{path.relative_to(PACKAGE)}:{line}: {kind}: {text[:100]}")
    if bad:
        print(f"{bad} syntax error(s) in {len(files)} Dart files")
        return 1
    print(f"{len(files)} Dart files parse without errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
