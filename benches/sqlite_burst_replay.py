#!/usr/bin/env python3
"""Raw-SQLite replay of a 10,000-timer burst: the statements duehook's scheduler,
fan-out and recorder run for it, on the schema in `migrations/sqlite`, without sqlx,
tokio or HTTP. It tells what the store itself costs per webhook, and, run under
callgrind, gives repeatable instruction counts for comparing schemas and statements
(this machine's timings vary up to 2x between hours; instruction counts do not).

    # a store with 1M pending item timers (random over 30 days) + 10,000 due in 1 s
    python3 benches/sqlite_burst_replay.py build /tmp/p1m.db 1000000
    # replay the burst on a copy: claims written (PostgreSQL's way) or read (SQLite's)
    python3 benches/sqlite_burst_replay.py run /tmp/p1m.db --claims read
    # instructions inside SQLite only (pyenv users: pass the real interpreter, not the shim)
    valgrind --tool=callgrind --toggle-collect=sqlite3_step \\
        python3 benches/sqlite_burst_replay.py run /tmp/p1m.db --claims read

`build --migrations DIR` builds from another checkout's migrations (to compare
schemas). The statements mirror `schedule::batch` (due timers with their entities,
entity saves, events, deliveries written claimed, timers marked fired; one
transaction per `--batch` timers, refills of 2,000) and `delivery::record` (one
transaction per 512 attempts). An approximation: Python's SQLite, not the one sqlx
builds, and item timers only.
"""
import argparse, glob, json, os, random, shutil, sqlite3, time

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = 1_900_000_000_000  # ms; the burst is due at T0 + 60 s


def body(item_id):
    return json.dumps({"id": item_id, "name": "load", "expires_at": "2030-03-01T08:00:10.000Z",
                       "timezone": None, "data": None, "expired": False,
                       "created_at": "2030-03-01T08:00:00.000Z", "updated_at": "2030-03-01T08:00:00.000Z"})


def build(path, pending, migrations):
    for f in (path, path + "-wal", path + "-shm"):
        if os.path.exists(f):
            os.remove(f)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    for f in sorted(glob.glob(os.path.join(migrations, "*.sql"))):
        c.executescript(open(f).read())
    c.execute("""INSERT INTO endpoints (id, name, url, topics, format, envelope, scheme, secret, headers,
                 retry_schedule, timeout_ms, alert_emails, created_at, updated_at)
                 VALUES ('ep', 'ep', 'http://x', '["*"]', 'json', 'standard', 'standard_webhooks', 's',
                 '{}', '[]', 1000, '[]', 0, 0)""")

    def add(prefix, count, fire_at):
        for start in range(0, count, 10_000):
            c.execute("BEGIN")
            for i in range(start, min(count, start + 10_000)):
                item, at = f"{prefix}{i}", fire_at(i)
                c.execute("INSERT INTO items (id, name, expires_at, expired, body, created_at, updated_at) "
                          "VALUES (?, 'load', ?, 0, ?, ?, ?)", (item, at, body(item), T0, T0))
                c.execute("INSERT INTO timers (entity_kind, entity_id, rule, event_type, anchor_at, fire_at, "
                          "state, live, created_at, updated_at) VALUES ('item', ?, 'item.expire', "
                          "'item.expire', ?, ?, 'pending', 1, ?, ?)",
                          (item, at, at, T0, T0))
            c.execute("COMMIT")

    rnd = random.Random(1)
    add("pending-", pending, lambda i: T0 + 3_600_000 + rnd.randrange(30 * 86_400_000))
    add("burst-", 10_000, lambda i: T0 + 60_000 + i // 10)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def marks(n, cols):
    return ",".join(["(" + ",".join("?" * cols) + ")"] * n)


def run(path, claims, batch, node="node_1"):
    work = path + ".replay"
    shutil.copy(path, work)
    os.sync()  # else the first commit's sync waits for the copy to reach the disk
    for ext in ("-wal", "-shm"):
        if os.path.exists(work + ext):
            os.remove(work + ext)
    c = sqlite3.connect(work, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0"):
        c.execute("PRAGMA " + pragma)
    now = T0 + 61_000  # the whole burst is due; refills look a minute ahead (the pending
    # timers, an hour ahead and later, are never loaded: only their B-trees' size counts)
    spent = {}

    def timed(name, f):
        s = time.perf_counter()
        r = f()
        spent[name] = spent.get(name, 0) + time.perf_counter() - s
        return r

    def refill(cursor):
        if claims == "read":
            at, last = cursor or (-(2**63), -(2**63))
            return c.execute("SELECT id, fire_at FROM timers WHERE state = 'pending' AND fire_at >= ?2 "
                             "AND fire_at < ?1 AND (fire_at > ?2 OR id > ?3) ORDER BY fire_at, id LIMIT ?4",
                             [now + 60_000, at, last, 2000]).fetchall()
        after = " AND (fire_at > ?6 OR (fire_at = ?6 AND id > ?7))" if cursor else ""
        args = [node, now + 30_000, now + 60_000, now, 2000] + (list(cursor) if cursor else [])
        c.execute("BEGIN IMMEDIATE")
        rows = c.execute("UPDATE timers SET claimed_by = ?1, lease_until = ?2 WHERE id IN (SELECT id FROM "
                         "timers WHERE state = 'pending' AND fire_at < ?3 AND (claimed_by IS NULL OR "
                         f"claimed_by = ?1 OR lease_until < ?4){after} ORDER BY fire_at, id LIMIT ?5) "
                         "RETURNING id, fire_at", args).fetchall()
        c.execute("COMMIT")
        return sorted(rows, key=lambda r: (r[1], r[0]))

    events = deliveries = 0
    start = time.perf_counter()
    cursor = None
    while True:
        rows = timed("refill", lambda: refill(cursor))
        if not rows:
            break
        cursor = (rows[-1][1], rows[-1][0])
        ids = [r[0] for r in rows]
        for b in range(0, len(ids), batch):
            chunk = ids[b:b + batch]
            c.execute("BEGIN IMMEDIATE")
            due = timed("load due", lambda: c.execute(f"""
                SELECT t.id, t.entity_kind, t.entity_id, t.rule, t.event_type, t.anchor_at, t.fire_at,
                       t.created_at, t.updated_at, COALESCE(r.body, o.body, i.body, it.body) AS body
                FROM timers t
                LEFT JOIN reservations r ON t.entity_kind = 'reservation' AND r.id = t.entity_id
                LEFT JOIN orders o ON t.entity_kind = 'order' AND o.id = t.entity_id
                LEFT JOIN invoices i ON t.entity_kind = 'invoice' AND i.id = t.entity_id
                LEFT JOIN items it ON t.entity_kind = 'item' AND it.id = t.entity_id
                WHERE +t.state = 'pending' AND +t.fire_at <= ? AND t.id IN ({",".join("?" * len(chunk))})
                ORDER BY t.fire_at, t.id""", [now] + chunk).fetchall())
            items, evs, dls, ev_ids = [], [], [], []
            for r in due:
                b2 = json.loads(r[9])
                b2["expired"] = True
                items += [r[2], "load", r[6], 1, json.dumps(b2), T0, now]
                events += 1
                ev_ids.append(f"evt_{events:026d}")
                evs += [ev_ids[-1], "item.expire", "item", r[2], now, r[6], r[0],
                        json.dumps({"item": {"id": r[2], "name": "load"}}), 1]
                deliveries += 1
                dls += [f"dlv_{deliveries:026d}", ev_ids[-1], "ep", "item.expire", "pending", now, node,
                        now + 30_000, now, now]
            n = len(due)
            if n == 0:
                c.execute("COMMIT")
                continue
            timed("save items", lambda: c.execute(
                f"INSERT INTO items (id, name, expires_at, expired, body, created_at, updated_at) VALUES "
                f"{marks(n, 7)} ON CONFLICT(id) DO UPDATE SET name = excluded.name, expires_at = "
                "excluded.expires_at, expired = excluded.expired, body = excluded.body, "
                "updated_at = excluded.updated_at", items))
            timed("insert events", lambda: c.execute(
                "INSERT INTO events (id, type, entity_kind, entity_id, created_at, scheduled_at, timer_id, "
                f"data, fanned_out) VALUES {marks(n, 9)}", evs))
            timed("insert deliveries", lambda: c.execute(
                "INSERT INTO deliveries (id, event_id, endpoint_id, event_type, status, next_attempt_at, "
                f"claimed_by, lease_until, created_at, updated_at) VALUES {marks(n, 10)}", dls))
            timed("mark fired", lambda: c.execute(
                "UPDATE timers SET state = 'fired', updated_at = ?, event_id = (SELECT e.id FROM events e "
                "WHERE e.timer_id = timers.id), reason = CASE WHEN ? - fire_at >= ? THEN 'late' ELSE NULL "
                f"END WHERE +state = 'pending' AND id IN ({','.join('?' * len(chunk))})",
                [now, now, 60_000] + chunk))
            timed("commit", lambda: c.execute("COMMIT"))
    ids = [f"dlv_{i:026d}" for i in range(1, deliveries + 1)]
    for b in range(0, len(ids), 512):
        chunk = ids[b:b + 512]

        def record():
            c.execute("BEGIN IMMEDIATE")
            c.execute("UPDATE deliveries SET status = 'succeeded', attempts = attempts + 1, last_status = 200, "
                      "claimed_by = NULL, lease_until = NULL, next_attempt_at = NULL, updated_at = ? "
                      f"WHERE id IN ({','.join('?' * len(chunk))})", [now] + chunk)
            c.execute("INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, "
                      f"response_headers, response_body) VALUES {','.join(['(?, 1, ?, 1, 200, ?, ?)'] * len(chunk))}",
                      [v for d in chunk for v in (d, now, "{}", "")])
            c.execute("COMMIT")
        timed("record", record)
    total = time.perf_counter() - start
    print(f"{os.path.basename(path)}, claims {claims}, {batch} per transaction: {deliveries} webhooks in "
          f"{total * 1000:.0f} ms = {total / max(deliveries, 1) * 1e6:.1f} us each (Python included); "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(spent.items(), key=lambda x: -x[1])))
    c.close()
    for f in (work, work + "-wal", work + "-shm"):
        if os.path.exists(f):
            os.remove(f)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("path")
    b.add_argument("pending", type=int)
    b.add_argument("--migrations", default=os.path.join(HERE, "..", "migrations", "sqlite"))
    r = sub.add_parser("run")
    r.add_argument("path")
    r.add_argument("--claims", choices=["write", "read"], default="read")
    r.add_argument("--batch", type=int, default=200)
    a = p.parse_args()
    build(a.path, a.pending, a.migrations) if a.cmd == "build" else run(a.path, a.claims, a.batch)
