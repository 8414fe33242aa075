#!/usr/bin/env python3
"""Proves the Grafana dashboards' ClickHouse queries (deploy/grafana/dashboards/*.json).

Every ClickHouse query of every dashboard (panel targets and template variables) is expanded
the way Grafana and the grafana-clickhouse-datasource plugin expand it (template variables
first, then the plugin's macros, pkg/macros/macros.go), then run
  * on the test stack's ClickHouse (Debian's 18.16; schema by `feedback migrate`), and
  * on current ClickHouse through chDB (schema: `feedback migrate --print-plan <chDB version>`),
against the same seeded rows, and each result is compared with exact rows computed here, in
Python, from the seed (the metric definitions written out independently of the views).

Environment: FEEDBACK_TEST_CLICKHOUSE_URL (http://127.0.0.1:8123), FEEDBACK_BIN (the built
`feedback` binary, default target/debug/feedback).
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CH_URL = os.environ.get("FEEDBACK_TEST_CLICKHOUSE_URL", "http://127.0.0.1:8123").rstrip("/")
FEEDBACK_BIN = os.environ.get("FEEDBACK_BIN", os.path.join(ROOT, "target", "debug", "feedback"))
DASHBOARDS = os.path.join(ROOT, "deploy", "grafana", "dashboards")
CH_UID = "feedback-clickhouse"

failures = []


def fail(msg):
    failures.append(msg)
    print(f"not ok - {msg}")


# --- the schema, from the one source the binary uses -------------------------------------

def migration_statements(db, version):
    """What `feedback migrate` runs on a fresh database of a server of `version`, from the
    binary itself (`migrate --print-plan`), so this test never parses Rust."""
    env = dict(os.environ, FEEDBACK_CLICKHOUSE_DATABASE=db, FEEDBACK_LOG="warn")
    r = subprocess.run([FEEDBACK_BIN, "migrate", "--print-plan", version], env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"dashboards_test: `feedback migrate --print-plan {version}` failed: {r.stdout}{r.stderr}")
    return json.loads(r.stdout)


def chdb_version():
    from chdb import session
    import tempfile
    with tempfile.TemporaryDirectory(prefix="dashboards_chdb_v_") as d:
        return str(session.Session(d).query("SELECT version()", "CSV")).strip().strip('"')


# --- the two engines ----------------------------------------------------------------------

class Server:
    """ClickHouse over HTTP, database chosen per query like the plugin's defaultDatabase."""
    name = "clickhouse-18.16"

    def __init__(self, db):
        self.db = db

    def run(self, sql, database=None, fmt=None):
        params = {"output_format_json_quote_64bit_integers": "0"}
        if database:
            params["database"] = database
        body = sql + (f" FORMAT {fmt}" if fmt else "")
        req = urllib.request.Request(CH_URL + "/?" + urllib.parse.urlencode(params), data=body.encode())
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode().strip()) from None

    def query(self, sql):
        return json.loads(self.run(sql, self.db, "JSONCompact"))["data"]


class ChDB:
    name = "chdb-" 

    def __init__(self, db, stmts):
        from chdb import session
        import tempfile
        self.tmp = tempfile.mkdtemp(prefix="dashboards_chdb_")
        self.s = session.Session(self.tmp)
        self.db = db
        self.name = "chdb-" + self.s.query("SELECT version()", "CSV").bytes().decode().strip().strip('"')
        self.run(f"CREATE DATABASE IF NOT EXISTS {db}")
        for st in stmts:
            self.run(st)

    def run(self, sql, fmt="CSV"):
        r = self.s.query(sql, fmt)
        if hasattr(r, "has_error") and r.has_error():
            raise RuntimeError(r.error_message())
        return r.bytes().decode()

    def query(self, sql):
        self.run(f"USE {self.db}")
        out = self.run(sql + " SETTINGS output_format_json_quote_64bit_integers = 0", "JSONCompact")
        return json.loads(out)["data"]

    def close(self):
        import shutil
        self.s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- seed: what customers said, at fixed offsets from a pinned "now" ---------------------

NOW = int(time.time())
MINUTE = NOW - NOW % 60
# Offsets keep every row far from the window edges (which move each minute): the test may
# take a few minutes without a row changing window.
AGO = {"10m": 600, "20m": 1200, "90m": 5400, "5h": 18000, "30h": 108000}

# id, ago, team, service, channel, kind, product
INTERACTIONS = [
    ("I1", "10m", "payments", "checkout-api", "web", "order", "payments-card"),
    ("I2", "20m", "payments", "checkout-api", "app", "order", "payments-card"),
    ("I3", "90m", "payments", "support-desk", "phone", "support_ticket", "payments-wallet"),
    ("I4", "10m", "delivery", "parcel-tracker", "web", "delivery", "parcels"),
    ("I5", "5h", "delivery", "parcel-tracker", "phone", "delivery", "parcels"),
    ("I6", "30h", "delivery", "store-pos", "store", "visit", None),
    ("I7", "10m", "unowned", "social-listener", "social", "other", None),
    ("I8", "90m", "unowned", "mailbox", "email", "other", None),
]
# id, ago, team, metric, score, channel, product, interaction_id, interaction_kind, comment
RATINGS = [
    ("R01", "10m", "payments", "csat", 5, "web", "payments-card", "I1", "order", None),
    ("R02", "10m", "payments", "csat", 2, "web", "payments-card", "I1", "order", "payment failed twice"),
    ("R03", "20m", "payments", "csat", 4, "app", "payments-card", "I2", "order", "ok"),
    ("R04", "20m", "payments", "csat", 1, "app", "payments-card", "I2", "order", "charged twice, no refund"),
    ("R05", "20m", "payments", "nps", 10, "app", "payments-card", "I2", "order", None),
    ("R06", "20m", "payments", "nps", 3, "app", "payments-card", "I2", "order", "never again"),
    ("R07", "20m", "payments", "nps", 8, "web", "payments-card", "I1", "order", None),
    ("R08", "10m", "payments", "ces", 2, "web", "payments-card", "I1", "order", "took ages"),
    ("R09", "10m", "payments", "ces", 6, "web", "payments-card", "I1", "order", "easy"),
    ("R10", "90m", "payments", "csat", 5, "phone", "payments-wallet", "I3", "support_ticket", None),
    ("R11", "90m", "payments", "csat", 3, "phone", "payments-wallet", "I3", "support_ticket", "meh"),
    ("R12", "90m", "payments", "nps", 9, "phone", "payments-wallet", "I3", "support_ticket", None),
    ("R13", "30h", "payments", "csat", 2, "phone", "payments-wallet", None, None, "old complaint"),
    ("R14", "30h", "payments", "csat", 5, "web", "payments-card", None, None, None),
    ("D01", "10m", "delivery", "csat", 4, "web", "parcels", "I4", "delivery", None),
    ("D02", "10m", "delivery", "csat", 4, "web", "parcels", "I4", "delivery", None),
    ("D03", "5h", "delivery", "csat", 1, "phone", "parcels", "I5", "delivery", "late again"),
    ("D04", "5h", "delivery", "nps", 0, "phone", "parcels", "I5", "delivery", "terrible"),
    ("D05", "30h", "delivery", "csat", 5, "store", None, "I6", "visit", None),
    ("D06", "30h", "delivery", "csat", 2, "store", None, "I6", "visit", "rude staff"),
    ("D07", "30h", "delivery", "ces", 7, "store", None, "I6", "visit", None),
    ("U01", "10m", "unowned", "csat", 3, "social", None, "I7", "other", "who handles this?"),
    ("U02", "90m", "unowned", "nps", 10, "email", None, "I8", "other", None),
]


def q(v):
    return "NULL" if v is None else "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def seed_sql(db):
    ins = []
    for (iid, ago, team, service, channel, kind, product) in INTERACTIONS:
        t = MINUTE - AGO[ago] + 7
        ins.append(f"({q(iid)}, toDateTime({t}), {t * 1000}, {q(service)}, {q(channel)}, {q(kind)}, 'c-1', {q(product)}, "
                   f"NULL, NULL, NULL, '{{}}', {q(team)}, 'claim', 'f.toml', 0, 'v1', 'feedback.interactions.v1', 0, 0, {t * 1000})")
    rat = []
    for (rid, ago, team, metric, score, channel, product, iid, ikind, comment) in RATINGS:
        t = MINUTE - AGO[ago] + 11
        rat.append(f"({q(rid)}, toDateTime({t}), {t * 1000}, {q(iid)}, {q(metric)}, {score}, {q(comment)}, 'survey', "
                   f"{q(channel)}, 'c-1', {q(product)}, NULL, '{{}}', {q(team)}, 'interaction', NULL, NULL, 'v1', "
                   f"{1 if iid is None else 0}, {q(ikind)}, 'feedback.ratings.v1', 0, 0, {t * 1000})")
    return [
        f"INSERT INTO {db}.interactions (interaction_id, occurred_at, occurred_at_ms, service, channel, kind, customer_ref, "
        "product, region, agent_id, handling_team, attributes, team, attribution, claim_file, claim_index, ownership_version, "
        "source_topic, source_partition, source_offset, attributed_at_ms) VALUES " + ", ".join(ins),
        f"INSERT INTO {db}.ratings (rating_id, occurred_at, occurred_at_ms, interaction_id, metric, score, comment, service, "
        "channel, customer_ref, product, region, attributes, team, attribution, claim_file, claim_index, ownership_version, "
        "orphan, interaction_kind, source_topic, source_partition, source_offset, attributed_at_ms) VALUES " + ", ".join(rat),
    ]


# --- expected results, from the seed ------------------------------------------------------

FROM, TO = NOW - 6 * 3600, NOW  # the dashboards' default range, now-6h .. now
# The dashboards' defaults first (every panel must have rows there), then other choices of
# the variables (other team, period and grain), where a panel may be empty.
VARIABLE_SETS = [
    {"team": "payments", "period": "24h", "grain": "hour"},
    {"team": "delivery", "period": "1h", "grain": "minute"},
    {"team": "delivery", "period": "7d", "grain": "day"},
    {"team": "unowned", "period": "1h", "grain": "hour"},
]
VARS = dict(VARIABLE_SETS[0])


def value(metric, scores):
    n = len(scores)
    if metric == "csat":
        return round(100 * sum(s >= 4 for s in scores) / n, 4)
    if metric == "nps":
        return round(100 * (sum(s >= 9 for s in scores) - sum(s <= 6 for s in scores)) / n, 4)
    return round(sum(scores) / n, 4)


def dissatisfied(metric, s):
    return s <= 2 if metric == "csat" else s <= 6 if metric == "nps" else s <= 3


def in_window(ago, window):
    age = AGO[ago]  # every seeded row is in its minute's first seconds, NOW - age within a minute
    span = {"1h": 3600, "24h": 86400, "7d": 604800}[window.split("_")[1]]
    return (age <= span) if window.startswith("last") else (span < age <= 2 * span)


def ts(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def bucket(t, grain):
    return t - t % {"minute": 60, "hour": 3600, "day": 86400}[grain]


def rtime(r):
    return MINUTE - AGO[r[1]] + 11


def itime(i):
    return MINUTE - AGO[i[1]] + 7


def expected():
    team, period, grain = VARS["team"], VARS["period"], VARS["grain"]
    last, prev = f"last_{period}", f"prev_{period}"
    teams = sorted({r[2] for r in RATINGS})
    scores = lambda tm, m, w: [r[4] for r in RATINGS if r[2] == tm and r[3] == m and in_window(r[1], w)]
    e = {}
    e[("Feedback / Team", "var team")] = [[t] for t in teams]
    for m, title in [("csat", "CSAT now"), ("nps", "NPS now"), ("ces", "CES now")]:
        s = scores(team, m, last)
        e[("Feedback / Team", title)] = [[value(m, s), len(s)]] if s else []
    e[("Feedback / Team", "Now and before")] = [
        [m, w, value(m, scores(team, m, w)), len(scores(team, m, w))]
        for m in sorted({"csat", "nps", "ces"}) for w in sorted([last, prev]) if scores(team, m, w)]
    in_range = lambda t: FROM <= t <= TO
    trend = defaultdict(list)
    for r in RATINGS:
        b = bucket(rtime(r), grain)
        if r[2] == team and in_range(b):
            trend[(b, r[3])].append(r[4])
    e[("Feedback / Team", "Trend")] = [[ts(b), m, value(m, s)] for (b, m), s in sorted(trend.items())]
    e[("Feedback / Team", "Responses")] = [[ts(b), m, len(s)] for (b, m), s in sorted(trend.items())]
    vol = defaultdict(int)
    for i in INTERACTIONS:
        b = bucket(itime(i), grain)
        if i[2] == team and in_range(b):
            vol[b] += 1
    e[("Feedback / Team", "Interaction volume")] = [[ts(b), n] for b, n in sorted(vol.items())]
    for d, col in [("channel", 5), ("product", 6), ("kind", 8)]:
        g = defaultdict(list)
        for r in RATINGS:
            if r[2] == team and in_window(r[1], last):
                g[(r[col] or "", r[3])].append(r[4])
        rows = [[dv, m, sum(dissatisfied(m, s) for s in sc), len(sc), value(m, sc)] for (dv, m), sc in g.items()]
        e[("Feedback / Team", f"Dissatisfaction by {d}")] = sorted(rows, key=lambda x: (-x[2], x[0], x[1]))
    inter = {i[0]: i for i in INTERACTIONS}
    low = [r for r in RATINGS if r[2] == team and in_range(rtime(r)) and r[9] and dissatisfied(r[3], r[4])]
    low.sort(key=lambda r: (-rtime(r), r[0]))
    e[("Feedback / Team", "Latest low scores with comments")] = [
        [ts(rtime(r)), r[0], r[3], r[4], r[9], r[7] or "", r[8] or "",
         inter[r[7]][4] if r[7] in inter else "",
         inter[r[7]][3] if r[7] in inter else ""] for r in low][:50]

    all_rows = []
    for tm in teams:
        row = [tm]
        for m in ("csat", "nps", "ces"):
            s = scores(tm, m, last)
            row += [value(m, s) if s else None, len(s)]
        if any(row[2::2]):
            all_rows.append(row)
    e[("Feedback / Organisation", "All teams")] = all_rows
    movers = []
    for tm in teams:
        for m in ("ces", "csat", "nps"):
            a, b = scores(tm, m, last), scores(tm, m, prev)
            if a and b:
                movers.append([tm, m, value(m, a), value(m, b), round(value(m, a) - value(m, b), 4), len(a), len(b)])
    e[("Feedback / Organisation", "Biggest movers")] = sorted(movers, key=lambda x: (-abs(x[4]), x[0], x[1]))[:10]
    ir = [i for i in INTERACTIONS if in_range(bucket(itime(i), "minute"))]
    un = sum(i[2] == "unowned" for i in ir)
    e[("Feedback / Organisation", "Unowned share of interactions")] = [[round(100 * un / len(ir), 2), un, len(ir)]]
    rr = [r for r in RATINGS if in_range(bucket(rtime(r), "minute"))]
    un = sum(r[2] == "unowned" for r in rr)
    e[("Feedback / Organisation", "Unowned share of ratings")] = [[round(100 * un / len(rr), 2), un, len(rr)]]
    per = defaultdict(int)
    for r in RATINGS:
        b = bucket(rtime(r), grain)
        if in_range(b):
            per[(b, r[2])] += 1
    e[("Feedback / Organisation", "Responses per team")] = [[ts(b), tm, n] for (b, tm), n in sorted(per.items())]
    return e


# --- Grafana's expansion ------------------------------------------------------------------

def interpolate(sql, variables):
    """Grafana's template variables: ${name}, ${name:raw}, $name (single-valued)."""
    def sub(m):
        name = m.group(1) or m.group(3)
        fmt = m.group(2)
        if name.startswith("__"):
            return m.group(0)  # a macro, the plugin's business
        if name not in variables:
            raise KeyError(f"variable {name} has no test value")
        if fmt not in (None, "raw"):
            raise KeyError(f"variable format {fmt} is not handled by this test")
        return variables[name]
    return re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", sub, sql)


def expand_macros(sql, frm, to, interval_s):
    """The plugin's macros (grafana/clickhouse-datasource pkg/macros/macros.go)."""
    dt = lambda t: f"toDateTime({t})"
    ms = lambda t: f"fromUnixTimestamp64Milli({t * 1000})"
    date = lambda t: "toDate('" + time.strftime("%Y-%m-%d", time.gmtime(t)) + "')"
    fns = {
        "fromTime": lambda a: dt(frm), "toTime": lambda a: dt(to),
        "fromTime_ms": lambda a: ms(frm), "toTime_ms": lambda a: ms(to),
        "timeFilter": lambda a: f"{a[0]} >= {dt(frm)} AND {a[0]} <= {dt(to)}",
        "timeFilter_ms": lambda a: f"{a[0]} >= {ms(frm)} AND {a[0]} <= {ms(to)}",
        "dateFilter": lambda a: f"{a[0]} >= {date(frm)} AND {a[0]} <= {date(to)}",
        "dateTimeFilter": lambda a: f"({a[0]} >= {date(frm)} AND {a[0]} <= {date(to)}) AND ({a[1]} >= {dt(frm)} AND {a[1]} <= {dt(to)})",
        "timeInterval": lambda a: f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {max(interval_s, 1)} second)",
        "interval_s": lambda a: str(max(interval_s, 1)),
    }
    fns["dt"] = fns["dateTimeFilter"]

    def sub(m):
        name, args = m.group(1), m.group(2)
        if name not in fns:
            raise KeyError(f"unknown macro $__{name}")
        return fns[name]([x.strip() for x in args.split(",")] if args else [])
    out = re.sub(r"\$__(\w+)(?:\(([^)]*)\))?", sub, sql)
    if "$" in out:
        raise KeyError(f"unexpanded $ left in: {out}")
    return out


def ch_queries(dash):
    """(label, sql) for every ClickHouse query of a dashboard: variables, then panel targets."""
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query" and v.get("datasource", {}).get("uid") == CH_UID:
            yield f"var {v['name']}", v["query"]
    for p in dash.get("panels", []):
        for t in p.get("targets", []):
            if t.get("datasource", p.get("datasource", {})).get("uid") == CH_UID:
                yield p["title"], t["rawSql"]


def norm(rows):
    def n(x):
        if isinstance(x, float) and x == int(x):
            return int(x)
        if isinstance(x, float):
            return round(x, 4)
        return x
    return [[n(x) for x in r] for r in rows]


def main():
    db = f"dash_{os.getpid()}_{NOW}"
    server = Server(db)
    env = dict(os.environ, FEEDBACK_CLICKHOUSE_URL=CH_URL, FEEDBACK_CLICKHOUSE_DATABASE=db, FEEDBACK_LOG="warn")
    r = subprocess.run([FEEDBACK_BIN, "migrate"], env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"dashboards_test: `feedback migrate` failed: {r.stdout}{r.stderr}")
    stmts = migration_statements(db, chdb_version())
    chdb = ChDB(db, stmts)
    engines = [server, chdb]
    try:
        # The parsed statements build exactly what `feedback migrate` built.
        listq = f"SELECT name FROM system.tables WHERE database = '{db}' AND name != 'schema_migrations' ORDER BY name"
        a = [x[0] for x in server.query(listq)]
        b = [x[0] for x in chdb.query(listq)]
        if a != b:
            fail(f"schema from `feedback migrate --print-plan` on chDB {b} differs from `feedback migrate`'s {a}")
        for st in seed_sql(db):
            server.run(st)
            chdb.run(st)
        # The panels read the rollups: the server's are rebuilt by `feedback rollups rebuild`,
        # chDB's by the same recomputation printed as one INSERT ... SELECT.
        r = subprocess.run([FEEDBACK_BIN, "rollups", "rebuild"], env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"dashboards_test: `feedback rollups rebuild` failed: {r.stdout}{r.stderr}")
        r = subprocess.run([FEEDBACK_BIN, "rollups", "rebuild", "--print-backfill-sql", "--from", "1970-01-01",
                            "--to", "2100-01-01"], env=env, capture_output=True, text=True, check=True)
        chdb.run(r.stdout)
        for n, variables in enumerate(VARIABLE_SETS):
            VARS.clear()
            VARS.update(variables)
            run_dashboards(engines, must_have_rows=(n == 0))
        run_band_check(engines)
        run_comments_bound_check(engines, db)
    finally:
        chdb.close()
        if not failures:
            server.run(f"DROP DATABASE IF EXISTS {db}")
    if failures:
        print(f"dashboards_test: {len(failures)} failure(s); database {db} kept for inspection", file=sys.stderr)
        sys.exit(1)
    print("dashboards_test: all ClickHouse queries of the dashboards give the expected rows on both engines")


def run_dashboards(engines, must_have_rows):
    exp = expected()
    seen = set()
    for fname in sorted(os.listdir(DASHBOARDS)):
        dash = json.load(open(os.path.join(DASHBOARDS, fname)))
        for label, raw in ch_queries(dash):
            key = (dash["title"], label)
            seen.add(key)
            try:
                sql = expand_macros(interpolate(raw, VARS), FROM, TO, 60)
            except KeyError as e:
                fail(f"{fname} / {label}: {e}")
                continue
            if key not in exp:
                fail(f"{fname} / {label}: no expected result in {__file__}; add one computed from the seed")
                continue
            want = norm(exp[key])
            if not want and must_have_rows:
                fail(f"{fname} / {label}: the seed gives this panel no rows; extend the seed so it proves something")
            for eng in engines:
                try:
                    got = norm(eng.query(sql))
                except RuntimeError as e:
                    fail(f"{fname} / {label} on {eng.name}: {e}\n  query: {sql}")
                    continue
                if got != want:
                    fail(f"{fname} / {label} on {eng.name}:\n  got  {got}\n  want {want}\n  query: {sql}")
                else:
                    print(f"ok - {fname} / {label} on {eng.name} with {VARS}: {len(got)} rows as expected")
    for key in sorted(set(exp) - seen):
        fail(f"expected result for {key} but no dashboard has that query (renamed panel?)")


def run_band_check(engines):
    # The comments panel's dissatisfied band (rating_comments.negative) must be the view's:
    # the standard band counted in the raw rows equals the view's negative count, and the
    # comments flagged negative are exactly the commented ratings in that band.
    band = "multiIf(metric = 'csat', score <= 2, metric = 'nps', score <= 6, score <= 3)"
    for eng in engines:
        a = eng.query(f"SELECT count() FROM ratings WHERE {band}")[0][0]
        b = eng.query("SELECT sum(negative) FROM team_metrics WHERE grain = 'total'")[0][0]
        c = eng.query(f"SELECT count() FROM ratings WHERE {band} AND ifNull(comment, '') != ''")[0][0]
        d = eng.query("SELECT count() FROM rating_comments WHERE negative = 1")[0][0]
        e = eng.query("SELECT count() FROM rating_comments WHERE negative != 1 AND NOT " + band)[0][0]
        f = eng.query("SELECT count() FROM ratings WHERE ifNull(comment, '') != ''")[0][0]
        if a != b:
            fail(f"on {eng.name} the low-score band selects {a} ratings but team_metrics counts {b} negative")
        elif c != d or d + e != f or c == 0:
            fail(f"on {eng.name} rating_comments flags {d} negative and {e} not ({f} comments), the band selects {c}")
        else:
            print(f"ok - low-score band = the view's negative count ({a}) = rating_comments' negative flag ({d} of {f}) on {eng.name}")

def run_comments_bound_check(engines, db):
    # The comments panel reads the newest 50 from the hour they start at, found in the
    # rollups' comment hours: 140 comments, five per time, five minutes apart over more than
    # two hours, so the counts add up across hours and the 50th splits a tie; the rows must
    # be the newest 50 by (time, rating_id) all the same, with and without the counts.
    # Team `bulk` is added after every other check, so the seed above stays what their
    # expectations were computed from.
    dash = json.load(open(os.path.join(DASHBOARDS, "team.json")))
    raw = dict(ch_queries(dash))["Latest low scores with comments"]
    rows = []
    for n in range(140):
        t = NOW - 20000 + (n // 5) * 300
        rows.append((f"B{n:02d}", t, 1 if n % 7 else 4))  # every 7th is satisfied: not shown
    ins = ", ".join(
        f"('{rid}', toDateTime({t}), {t * 1000}, NULL, 'csat', {score}, 'text {rid}', 'survey', 'web', 'c-1', NULL, NULL, "
        f"'{{}}', 'bulk', 'claim', NULL, NULL, 'v1', 0, NULL, 'feedback.ratings.v1', 0, 0, {t * 1000})"
        for rid, t, score in rows)
    st = (f"INSERT INTO {db}.ratings (rating_id, occurred_at, occurred_at_ms, interaction_id, metric, score, comment, service, "
          "channel, customer_ref, product, region, attributes, team, attribution, claim_file, claim_index, ownership_version, "
          "orphan, interaction_kind, source_topic, source_partition, source_offset, attributed_at_ms) VALUES " + ins)
    low = sorted(((t, rid) for rid, t, score in rows if score <= 2), key=lambda x: (-x[0], x[1]))
    assert low[49][0] == low[50][0], "the seed must split a tie at the 50th"
    want = norm([[ts(t), rid, "csat", 1, f"text {rid}", "", "", "", ""] for t, rid in low[:50]])
    sql = expand_macros(interpolate(raw, {"team": "bulk", "period": "24h", "grain": "hour"}), FROM, TO, 60)
    # The comment hours as the sink would count them, computed here from the rows above.
    hours = defaultdict(lambda: [0, 0])
    for rid, t, score in rows:
        h = hours[(t // 3600 * 3600)]
        h[0] += 1
        h[1] += score <= 2
    counts = ("INSERT INTO " + db + ".rollups (grain, bucket, team, metric, dimension, dim_value, channel, kind, responses, "
              "score_sum, score_sq_sum, positive, negative, orphans, interactions, mark) VALUES " + ", ".join(
                  f"('comment_hour', toDateTime({b}), 'bulk', 'csat', '', '', '', '', {n}, 0, 0, 0, {neg}, 0, 0, 0)"
                  for b, (n, neg) in sorted(hours.items())))
    for eng in engines:
        eng.run(st)
        for counted in (False, True):
            if counted:
                eng.run(counts)
            got = norm(eng.query(sql))
            what = "with the comment hours" if counted else "without comment hours (reads the whole range)"
            if got != want:
                fail(f"comments panel, 140 rows with ties, {what}, on {eng.name}:\n  got  {got}\n  want {want}\n  query: {sql}")
            else:
                print(f"ok - comments panel returns the newest 50 of {len(low)} dissatisfied comments (ties at the 50th) {what} on {eng.name}")
    # The start the counts give is the hour of the 50th newest (or an earlier one when the
    # newest hour is not wholly inside the range), never a later one.
    bound = sql[sql.index("(SELECT toDateTime(arrayFirst"):]
    depth, end = 0, 0
    for i, c in enumerate(bound):
        depth += c == "("
        depth -= c == ")"
        if depth == 0:
            end = i + 1
            break
    bound = bound[:end]
    full = [b for b in sorted(hours, reverse=True) if b + 3600 <= TO]
    seen, want_b = 0, 0
    for b in full:
        seen += hours[b][1]
        if seen >= 50:
            want_b = b
            break
    assert want_b and want_b <= low[49][0], "the seed must give the counts a bound"
    for eng in engines:
        got_b = eng.query(f"SELECT toUInt32({bound})")[0][0]
        if int(got_b) != want_b:
            fail(f"comments panel's start from the comment hours on {eng.name}: got {got_b}, want {want_b}\n  query: {bound}")
        else:
            print(f"ok - comments panel starts at the hour of the 50th newest comment, {NOW - want_b} s ago, on {eng.name}")


if __name__ == "__main__":
    main()
