"""Docstring coverage of public functions and classes, per package, from the source (ast only).

    python tools/docstring_coverage.py                       every package under platform/shallowpi
    python tools/docstring_coverage.py hardware data train   only these packages
    python tools/docstring_coverage.py --missing data        also list what has no docstring

What counts as public (one entry each):
- a module-level function or class whose name does not start with "_";
- a method of such a class whose name does not start with "_" (so dunders such as
  `__init__` and `__post_init__` are not counted: the class docstring covers them);
- not counted: `@x.setter` / `@x.deleter` (the getter carries the docstring), `@overload`
  stubs, functions nested inside functions, classes nested inside classes.

What counts as documented: a docstring (any non-empty string as the first statement). A method
without one also counts as documented when a base class of its class, found by name among
the scanned files, defines a method of that name with a docstring (an override of a documented
Protocol/ABC method inherits its contract). Modules themselves are not counted.

A package is a direct subfolder of platform/shallowpi; top-level modules count as "(top)".
The script imports nothing from the project, so it runs without the dependencies installed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "platform" / "shallowpi"


@dataclass
class Entry:
    """One public function, class or method: where it is and whether it has a docstring."""

    package: str
    qualname: str
    path: Path
    line: int
    documented: bool
    class_name: str | None = None  # set for methods, to resolve inherited docstrings
    bases: list[str] = field(default_factory=list)  # set for classes


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    names = []
    for dec in node.decorator_list:
        if isinstance(dec, ast.Attribute):
            names.append(dec.attr)
        elif isinstance(dec, ast.Name):
            names.append(dec.id)
    return names


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Subscript):  # Generic[T], Protocol[T]
        node = node.value
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else "(top)"


def scan_file(path: Path) -> list[Entry]:
    """The public entries of one source file, in source order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path)
    entries: list[Entry] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name.startswith("_") or "overload" in _decorator_names(node):
                continue
            entries.append(
                Entry(package, node.name, path, node.lineno, ast.get_docstring(node) is not None)
            )
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            bases = [b for b in (_base_name(x) for x in node.bases) if b]
            entries.append(
                Entry(
                    package, node.name, path, node.lineno,
                    ast.get_docstring(node) is not None, bases=bases,
                )
            )
            for item in node.body:
                if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                decorators = _decorator_names(item)
                if item.name.startswith("_") or {"setter", "deleter", "overload"} & set(
                    decorators
                ):
                    continue
                entries.append(
                    Entry(
                        package, f"{node.name}.{item.name}", path, item.lineno,
                        ast.get_docstring(item) is not None, class_name=node.name,
                    )
                )
    return entries


def resolve_inherited(entries: list[Entry]) -> None:
    """Mark undocumented methods documented when a scanned base class documents that name."""
    bases = {e.qualname: e.bases for e in entries if e.class_name is None and e.bases}
    documented = {e.qualname for e in entries if e.class_name is not None and e.documented}
    for entry in entries:
        if entry.class_name is None or entry.documented:
            continue
        method = entry.qualname.split(".", 1)[1]
        todo, seen = list(bases.get(entry.class_name, [])), set()
        while todo:
            base = todo.pop()
            if base in seen:
                continue
            seen.add(base)
            if f"{base}.{method}" in documented:
                entry.documented = True
                break
            todo.extend(bases.get(base, []))


def main(argv: list[str] | None = None) -> int:
    """Print one coverage row per package and the total; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", help="package folder names (default: all)")
    parser.add_argument("--missing", action="store_true", help="list undocumented entries")
    args = parser.parse_args(argv)

    # Scan everything so inherited docstrings resolve across packages, then filter.
    entries: list[Entry] = []
    for path in sorted(ROOT.rglob("*.py")):
        entries.extend(scan_file(path))
    resolve_inherited(entries)
    if args.packages:
        unknown = set(args.packages) - {e.package for e in entries}
        if unknown:
            print(f"unknown package(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        entries = [e for e in entries if e.package in args.packages]

    packages = sorted({e.package for e in entries})
    print(f"{'package':<12} {'public':>7} {'documented':>11} {'coverage':>9}")
    for package in packages:
        rows = [e for e in entries if e.package == package]
        done = sum(e.documented for e in rows)
        print(f"{package:<12} {len(rows):>7} {done:>11} {done / len(rows):>9.0%}")
    done = sum(e.documented for e in entries)
    total = len(entries)
    print(f"{'total':<12} {total:>7} {done:>11} {done / max(total, 1):>9.0%}")
    if args.missing:
        for e in entries:
            if not e.documented:
                print(f"  {e.path.relative_to(ROOT.parents[1])}:{e.line}  {e.qualname}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
