#!/usr/bin/env python3
"""Runs SQL on current ClickHouse (chDB, in-process) for the board's unit test.

Reads {"statements": [sql, ...], "queries": {name: sql}} as JSON on stdin, runs the
statements in order in a fresh session, then each query, and prints {name: [rows...]} as JSON
(rows as JSONEachRow objects). Exits 1 naming the failing statement or query.
Needs `pip install chdb-core` (tests/run.sh installs it).
"""
import json
import sys
import tempfile

try:
    from chdb import session
except ImportError:
    sys.exit("chDB is missing: run `python3 -m pip install chdb-core` (tests/run.sh does)")

spec = json.load(sys.stdin)
with tempfile.TemporaryDirectory() as d:
    s = session.Session(d)
    for sql in spec["statements"]:
        try:
            s.query(sql)
        except Exception as e:  # noqa: BLE001 - report and stop
            sys.exit(f"current ClickHouse (chDB) refused a statement: {e}\n{sql}")
    out = {}
    for name, sql in spec["queries"].items():
        try:
            r = s.query(sql, "JSONEachRow")
        except Exception as e:  # noqa: BLE001
            sys.exit(f"current ClickHouse (chDB) refused query {name}: {e}\n{sql}")
        text = r.bytes().decode() if hasattr(r, "bytes") else str(r)
        out[name] = [json.loads(line) for line in text.splitlines() if line.strip()]
    print(json.dumps(out))
