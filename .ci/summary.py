#!/usr/bin/env python3
"""Reads `go test -json` on stdin and prints what a person wants of it: each
package's result line as `go test` prints it, the whole output of every test
that failed, and at the end one line counting the tests (subtests included):
"N passed, N failed, N skipped". Exits 1 if any test or package failed."""
import json
import sys

counts = {"pass": 0, "fail": 0, "skip": 0}
output = {}  # (package, test) -> lines, kept until the test ends
failed = False
for raw in sys.stdin:
    try:
        ev = json.loads(raw)
    except ValueError:
        print(raw, end="")  # a build error, say: not JSON
        continue
    pkg, test, action = ev.get("Package", ""), ev.get("Test"), ev.get("Action")
    key = (pkg, test)
    if action == "output":
        output.setdefault(key, []).append(ev.get("Output", ""))
        continue
    if action in counts and test is not None:
        counts[action] += 1
        lines = output.pop(key, [])
        if action == "fail":
            failed = True
            sys.stdout.write("".join(lines))
        continue
    if action in ("pass", "fail", "skip") and test is None:
        lines = output.pop(key, [])
        if action == "fail":
            failed = True
            sys.stdout.write("".join(lines))
        else:
            # The package's own last line: "ok  pkg 1.2s" or "?  pkg [no test files]".
            tail = [l for l in lines if l.startswith(("ok ", "?"))]
            sys.stdout.write(tail[-1] if tail else f"{action}\t{pkg}\n")
        sys.stdout.flush()
print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
sys.exit(1 if failed or counts["fail"] else 0)
