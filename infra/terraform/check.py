#!/usr/bin/env python3
"""Checks the Terraform without terraform or cloud access (run by infra/check-infra.sh).

Every .tf file must parse (python-hcl2); in every directory: each variable and output has a
description, and each var./local./module./resource/data reference names something declared
there. `terraform validate` and `plan` stay the operator's first step (infra/README.md).
"""
import pathlib
import re
import sys

import hcl2

REF = re.compile(r"(?<![\w.])(var|local|module|data)\.([A-Za-z0-9_-]+)(?:\.([A-Za-z0-9_-]+))?")
RESOURCE_REF = re.compile(r"(?<![\w.\"/])(google_[a-z0-9_]+)\.([a-z0-9_]+)\b")


def strip_strings_and_comments(text: str) -> str:
    """Drops comments; keeps ${...} interpolations inside strings, drops other string text."""
    text = re.sub(r"(?m)#.*$", "", text)
    out, i = [], 0
    while i < len(text):
        if text[i] == '"':
            j, depth = i + 1, 0
            while j < len(text):
                if text.startswith("${", j):
                    depth += 1
                    start = j + 2
                    k = start
                    while k < len(text) and depth:
                        if text[k] == "{":
                            depth += 1
                        elif text[k] == "}":
                            depth -= 1
                        k += 1
                    out.append(" " + text[start:k - 1] + " ")
                    j = k
                    continue
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == '"':
                    break
                j += 1
            i = j + 1
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def check_dir(directory: pathlib.Path) -> list[str]:
    problems = []
    files = sorted(directory.glob("*.tf"))
    declared = {"var": set(), "local": set(), "module": set(), "data": set(), "resource": set()}
    bodies = []
    for path in files:
        text = path.read_text()
        if "\t" in text:
            problems.append(f"{path}: tabs (terraform fmt uses two spaces)")
        if not text.endswith("\n"):
            problems.append(f"{path}: no final newline")
        try:
            parsed = hcl2.loads(text)
        except Exception as err:  # noqa: BLE001 - report any parse failure
            problems.append(f"{path}: does not parse: {err}")
            continue
        bodies.append(strip_strings_and_comments(text))
        for block in parsed.get("variable", []):
            for name, spec in block.items():
                declared["var"].add(name.strip('"'))
                if not str(spec.get("description", "")).strip():
                    problems.append(f"{path}: variable {name} has no description")
        for block in parsed.get("output", []):
            for name, spec in block.items():
                if not str(spec.get("description", "")).strip():
                    problems.append(f"{path}: output {name} has no description")
        for block in parsed.get("locals", []):
            declared["local"].update(k.strip('"') for k in block)
        for block in parsed.get("module", []):
            declared["module"].update(k.strip('"') for k in block)
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name in named:
                    declared["resource"].add((kind.strip('"'), name.strip('"')))
        for block in parsed.get("data", []):
            for kind, named in block.items():
                for name in named:
                    declared["data"].add((kind.strip('"'), name.strip('"')))
    code = "\n".join(bodies)
    dynamic_blocks = set(re.findall(r'dynamic\s+"?([a-z_]+)"?', code))
    for kind, name, attr in REF.findall(code):
        if kind == "data":
            if (name, attr) not in declared["data"]:
                problems.append(f"{directory}: data.{name}.{attr} is not declared")
        elif name not in declared[kind]:
            problems.append(f"{directory}: {kind}.{name} is not declared")
    for kind, name in RESOURCE_REF.findall(code):
        if (kind, name) not in declared["resource"] and name not in dynamic_blocks:
            problems.append(f"{directory}: {kind}.{name} is not declared")
    return problems


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    directories = sorted({p.parent for p in root.rglob("*.tf")})
    if not directories:
        print(f"no .tf files under {root}", file=sys.stderr)
        return 1
    problems = [p for d in directories for p in check_dir(d)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"terraform: {len(directories)} directories parse and are consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
