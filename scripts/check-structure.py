#!/usr/bin/env python3
"""Structure rules of the workspace (STYLE.md, issue #14), checked by `make lint`:
no source file under */src over 800 lines, no function over 120 lines, and no
import cycle between the top-level modules of a crate (`crate::a` used in b and
`crate::b` in a). Text-level: braces are counted with strings and comments
stripped, which is exact enough for rustfmt-formatted code."""
import glob
import os
import re
import sys

MAX_FILE_LINES = 800
MAX_FN_LINES = 120
FN = re.compile(r'\s*(pub(\([a-z]+\))?\s+)?(async\s+)?(const\s+)?fn\s+\w+')


def code(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return re.sub(r"//.*", "", line)


def sources(root):
    for f in sorted(glob.glob(os.path.join(root, "*/src/**/*.rs"), recursive=True)):
        if "/target/" not in f and not f.startswith(os.path.join(root, "fuzz")):
            yield f


def long_functions(path, lines):
    for i, line in enumerate(lines):
        if not FN.match(line) or line.rstrip().endswith(";"):
            continue
        depth, started = 0, False
        for j in range(i, len(lines)):
            c = code(lines[j])
            depth += c.count("{") - c.count("}")
            started = started or "{" in c
            if started and depth <= 0:
                break
        if j - i + 1 > MAX_FN_LINES:
            yield f"{path}:{i + 1}: function of {j - i + 1} lines (max {MAX_FN_LINES})"


def cycles(root):
    for src in sorted(glob.glob(os.path.join(root, "*/src"))):
        deps = {}
        for f in glob.glob(src + "/**/*.rs", recursive=True):
            top = os.path.relpath(f, src)[:-3].split("/")[0]
            if top in ("lib", "main", "bin", "mod"):
                continue
            text = "\n".join(code(l) for l in open(f).read().split("\n"))
            used = set(re.findall(r"crate::(\w+)", text))
            for group in re.findall(r"crate::\{([^}]*)\}", text):
                used |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
            deps.setdefault(top, set()).update(u for u in used if u != top)
        seen = set()

        def walk(node, stack):
            for dep in deps.get(node, ()):
                if dep in stack:
                    cycle = stack[stack.index(dep):] + [dep]
                    key = frozenset(cycle)
                    if key not in seen:
                        seen.add(key)
                        yield f"{src}: import cycle {' -> '.join(cycle)}"
                elif dep in deps:
                    yield from walk(dep, stack + [dep])

        for module in sorted(deps):
            yield from walk(module, [module])


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    problems = []
    for path in sources(root):
        lines = open(path).read().split("\n")
        if len(lines) > MAX_FILE_LINES:
            problems.append(f"{path}: {len(lines)} lines (max {MAX_FILE_LINES}); split it by concern")
        problems.extend(long_functions(path, lines))
    problems.extend(cycles(root))
    for problem in problems:
        print(f"check-structure: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("check-structure: ok (files, functions, module imports)")


if __name__ == "__main__":
    main()
