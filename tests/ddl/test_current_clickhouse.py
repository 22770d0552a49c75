"""Every ClickHouse migration and BI view query must also run on a current ClickHouse.

The local server is Debian's ClickHouse 18.16; production runs current releases. chdb
(PyPI `chdb-core`) embeds a current ClickHouse in-process, so this applies every
migration in schemas/clickhouse exactly as `rollcall migrate` splits and substitutes
them, then runs every documented view query (docs/bi-views.md) against it.
"""
import pathlib
import re
import tempfile

import chdb
from chdb import session as chs

ROOT = pathlib.Path(__file__).resolve().parents[2]
MIGRATIONS = sorted((ROOT / "schemas" / "clickhouse").glob("[0-9][0-9][0-9][0-9]_*.sql"))
DB = "rollcall"


def split_statements(sql: str) -> list[str]:
    """Mirror of rollcall_clickhouse::migrate::split_statements."""
    out, cur = [], []
    for line in sql.splitlines():
        t = line.strip()
        if t.startswith("--") or (not t and not "".join(cur).strip()):
            continue
        cur.append(line)
        if t.endswith(";"):
            stmt = "\n".join(cur).strip().rstrip(";").strip()
            if stmt:
                out.append(stmt)
            cur = []
    if "".join(cur).strip():
        out.append("\n".join(cur).strip())
    return out


def documented_queries() -> list[str]:
    doc = ROOT / "docs" / "bi-views.md"
    if not doc.exists():
        return []
    return [q.strip().rstrip(";") for q in re.findall(r"```sql\n(.*?)```", doc.read_text(), re.S)]


def test_server_is_a_current_release():
    major = int(chdb.query("SELECT version()", "CSV").bytes().decode().strip().strip('"').split(".")[0])
    assert major >= 24, major


def test_every_migration_applies_on_current_clickhouse():
    assert MIGRATIONS, "no migrations found"
    with tempfile.TemporaryDirectory() as d:
        s = chs.Session(d)
        s.query(f"CREATE DATABASE IF NOT EXISTS {DB}")
        for m in MIGRATIONS:
            for stmt in split_statements(m.read_text()):
                s.query(stmt.replace("${database}", DB))
        # twice: every statement must be idempotent (IF NOT EXISTS / IF EXISTS)
        for m in MIGRATIONS:
            for stmt in split_statements(m.read_text()):
                s.query(stmt.replace("${database}", DB))
        tables = s.query(f"SELECT name FROM system.tables WHERE database = '{DB}'", "CSV").bytes().decode()
        assert "student_days" in tables
        for q in documented_queries():
            s.query(q)  # raises on any error
        s.close()
