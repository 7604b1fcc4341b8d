/*
 * The offline-to-online story through the C ABI, against a real server on loopback:
 * client A writes offline (records, and a draft in the same batch), goes online and syncs;
 * client B opens a fresh file and converges; B subscribes with a C doorbell and sees A's next
 * write arrive as an event, and a live query of B's sees it arrive as a query result; every
 * handle is closed, every buffer freed once.
 *
 * Run by crates/tidesync-ffi/tests/c.rs (also under valgrind):
 *   TIDESYNC_URL, TIDESYNC_TOKEN, TIDESYNC_DIR give the server, a token for space
 *   team:c, and a fresh folder.
 */
#define _POSIX_C_SOURCE 199309L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tidesync.h"

static int failures = 0;

#define CHECK(cond, ...)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__);                              \
      fprintf(stderr, __VA_ARGS__);                                                        \
      fprintf(stderr, "\n");                                                               \
      failures++;                                                                          \
    }                                                                                      \
  } while (0)

/* `s` as a borrowed span. */
#define SPAN(s) (const uint8_t *)(s), strlen(s)

/* Runs a call whose result is only checked for success, and frees its buffer. */
static void ok(int32_t status, TsBuf *out, const char *what) {
  CHECK(status == TS_OK, "%s: status %d: %.*s", what, status, (int)out->len, (const char *)out->ptr);
  ts_buf_free(out);
}

/* Whether the JSON in `buf` contains `needle` (these checks only need substring tests). */
static int has(const TsBuf *buf, const char *needle) {
  if (buf->ptr == NULL) return 0;
  char *text = malloc(buf->len + 1);
  memcpy(text, buf->ptr, buf->len);
  text[buf->len] = 0;
  int found = strstr(text, needle) != NULL;
  free(text);
  return found;
}

/* Polls the status (published by the sync thread after it handled each call) until it
 * contains both needles, for up to 10 s. */
static int wait_status(uint64_t db, const char *a, const char *b) {
  for (int i = 0; i < 1000; i++) {
    TsBuf out = {0};
    int32_t status = ts_status(db, &out);
    int found = status == TS_OK && has(&out, a) && has(&out, b);
    ts_buf_free(&out);
    if (found) return 1;
    struct timespec pause = {0, 10 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  return 0;
}

static atomic_int rings = 0;

static void doorbell(void *context) {
  atomic_int *counter = context;
  atomic_fetch_add(counter, 1);
}

static uint64_t open_client(const char *dir, const char *name, const char *url, const char *token) {
  char config[2048];
  snprintf(config, sizeof config,
           "{\"path\": \"%s/%s.db\", \"server_url\": \"%s\", \"spaces\": [\"team:c\"], "
           "\"token\": \"%s\", \"durability\": \"normal\"}",
           dir, name, url, token);
  uint64_t db = 0;
  TsBuf out = {0};
  int32_t status = ts_open(SPAN(config), &db, &out);
  CHECK(status == TS_OK && db != 0, "open %s: %d %.*s", name, status, (int)out.len, (const char *)out.ptr);
  CHECK(has(&out, "\"attached\":false"), "a fresh engine for %s", name);
  ts_buf_free(&out);
  return db;
}

int main(void) {
  const char *url = getenv("TIDESYNC_URL");
  const char *token = getenv("TIDESYNC_TOKEN");
  const char *dir = getenv("TIDESYNC_DIR");
  if (!url || !token || !dir) {
    fprintf(stderr, "set TIDESYNC_URL, TIDESYNC_TOKEN and TIDESYNC_DIR\n");
    return 2;
  }
  CHECK(ts_abi_version() == TS_ABI_VERSION, "ABI version %u", ts_abi_version());
  TsBuf out = {0};

  /* A: offline writes, and a draft committed with them. */
  uint64_t a = open_client(dir, "a", url, token);
  ok(ts_set_network(a, 0, &out), &out, "offline");
  ok(ts_put(a, SPAN("team:c/todos/t1"), SPAN("{\"title\": \"milk\"}"), &out), &out, "put t1");
  ok(ts_patch(a, SPAN("team:c/todos/t1"), SPAN("{\"done\": true}"), &out), &out, "patch t1");
  const char *batch =
      "{\"writes\": [{\"op\": \"put\", \"key\": \"team:c/todos/t2\", \"doc\": {\"title\": \"bread\"}},"
      "              {\"op\": \"delete\", \"key\": \"team:c/todos/none\"}],"
      " \"restore\": [{\"op\": \"set\", \"lifetime\": \"persistent\", \"bucket\": \"compose\","
      "                \"key\": \"draft\", \"entry\": {\"tag\": \"draft\", \"version\": 1, \"value\": \"eggs\"}}]}";
  int32_t status = ts_write_batch(a, SPAN(batch), &out);
  CHECK(status == TS_OK && has(&out, "\"receipts\""), "batch: %d %.*s", status, (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);
  CHECK(wait_status(a, "\"pending\":4", "\"phase\":\"offline\""), "offline with 4 pending");
  status = ts_restore_get(a, SPAN("{\"lifetime\": \"persistent\", \"bucket\": \"compose\", \"key\": \"draft\"}"), &out);
  CHECK(status == TS_OK && has(&out, "\"value\":\"eggs\""), "draft: %.*s", (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);

  /* Online: A syncs everything. */
  ok(ts_set_network(a, 1, &out), &out, "online");
  status = ts_wait_synced(a, 30000, &out);
  CHECK(status == TS_OK && has(&out, "\"pending\":0"), "A synced: %d %.*s", status, (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);

  /* B, fresh, converges. */
  uint64_t b = open_client(dir, "b", url, token);
  status = ts_wait_synced(b, 30000, &out);
  CHECK(status == TS_OK, "B synced: %d %.*s", status, (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);
  status = ts_get(b, SPAN("team:c/todos/t1"), &out);
  CHECK(status == TS_OK && has(&out, "\"title\":\"milk\"") && has(&out, "\"done\":true"),
        "B has t1: %.*s", (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);
  status = ts_list(b, SPAN("team:c/todos"), NULL, 0, &out);
  CHECK(status == TS_OK && has(&out, "team:c/todos/t2"), "B lists t2: %.*s", (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);

  /* B subscribes; A's next write reaches B as an event, and the doorbell rang. */
  uint64_t sub = 0;
  status = ts_subscribe(b, 0, doorbell, &rings, NULL, 0, &sub, &out);
  CHECK(status == TS_OK && sub != 0, "subscribe: %d", status);
  ts_buf_free(&out);
  ok(ts_put(a, SPAN("team:c/todos/t3"), SPAN("{\"title\": \"tea\"}"), &out), &out, "put t3");
  int seen = 0;
  for (int i = 0; i < 100 && !seen; i++) {
    status = ts_wait_events(sub, 300, 0, &out);
    CHECK(status == TS_OK, "wait events: %d", status);
    seen = has(&out, "\"type\":\"records_changed\"") && has(&out, "\"collection\":\"todos\"");
    ts_buf_free(&out);
  }
  CHECK(seen, "B was told its todos changed");
  CHECK(atomic_load(&rings) > 0, "the doorbell rang");

  /* A query, and a live query that sees A's next write arrive. */
  status = ts_query(b, SPAN("team:c/todos"), SPAN("{\"selector\": {\"done\": true}, \"fields\": [\"title\"]}"), &out);
  CHECK(status == TS_OK && has(&out, "\"doc\":{\"title\":\"milk\"}") && !has(&out, "bread"),
        "query: %d %.*s", status, (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);
  status = ts_count(b, SPAN("team:c/todos"), NULL, 0, &out);
  CHECK(status == TS_OK && has(&out, "\"count\":3"), "count: %.*s", (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);
  uint64_t live = 0;
  atomic_int live_rings = 0;
  status = ts_watch_query(b, SPAN("team:c/todos"), SPAN("{\"selector\": {\"title\": {\"$beginsWith\": \"j\"}}}"),
                          doorbell, &live_rings, NULL, 0, &live, &out);
  CHECK(status == TS_OK && live != 0, "watch: %d %.*s", status, (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);
  status = ts_wait_events(live, 10000, 0, &out);
  CHECK(status == TS_OK && has(&out, "\"type\":\"query_result\"") && has(&out, "\"records\":[]"),
        "the first result: %.*s", (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);
  ok(ts_put(a, SPAN("team:c/todos/t4"), SPAN("{\"title\": \"jam\"}"), &out), &out, "put t4");
  int arrived = 0;
  for (int i = 0; i < 100 && !arrived; i++) {
    status = ts_wait_events(live, 300, 0, &out);
    arrived = status == TS_OK && has(&out, "\"added\":[\"t4\"]");
    ts_buf_free(&out);
  }
  CHECK(arrived, "the live query saw t4 arrive");
  CHECK(atomic_load(&live_rings) > 0, "the live query's doorbell rang");
  status = ts_watch_query(b, SPAN("team:c/todos"), SPAN("{\"selector\": {\"title\": {\"$near\": 1}}}"),
                          NULL, NULL, NULL, 0, &live, &out);
  CHECK(status == TS_ERR_INVALID_ARGUMENT && has(&out, "$near"), "a bad live query: %d", status);
  ts_buf_free(&out);

  /* Bad input changes nothing and says why. */
  status = ts_put(b, SPAN("no-slashes"), SPAN("{}"), &out);
  CHECK(status == TS_ERR_INVALID_ARGUMENT && has(&out, "\"code\":\"invalid_argument\""),
        "a bad key: %d %.*s", status, (int)out.len, (const char *)out.ptr);
  ts_buf_free(&out);
  status = ts_put(b, SPAN("team:c/todos/x"), SPAN("{not json"), &out);
  CHECK(status == TS_ERR_INVALID_ARGUMENT, "malformed JSON: %d", status);
  ts_buf_free(&out);

  /* Everything closes once; a closed handle is TS_ERR_CLOSED, not a crash. */
  ok(ts_unsubscribe(live, &out), &out, "unwatch");
  ok(ts_unsubscribe(sub, &out), &out, "unsubscribe");
  CHECK(ts_unsubscribe(sub, &out) == TS_ERR_CLOSED, "unsubscribe twice");
  ts_buf_free(&out);
  ok(ts_close(b, &out), &out, "close b");
  ok(ts_close(a, &out), &out, "close a");
  CHECK(ts_close(a, &out) == TS_ERR_CLOSED, "close twice");
  ts_buf_free(&out);
  CHECK(ts_status(a, NULL) == TS_ERR_CLOSED, "a stale handle");
  ts_buf_free(&out); /* freeing an empty buffer (or twice) is harmless */

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("c: offline -> online -> converged: ok\n");
  return 0;
}
