"""Runs SQL on chDB (the current ClickHouse engine, in-process) for pkg/testenv.

Reads one JSON object from stdin: {"setup": [sql, ...], "queries": [sql, ...]}.
Every setup statement must succeed (the first failure ends the run with exit
status 2 and the error on stderr). Every query runs, failures included, and
the answer on stdout is one JSON object: {"version": ..., "results": [...]},
one result per query: {"columns": [{"name", "type"}], "rows": [[...]]} or
{"error": "..."}. The session lives in a temporary folder removed at exit.
"""
import json
import sys
import tempfile


from chdb import session


def main():
    req = json.load(sys.stdin)
    with tempfile.TemporaryDirectory(prefix="sluice-chdb-") as path:
        s = session.Session(path)
        try:
            for sql in req.get("setup", []):
                try:
                    s.query(sql)
                except Exception as e:  # chDB raises its own error types
                    print("chdb: setup statement failed: %s\n%s" % (e, sql), file=sys.stderr)
                    return 2
            version = json.loads(s.query("SELECT version() AS v", "JSON").bytes())["data"][0]["v"]
            results = []
            for sql in req.get("queries", []):
                try:
                    out = s.query(sql, "JSONCompact").bytes()
                    doc = json.loads(out) if out.strip() else {"meta": [], "data": []}
                    results.append({"columns": doc["meta"], "rows": doc["data"]})
                except Exception as e:
                    results.append({"error": str(e)})
        finally:
            s.close()
    json.dump({"version": version, "results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
