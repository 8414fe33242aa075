#!/usr/bin/env python3
"""Runs SQL on current ClickHouse through chDB (pip package `chdb-core`), for the version test
(tests/it/clickhouse_versions.rs), which runs the same SQL on the Debian 18.16 server.

  python3 tests/clickhouse_versions.py version
      prints chDB's ClickHouse version
  python3 tests/clickhouse_versions.py run < job.json
      job: {"statements": [sql, ...], "queries": [[name, sql], ...]}
      runs every statement in order, then every query (TabSeparated), in a fresh
      temporary chDB session; prints {"results": {name: tsv}} as JSON, or exits 1 with
      the failing statement and ClickHouse's error on stderr.
"""
import json
import sys
import tempfile

try:
    from chdb.session import Session
except ImportError:
    sys.exit("chdb is not installed: run `python3 -m pip install chdb-core` (deploy/local/stack.sh install does)")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("version", "run"):
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory(prefix="feedback-chdb-") as path:
        s = Session(path)
        if sys.argv[1] == "version":
            print(str(s.query("SELECT version()", "TSV")).strip())
            return
        job = json.load(sys.stdin)
        for sql in job["statements"]:
            try:
                s.query(sql)
            except Exception as e:  # chDB raises its own error type with the server text
                sys.exit(f"chDB failed on statement:\n{sql}\nerror: {e}")
        results = {}
        for name, sql in job["queries"]:
            try:
                results[name] = str(s.query(sql, "TSV"))
            except Exception as e:
                sys.exit(f"chDB failed on query {name}:\n{sql}\nerror: {e}")
        json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
