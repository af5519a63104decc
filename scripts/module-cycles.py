#!/usr/bin/env python3
"""Fails when the box's top-level modules import each other in a cycle.

Data flows one way through src/ (ingest -> clip -> delivery, docs/design.md): a module may use
the ones upstream of it, never one downstream. This reads every `crate::<module>` path outside
test code and reports any cycle between top-level modules (the crates of the workspace are
held apart by Cargo itself).
"""
import glob
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
uses = {}
for path in glob.glob(os.path.join(root, "**", "*.rs"), recursive=True):
    relative = os.path.relpath(path, root)
    if relative in ("lib.rs", "main.rs") or relative.startswith("cli" + os.sep):
        continue
    module = relative.split(os.sep)[0].removesuffix(".rs")
    with open(path, encoding="utf-8") as file:
        text = file.read()
    # Test modules may reach anywhere; everything else is held to the rule.
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    found = set(re.findall(r"\bcrate::([a-z_]+)", text))
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
        found.update(re.findall(r"(?:^|,)\s*([a-z_]+)", group))
    # In a top-level file (src/x.rs) `super::` is the crate root.
    if os.sep not in relative:
        found.update(re.findall(r"\bsuper::([a-z_]+)", text))
    found -= {module, "self", "super"}
    uses.setdefault(module, set()).update(found)

cycles = set()


def visit(module, path):
    for used in sorted(uses.get(module, ())):
        if used in path:
            cycle = path[path.index(used):]
            start = cycle.index(min(cycle))
            cycles.add(tuple(cycle[start:] + cycle[:start]))
        else:
            visit(used, path + [used])


for module in sorted(uses):
    visit(module, [module])

if cycles:
    for cycle in sorted(cycles):
        print("module-cycles: " + " -> ".join(cycle + (cycle[0],)), file=sys.stderr)
    sys.exit(1)
print(f"module-cycles: {len(uses)} modules, no cycle")
