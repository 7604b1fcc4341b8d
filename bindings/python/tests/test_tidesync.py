"""The C ABI driven from Python for real: a real library, a real server on loopback, real
SQLite files. Each test uses its own records (the server is shared by the session)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import tidesync
from tidesync import Database, TidesyncError, STATUS
from tidesync._native import TsBuf, lib

from conftest import SPACE

T = 30.0


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def wait_for(what: str, condition, timeout: float = T):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def open_db(tmp_path: Path, name: str, server, token: str, **options) -> Database:
    return Database.open(
        str(tmp_path / f"{name}.db"), server_url=server.url, spaces=[SPACE], token=token,
        durability="normal", **options,
    )


def raw(function, *args):
    """Calls an ABI function directly; returns (status, parsed JSON)."""
    out = TsBuf()
    status = function(*args, ctypes.byref(out))
    text = ctypes.string_at(out.ptr, out.len) if out.ptr else b""
    lib.ts_buf_free(ctypes.byref(out))
    return status, (json.loads(text) if text else None)


# ---- the story -------------------------------------------------------------------------


def test_offline_writes_go_online_and_a_second_client_converges(tmp_path, server, token):
    todos = unique("todos")
    with open_db(tmp_path, "a", server, token) as a:
        a.set_network(False)
        a.put(f"{SPACE}/{todos}/t1", {"title": "milk"})
        a.patch(f"{SPACE}/{todos}/t1", {"done": True})
        receipts = a.write_batch(
            writes=[{"op": "put", "key": f"{SPACE}/{todos}/t2", "doc": {"title": "bread"}}],
            restore=[{"op": "set", "lifetime": "persistent", "bucket": "compose", "key": "draft",
                      "entry": {"tag": "draft", "version": 1, "value": {"text": "eggs", "n": 2}}}],
        )
        assert len(receipts) == 1
        wait_for("the offline status", lambda: a.status()["phase"] == "offline" and a.status()["pending"] == 3)
        assert a.restore_get("persistent", "compose", "draft")["value"] == {"text": "eggs", "n": 2}

        a.set_network(True)
        status = a.wait_synced(T)
        assert status["pending"] == 0 and status["synced"] and status["last_error"] is None

        with open_db(tmp_path, "b", server, token) as b:
            b.wait_synced(T)
            assert b.get(f"{SPACE}/{todos}/t1")["doc"] == {"title": "milk", "done": True}
            records, _next = b.list(f"{SPACE}/{todos}")
            assert [r["key"] for r in records] == [f"{SPACE}/{todos}/t1", f"{SPACE}/{todos}/t2"]

            rang = threading.Event()
            with b.subscribe(doorbell=rang.set) as events:
                a.put(f"{SPACE}/{todos}/t3", {"title": "tea"})
                # As a list on screen would: refresh on each change of its collection, until
                # the new record shows.
                seen, shown = [], None
                deadline = time.time() + T
                while shown is None:
                    assert time.time() < deadline, seen
                    batch = events.wait(timeout=0.5)
                    seen += batch
                    if any(e["type"] == "records_changed" and e["collection"] == todos for e in batch):
                        shown = b.get(f"{SPACE}/{todos}/t3")
                assert shown["doc"] == {"title": "tea"}
                assert rang.is_set(), "the doorbell rang"
                assert all(e["v"] == 1 for e in seen)


def test_a_same_field_conflict_is_surfaced_and_resolved(tmp_path, server, token):
    key = f"{SPACE}/{unique('notes')}/n1"
    with open_db(tmp_path, "a", server, token) as a, open_db(tmp_path, "b", server, token) as b:
        a.put(key, {"title": "first"})
        a.wait_synced(T)
        b.wait_synced(T)
        a.set_network(False)
        b.set_network(False)
        a.patch(key, {"title": "from a"})
        time.sleep(0.01)
        b.patch(key, {"title": "from b"})  # the later stamp
        a.set_network(True)
        a.wait_synced(T)
        with b.subscribe() as events:
            b.set_network(True)
            b.wait_synced(T)
            conflicts = b.conflicts()
            assert len(conflicts) == 1, conflicts
            conflict = conflicts[0]
            assert conflict["key"] == key
            assert conflict["fields"][0]["field"] == "title"
            assert {conflict["fields"][0]["local"], conflict["fields"][0]["server"]} == {"from a", "from b"}
            types = [e["type"] for e in events.poll()]
            assert "conflict" in types, types
        receipt = b.resolve_conflict(conflict["id"], merged={"title": "from a and b"})
        assert receipt is not None
        assert b.conflicts() == []
        b.wait_synced(T)
        a.sync_now()
        wait_for("a to converge", lambda: a.get(key)["doc"] == {"title": "from a and b"})


def test_a_rejection_is_reported_and_retried(tmp_path, server, token):
    key = f"{SPACE}/orders/{unique('o')}"  # `orders` is strict on this server
    with open_db(tmp_path, "a", server, token) as a, open_db(tmp_path, "b", server, token) as b:
        a.put(key, {"qty": 1})
        a.wait_synced(T)
        b.wait_synced(T)
        b.set_network(False)
        a.patch(key, {"qty": 2})
        a.wait_synced(T)
        b.patch(key, {"qty": 5})  # on an outdated base
        b.set_network(True)
        b.wait_synced(T)
        rejections = b.rejections()
        assert len(rejections) == 1, rejections
        rejection = rejections[0]
        assert rejection["code"] == "stale_base" and rejection["key"] == key
        assert b.mutation_state(rejection["seq"])["state"] == "rejected"
        assert b.get(key)["doc"] == {"qty": 2}, "rolled back to the server's state"
        receipts = b.retry_rejection(rejection["seq"])
        assert len(receipts) == 1
        b.wait_synced(T)
        assert b.rejections() == []
        assert b.get(key)["doc"] == {"qty": 5}
        a.sync_now()
        wait_for("a to see the retried write", lambda: a.get(key)["doc"] == {"qty": 5})


# ---- restoration across a kill -9 -------------------------------------------------------


def test_restoration_written_with_data_survives_a_kill_9(tmp_path):
    path = tmp_path / "killed.db"
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(tidesync.__file__).parents[1])!r})
        import tidesync
        db = tidesync.Database.open({str(path)!r})
        db.write_batch(
            writes=[{{"op": "put", "key": "local:me/orders/o1", "doc": {{"items": 2}}}}],
            restore=[{{"op": "set", "lifetime": "persistent", "bucket": "checkout", "key": "draft",
                       "entry": {{"tag": "checkout.draft", "version": 1, "value": {{"note": "ring twice"}}}}}}],
        )
        print("written", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result
    assert "written" in result.stdout
    with Database.open(str(path)) as db:
        entry = db.restore_get("persistent", "checkout", "draft")
        assert entry == {"key": "draft", "tag": "checkout.draft", "version": 1,
                         "value": {"note": "ring twice"}}
        assert db.get("local:me/orders/o1")["doc"] == {"items": 2}
        assert db.get("local:me/orders/o1")["pending"] is True
        listing = db.restore_list("persistent")
        assert listing["children"] == ["checkout"]


# ---- a hot restart ----------------------------------------------------------------------


def test_a_hot_restart_attaches_to_the_live_engine(tmp_path, server, token):
    todos = unique("todos")
    first = open_db(tmp_path, "hot", server, token)
    old_events = first.subscribe(capacity=8)
    first.put(f"{SPACE}/{todos}/before", {"n": 1})
    client_id = first.opened["client_id"]
    # The isolate dies without closing or unsubscribing anything: all that is left is the
    # engine. The new isolate opens the same file.
    del first, old_events
    second = open_db(tmp_path, "hot", server, token)
    assert second.opened["attached"] is True
    assert second.opened["client_id"] == client_id
    with second.subscribe() as events:
        second.put(f"{SPACE}/{todos}/after", {"n": 2})
        second.wait_synced(T)
        assert second.get(f"{SPACE}/{todos}/before")["doc"] == {"n": 1}
        assert any(e["type"] == "status" for e in events.wait(timeout=1.0))
    # Another server or other spaces for the live file are refused.
    with pytest.raises(TidesyncError) as refused:
        Database.open(str(tmp_path / "hot.db"), server_url=server.url, spaces=["other:space"])
    assert refused.value.status == STATUS["TS_ERR_ALREADY_OPEN"]
    assert second.close() is False, "the leaked handle still holds the engine"


# ---- bad input, stale handles, threads, panics -------------------------------------------


def test_double_close_and_stale_or_foreign_handles_are_ts_err_closed(tmp_path):
    db = Database.open(str(tmp_path / "h.db"))
    sub = db.subscribe()
    assert db.close() is True
    with pytest.raises(TidesyncError) as again:
        db.close()
    assert again.value.status == STATUS["TS_ERR_CLOSED"] and again.value.code == "closed"
    for handle in (db.handle, 0, 1, 0xDEADBEEF, 2**64 - 1, sub.handle):
        status, body = raw(lib.ts_status, handle)
        assert status == STATUS["TS_ERR_CLOSED"], (handle, body)
        assert body["code"] == "closed" and body["v"] == 1
    status, body = raw(lib.ts_poll_events, db.handle, 0)
    assert status == STATUS["TS_ERR_CLOSED"], "a database handle is not a subscription"
    started = time.time()
    sub.wait(timeout=10)  # the engine stopped: its subscription's waiters return at once
    assert time.time() - started < 5
    sub.close()
    with pytest.raises(TidesyncError):
        sub.close()


def test_bad_input_gets_a_clear_error_and_changes_nothing(tmp_path):
    with Database.open(str(tmp_path / "bad.db")) as db:
        def status_of(function, *args):
            status, body = raw(function, db.handle, *args)
            return status, body["code"], body["message"]

        invalid = STATUS["TS_ERR_INVALID_ARGUMENT"]
        code = status_of(lib.ts_put, b"\xff\xfe/c/i", 7, b"{}", 2)
        assert code[0] == invalid and "UTF-8" in code[2], code
        assert status_of(lib.ts_put, b"s/c/i", 5, b"{nope", 5)[0] == invalid
        assert status_of(lib.ts_put, b"s/c/i", 5, b"[1, 2]", 6)[0] == invalid
        assert status_of(lib.ts_put, b"s/c/i", 5, b"\xc3\x28", 2)[0] == invalid
        assert status_of(lib.ts_put, None, 5, b"{}", 2)[0] == invalid, "NULL with a length"
        assert status_of(lib.ts_put, b"no-slashes", 10, b"{}", 2)[0] == invalid
        big = b'{"x": "' + b"a" * (2 << 20) + b'"}'
        assert status_of(lib.ts_put, b"s/c/i", 5, big, len(big))[0] == STATUS["TS_ERR_TOO_LARGE"]
        huge = b" " * ((64 << 20) + 1)
        assert status_of(lib.ts_write_batch, huge, len(huge))[0] == STATUS["TS_ERR_TOO_LARGE"]
        assert status_of(lib.ts_write_batch, b'{"writes": [{"op": "explode"}]}', 31)[0] == invalid
        assert status_of(lib.ts_resolve_conflict, 7, b'{"keep": "local"}', 17)[0] == STATUS["TS_ERR_NOT_FOUND"]
        assert status_of(lib.ts_retry_rejection, 99)[0] == STATUS["TS_ERR_NOT_FOUND"]
        with pytest.raises(TidesyncError) as unknown:
            Database.open(str(tmp_path / "x.db"), durabilty="full")  # a typo
        assert "durabilty" in unknown.value.message
        with pytest.raises(TidesyncError) as local:
            db.wait_synced(1)
        assert local.value.status == STATUS["TS_ERR_LOCAL_ONLY"]
        assert db.status()["pending"] == 0, "nothing was written"
        assert db.list("s/c")[0] == []
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(TidesyncError) as refused:
        Database.open(str(garbage))
    assert refused.value.status == STATUS["TS_ERR_NOT_TIDESYNC"]
    assert garbage.read_bytes() == b"not a database" * 100, "left untouched"


def test_eight_threads_calling_at_once(tmp_path):
    with Database.open(str(tmp_path / "threads.db"), durability="normal") as db:
        errors = []

        def work(t: int):
            try:
                for i in range(100):
                    key = f"s:t/c{t}/r{i}"
                    db.put(key, {"t": t, "i": i})
                    assert db.get(key)["doc"] == {"t": t, "i": i}
                    db.status()
                    if i % 25 == 0:
                        with db.subscribe(capacity=4) as events:
                            events.poll()
            except Exception as e:  # noqa: BLE001 — reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        wait_for("every write counted", lambda: db.status()["pending"] == 800)


def test_a_panic_inside_the_library_is_ts_err_panic_and_the_library_keeps_working(tmp_path):
    status, body = raw(lib.ts_debug_panic)
    assert status == STATUS["TS_ERR_PANIC"]
    assert body["code"] == "panic" and "ts_debug_panic" in body["message"]
    with Database.open(str(tmp_path / "after.db")) as db:
        db.put("s:p/c/i", {"ok": True})
        assert db.get("s:p/c/i")["doc"] == {"ok": True}
    assert tidesync.abi_version() == 1


def test_a_refused_token_asks_the_app_for_a_new_one(tmp_path, server, token):
    key = f"{SPACE}/{unique('todos')}/t"
    with open_db(tmp_path, "tok", server, "tsk_not_a_valid_token", start_online=False) as db:
        with db.subscribe() as events:
            db.put(key, {"x": 1})
            db.resume()
            seen = []
            deadline = time.time() + T
            while not any(e["type"] == "token_expired" for e in seen):
                assert time.time() < deadline, seen
                seen += events.wait(timeout=0.5)
            db.set_token(token)
            db.wait_synced(T)
        assert db.mutation_state(1)["state"] in ("acked", "confirmed")


# ---- queries and live queries ----------------------------------------------------------

def test_queries_with_a_declared_index_and_clear_errors(tmp_path):
    indexes = [{"collection": "todos", "fields": ["project", {"due": "asc"}]}]
    with Database.open(str(tmp_path / "q.db"), durability="normal", indexes=indexes) as db:
        for i in range(30):
            db.put(f"s:q/todos/t{i:02}", {"project": f"p{i % 3}", "due": 30 - i, "done": i % 2 == 0})
        open_p1 = {"project": "p1", "done": False}
        records, after = db.query("s:q/todos", open_p1, sort=["due"], limit=3, fields=["due"])
        assert [r["doc"] for r in records] == [{"due": 5}, {"due": 11}, {"due": 17}]
        rest, last = db.query("s:q/todos", open_p1, sort=["due"], limit=3, after=after)
        assert [r["doc"]["due"] for r in rest] == [23, 29] and last is None
        assert db.count("s:q/todos", open_p1) == 5
        assert db.count("s:q/todos") == 30

        def refused(selector=None, **form):
            with pytest.raises(TidesyncError) as e:
                db.query("s:q/todos", selector, **form)
            assert e.value.status == STATUS["TS_ERR_INVALID_ARGUMENT"]
            return e.value.message

        assert "selector.due.$near" in refused({"due": {"$near": 1}})
        assert "selector.due.$gt" in refused({"due": {"$gt": {"a": 1}}})
        assert "sort[0]" in refused(sort=[{"due": "sideways"}])
        assert "limit" in refused(limit=0)
        assert "after" in refused(after="nope")
        status, body = raw(lib.ts_query, db.handle, b"s:q/todos", 9, b"{nope", 5)
        assert status == STATUS["TS_ERR_INVALID_ARGUMENT"] and "query" in body["message"]
        status, body = raw(lib.ts_query, db.handle, b"\xff/todos", 7, None, 0)
        assert status == STATUS["TS_ERR_INVALID_ARGUMENT"] and "UTF-8" in body["message"]
    with pytest.raises(TidesyncError) as bad_index:
        Database.open(str(tmp_path / "q2.db"), indexes=[{"collection": "todos", "fields": []}])
    assert "indexes[0]" in bad_index.value.message


def test_a_live_query_follows_local_writes_and_a_pulled_change(tmp_path, server, token):
    collection = f"{SPACE}/{unique('todos')}"
    with open_db(tmp_path, "live_a", server, token) as a, open_db(tmp_path, "live_b", server, token) as b:
        rang = threading.Event()
        with a.watch(collection, {"done": False}, sort=["due"], doorbell=rang.set) as live:
            first = live.next(timeout=T)
            assert first["type"] == "query_result" and first["records"] == [] and first["added"] == []
            assert rang.wait(T), "the doorbell rang for the first result"

            a.put(f"{collection}/mine", {"due": 2, "done": False})
            update = live.next(timeout=T)
            assert update["added"] == ["mine"] and update["records"][0]["pending"] is True

            b.put(f"{collection}/theirs", {"due": 1, "done": False})
            b.wait_synced(T)
            update = wait_for("b's record arrives", lambda: (lambda u: u if u and "theirs" in u["added"] else None)(live.next(timeout=1)))
            assert [r["key"].rsplit("/", 1)[1] for r in update["records"]][0] == "theirs"

            a.patch(f"{collection}/mine", {"done": True})
            update = wait_for("mine leaves", lambda: (lambda u: u if u and "mine" in u["removed"] else None)(live.next(timeout=1)))
            assert [r["key"].rsplit("/", 1)[1] for r in update["records"]] == ["theirs"]
        # Unsubscribed: the handle is gone.
        status, _ = raw(lib.ts_poll_events, live.handle, 0)
        assert status == STATUS["TS_ERR_CLOSED"]


def test_undrained_results_merge_and_closing_the_database_ends_the_live_query(tmp_path):
    db = Database.open(str(tmp_path / "merge.db"), durability="normal")
    live = db.watch("s:m/todos")
    assert live.next(timeout=T)["records"] == []
    for i in range(50):
        db.put(f"s:m/todos/t{i:02}", {"i": i})
    db.delete("s:m/todos/t00")
    wait_for("every write seen", lambda: db.count("s:m/todos") == 49)
    time.sleep(0.2)  # let the last result land
    results = live.poll()
    assert len(results) == 1, "one queued result at most"
    assert len(results[0]["records"]) == 49
    assert "t00" not in results[0]["added"], "it came and went while undrained"
    assert db.close() is True
    started = time.time()
    assert live.wait(timeout=10) == [], "closed with the engine: no wait"
    assert time.time() - started < 5
    live.close()


def test_python_signatures_match_the_header():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dart" / "tool"))
    import check_bindings

    _, functions, _, _ = check_bindings.parse_header(check_bindings.HEADER.read_text())
    from tidesync._native import SIGNATURES

    assert set(SIGNATURES) == set(functions)
    for name, (args, _) in SIGNATURES.items():
        assert len(args) == len(functions[name][1]), name


def test_a_live_query_whose_dart_port_is_gone_closes_itself(tmp_path):
    """After a hot restart the old isolate's port is closed: Dart_PostCObject answers false.
    The live query then stops (no more evaluations), and its queue reports closed."""
    posts = []

    def dead_port(port, message):
        posts.append(port)
        return False

    post = tidesync._native.DART_POST(dead_port)
    with Database.open(str(tmp_path / "dead.db")) as db:
        handle = ctypes.c_uint64(0)
        tidesync.call(lib.ts_watch_query, db.handle, *tidesync._span("s:d/todos"), None, 0,
                      tidesync._native.DOORBELL(), None, post, 77, ctypes.byref(handle))
        wait_for("the first result rang the dead port", lambda: posts == [77])
        db.put("s:d/todos/a", {"x": 1})
        started = time.time()
        status, body = raw(lib.ts_wait_events, handle.value, 10_000, 0)
        assert status == STATUS["TS_OK"] and time.time() - started < 5, "closed: no wait"
        time.sleep(0.1)
        assert posts == [77], "never rung again"
        raw(lib.ts_unsubscribe, handle.value)
