"""Every ClickHouse migration and BI view query must also run on a current ClickHouse.

The local server is Debian's ClickHouse 18.16; production runs current releases. chdb
(PyPI `chdb-core`) embeds a current ClickHouse in-process. The SQL applied here is
exactly what `rollcall migrate` runs: the Rust code renders it (the BI views from the
policy, `${database}` substituted, the fingerprint row) and prints it with
`rollcall migrate --print-sql [--policy-file F]`; nothing is rendered in Python. It is
applied for the default policy and for a policy where every view setting differs, twice
(idempotent), then every documented view query (docs/bi-views.md) runs, and a few rows
check that the views judge by the rendered policy.
"""
import os
import pathlib
import re
import subprocess
import tempfile

import chdb
import pytest
from chdb import session as chs

ROOT = pathlib.Path(__file__).resolve().parents[2]
DB = "rollcall"

OTHER_POLICY = """\
chronic_threshold = 0.15
min_enrolled_days = 20
publication_threshold = 5
suppress_zero_counts = true

[tiers]
at_risk = 0.07
moderate_chronic = 0.15
severe_chronic = 0.25
"""


def rendered_sql(policy_file: pathlib.Path | None) -> str:
    """The statements `rollcall migrate` would run on a fresh database, from the CLI."""
    cmd = ["cargo", "run", "--locked", "-q", "-p", "rollcall", "--", "migrate", "--print-sql"]
    if policy_file is not None:
        cmd += ["--policy-file", str(policy_file)]
    env = dict(os.environ, ROLLCALL_CLICKHOUSE__DATABASE=DB)
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return out.stdout


def split_statements(sql: str) -> list[str]:
    """`--print-sql` ends each statement with `;` at the end of a line; `--` lines are
    labels. (Splitting only: the text is the Rust renderer's.)"""
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


@pytest.fixture(scope="module")
def policy_file():
    with tempfile.TemporaryDirectory() as d:
        f = pathlib.Path(d) / "policy.toml"
        f.write_text(OTHER_POLICY)
        yield f


@pytest.mark.parametrize("which", ["default", "other"])
def test_every_migration_applies_on_current_clickhouse(which, policy_file):
    statements = split_statements(rendered_sql(None if which == "default" else policy_file))
    assert any("CREATE VIEW rollcall.district_chronic_absence" in s for s in statements)
    assert not any("${" in s for s in statements), "every placeholder is rendered"
    with tempfile.TemporaryDirectory() as d:
        s = chs.Session(d)
        for stmt in statements:
            s.query(stmt)
        # twice: every statement must be idempotent (IF NOT EXISTS / IF EXISTS)
        for stmt in statements:
            s.query(stmt)
        tables = s.query(f"SELECT name FROM system.tables WHERE database = '{DB}'", "CSV").bytes().decode()
        assert "student_days" in tables and "view_policy" in tables
        for q in documented_queries():
            s.query(q)  # raises on any error

        # The views judge by the rendered policy: 20 days, 3 absent = 15%.
        s.query(
            f"INSERT INTO {DB}.student_metrics (school_year, district_id, school_id, student_id, "
            "grade_level, as_of_date, days_enrolled, absent_milli, version, deleted) VALUES "
            "(2024, 'd', 's', 'a', 'First grade', '2024-05-31', 20, 3000, 1, 0), "
            "(2024, 'd', 's', 'b', 'First grade', '2024-05-31', 20, 2999, 1, 0), "
            "(2024, 'd', 's', 'c', 'First grade', '2024-05-31', 19, 19000, 1, 0)"
        )
        got = s.query(
            f"SELECT student_id, meets_min_enrollment, is_chronically_absent, toString(tier) "
            f"FROM {DB}.student_attendance ORDER BY student_id",
            "CSV",
        ).bytes().decode().split()
        if which == "default":
            assert got == ['"a",1,1,"moderate_chronic"', '"b",1,1,"moderate_chronic"', '"c",1,1,"severe_chronic"'], got
        else:
            assert got == ['"a",1,1,"moderate_chronic"', '"b",1,0,"at_risk"', '"c",0,0,"severe_chronic"'], got
        # suppression: 3 students judged (default, threshold 10) or 2 (other, threshold 5):
        # suppressed either way; a zero count is suppressed only under the other policy.
        supp = s.query(f"SELECT suppressed FROM {DB}.school_chronic_absence", "CSV").bytes().decode().strip()
        assert supp == "1", supp
        fp = s.query(f"SELECT count() FROM {DB}.view_policy", "CSV").bytes().decode().strip()
        assert fp == "2", fp  # one fingerprint row per run of the statements
        s.close()
