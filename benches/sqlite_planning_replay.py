#!/usr/bin/env python3
"""Raw-SQLite replay of bulk planning: what the rows of N reservations cost SQLite
itself, on the schema in `migrations/sqlite`, without sqlx, tokio or HTTP. Each
reservation is what `cargo bench --bench planning` stores for it: its row, its
`reservation.reserve` event and four pending timers, in transactions of 1,024
reservations (the writer's `TX_OPS`), a passive checkpoint every 64 transactions (the
service's `CHECKPOINT_EVERY`), WAL and `synchronous = NORMAL` as the service sets them.

    python3 benches/sqlite_planning_replay.py              # 200,000 reservations
    python3 benches/sqlite_planning_replay.py 1000000 --migrations ../other/migrations/sqlite
    python3 benches/sqlite_planning_replay.py 400000 --ids random   # ids spread like UUIDs
    python3 benches/sqlite_planning_replay.py 400000 --ids random --entity-key ordered

The rows are staged in an in-memory table first and each statement is an
`INSERT … SELECT` over 1,024 of them, so what is timed is SQLite's work on the rows
(b-tree inserts, index seeks, the commit's WAL writes, the checkpoints), with no
value bound one by one. It prints microseconds per reservation, per statement kind.
An approximation: Python's SQLite, not the one sqlx builds.

`--ids random` gives reservation `i` 16 hex digits spread over the key space, as the
planning bench's `PLANNING_IDS=random` does. `--entity-key ordered` weighs a key the
schema does not have: the events' and timers' `entity_id` is then a number given in
insertion order (`res-00000042`) while the reservation keeps its id, so the indexes
by entity take each new entity's rows at their end, as an integer key handed out per
entity would.
"""
import argparse, glob, json, os, sqlite3, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = 1_900_000_000_000  # ms
TX = 1024
CHECKPOINT_EVERY = 64
RULES = ["reservation.due_in_1_day", "reservation.due_in_1_hour",
         "reservation.ends_in_1_hour", "reservation.overdue_1_day"]


def body(i):
    return json.dumps({"id": f"res-{i:08d}", "contact_id": f"c{i % 1000}", "item_ids": ["item-1"],
                       "starts_at": "2030-03-01T08:00:00Z", "ends_at": "2030-03-02T08:00:00Z",
                       "timezone": "Europe/Paris", "status": "reserved", "data": {"x": 1},
                       "created_at": "2030-03-01T08:00:00Z", "updated_at": "2030-03-01T08:00:00Z"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=200_000)
    ap.add_argument("--ids", choices=["start", "random"], default="start")
    ap.add_argument("--entity-key", choices=["id", "ordered"], default="id")
    ap.add_argument("--migrations", default=os.path.join(HERE, "..", "migrations", "sqlite"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        replay(a, os.path.join(tmp, "planning.db"))


def replay(a, path):
    c = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON",
                   "wal_autocheckpoint = 0", "cache_size = -65536", "temp_store = MEMORY"):
        c.execute(f"PRAGMA {pragma}")
    for f in sorted(glob.glob(os.path.join(a.migrations, "*.sql"))):
        c.executescript(open(f).read())
    c.execute("ATTACH ':memory:' AS s")
    c.execute("CREATE TABLE s.r (n INTEGER PRIMARY KEY, id TEXT, body TEXT, evid TEXT, ekey TEXT)")
    c.execute("BEGIN")
    ident = (lambda i: f"{i * 0x9E3779B97F4A7C15 % (1 << 64):016x}") if a.ids == "random" \
        else (lambda i: f"res-{i:08d}")
    c.executemany("INSERT INTO s.r VALUES (?, ?, ?, ?, ?)",
                  ((i, ident(i), body(i), f"evt_{i:032x}",
                    f"res-{i:08d}" if a.entity_key == "ordered" else ident(i))
                   for i in range(a.n)))
    c.execute("COMMIT")

    spent = {"row": 0.0, "event": 0.0, "timers": 0.0, "commit": 0.0, "checkpoint": 0.0}
    start = time.perf_counter()
    for k, lo in enumerate(range(0, a.n, TX)):
        hi = lo + TX
        c.execute("BEGIN IMMEDIATE")
        t = time.perf_counter()
        c.execute(f"""INSERT INTO reservations (id, contact_id, starts_at, ends_at, timezone, status,
                        body, created_at, updated_at)
                      SELECT id, 'c', {T0}, {T0} + 86400000, 'Europe/Paris', 'reserved', body, {T0}, {T0}
                      FROM s.r WHERE n >= ? AND n < ?
                      ON CONFLICT (id) DO UPDATE SET body = excluded.body""", (lo, hi))
        t, spent["row"] = time.perf_counter(), spent["row"] + time.perf_counter() - t
        c.execute(f"""INSERT INTO events (id, type, entity_kind, entity_id, created_at, scheduled_at,
                        timer_id, data, fanned_out)
                      SELECT evid, 'reservation.reserve', 'reservation', ekey, {T0}, NULL, NULL, body, 1
                      FROM s.r WHERE n >= ? AND n < ?""", (lo, hi))
        t, spent["event"] = time.perf_counter(), spent["event"] + time.perf_counter() - t
        for j, rule in enumerate(RULES):
            c.execute(f"""INSERT OR IGNORE INTO timers (entity_kind, entity_id, rule, event_type, anchor_at, fire_at,
                            state, reason, live, created_at, updated_at)
                          SELECT 'reservation', ekey, ?, ?, {T0}, {T0} + (n * 7919 % 2592000000) + {j} * 3600000,
                            'pending', NULL, 1, {T0}, {T0}
                          FROM s.r WHERE n >= ? AND n < ?""",
                      (rule, rule, lo, hi))
        t, spent["timers"] = time.perf_counter(), spent["timers"] + time.perf_counter() - t
        c.execute("COMMIT")
        t, spent["commit"] = time.perf_counter(), spent["commit"] + time.perf_counter() - t
        if k % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
            c.execute("PRAGMA wal_checkpoint(PASSIVE)")
            spent["checkpoint"] += time.perf_counter() - t
    total = time.perf_counter() - start
    us = lambda s: s / a.n * 1e6
    print(f"{a.n} reservations in {total:.2f} s: {us(total):.2f} µs each "
          f"({a.n / total:,.0f}/s on SQLite alone); per reservation: "
          + ", ".join(f"{k} {us(v):.2f} µs" for k, v in spent.items()))
    print(f"SQLite {sqlite3.sqlite_version} (Python's)")
    c.close()


if __name__ == "__main__":
    main()
