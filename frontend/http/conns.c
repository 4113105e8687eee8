/*
 * conns.c — connection management for `lantern serve`, so that idle or slow clients cannot starve
 * the others (in the spirit of nginx's client_header_timeout, keepalive_timeout, limit_conn and
 * its reuse of idle connections when worker_connections run out).
 *
 * Every open connection is registered (MHD's connection notifications) with its client address
 * and its phase:
 *   HEADERS  accepted, or between requests with a partial request: its request headers must all
 *            be in within --http-header-timeout of the accept, however slowly they trickle in
 *            (MHD's own timeout only measures inactivity, which one byte a second defeats);
 *   REQUEST  headers in, until the response is fully written: never cut by us. MHD's inactivity
 *            timeout applies while the body arrives (--http-header-timeout) and while a response
 *            waits on a client that does not read (--http-idle-timeout); a request waiting for the
 *            engine is suspended, and suspended connections never time out;
 *   IDLE     a keep-alive connection after its response: closed --http-idle-timeout later.
 * HEADERS and IDLE connections cost nothing to drop and hold no work, so they are *evictable*:
 * when the server is full (--http-max-connections) or a client address is at its cap
 * (--http-max-connections-per-ip), a new connection closes the oldest evictable one (of that
 * address, for the cap) and takes its place. When nothing can be evicted, up to FE_CONN_OVERFLOW
 * more connections are let in only to be answered at once — 503 (server full) or 429 (address
 * at its cap), with Retry-After and Connection: close — and beyond those the accept is refused
 * (the socket closed at once). Nobody waits in the kernel's backlog for a slot.
 *
 * We close a connection by shutdown(2) on its socket from whichever thread decides (an MHD thread
 * accepting, or the main thread's deadline tick); the MHD thread that owns it then sees the
 * hang-up and closes it. This is safe because the registry's mutex is held around the shutdown
 * and MHD sends the CLOSED notification, which takes the mutex, before it closes the descriptor.
 *
 * Threads: the accept policy and the notifications run on MHD's threads, fe_http_conns_tick on
 * the main thread; all under srv->conn_mu. Not on the hot path (once per connection or request).
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http.h"
#include "lt.h"

typedef enum conn_phase { CP_HEADERS, CP_REQUEST, CP_IDLE } conn_phase_t;

struct fe_conn {
    struct MHD_Connection *conn;
    int fd;
    unsigned char addr[16]; /* the client's address; IPv4 as ::ffff:a.b.c.d */
    conn_phase_t phase;
    fe_conn_verdict_t verdict; /* FE_CONN_OK, or let in only to be refused (counted apart) */
    bool closing;              /* shut down by us; no longer counted */
    uint64_t since_ns;         /* when its phase began */
    uint64_t deadline_ns;      /* HEADERS, IDLE: closed at this instant; 0: none */
    unsigned mhd_timeout_s;    /* what MHD's inactivity timeout is now (its own thread only) */
    fe_conn_t *prev, *next;
};

/* The accept policy's verdict for the connection the same MHD thread is accepting; MHD calls
 * the policy and then the STARTED notification for one connection before the next. */
static _Thread_local fe_conn_verdict_t tl_verdict;

static void addr_key(const struct sockaddr *sa, unsigned char key[16]) {
    memset(key, 0, 16);
    if (!sa) return;
    if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
}

/* ---- the registry (under conn_mu) ---- */

static int *count_of(srv_t *s, const fe_conn_t *e) {
    return e->verdict == FE_CONN_OK ? &s->n_conns : &s->n_conns_over;
}

/* Closes e: shutdown now (its MHD thread finishes the job), uncounted at once. */
static void conn_close(srv_t *s, fe_conn_t *e) {
    if (e->closing) return;
    e->closing = true;
    (*count_of(s, e))--;
    if (e->fd >= 0) shutdown(e->fd, SHUT_RDWR);
}

/* The oldest connection that holds no request (of one address when key is not NULL). */
static fe_conn_t *oldest_evictable(srv_t *s, const unsigned char *key) {
    fe_conn_t *best = NULL;
    for (fe_conn_t *e = s->conns; e; e = e->next) {
        if (e->closing || e->verdict != FE_CONN_OK || e->phase == CP_REQUEST) continue;
        if (key && memcmp(e->addr, key, 16) != 0) continue;
        if (!best || e->since_ns < best->since_ns) best = e;
    }
    return best;
}

static int count_addr(srv_t *s, const unsigned char *key) {
    int n = 0;
    for (fe_conn_t *e = s->conns; e; e = e->next)
        n += !e->closing && e->verdict == FE_CONN_OK && memcmp(e->addr, key, 16) == 0;
    return n;
}

/* ---- MHD's callbacks ---- */

/* The accept policy: makes room by evicting, or lets the connection in to be refused with a
 * status, or refuses the accept. Counts are taken when the connection starts, so threads
 * accepting at the same instant may overshoot a limit by one each (MHD's own limit has room). */
enum MHD_Result fe_http_conns_accept(void *cls, const struct sockaddr *sa, socklen_t len) {
    (void)len;
    srv_t *s = cls;
    unsigned char key[16];
    addr_key(sa, key);
    fe_conn_verdict_t v = FE_CONN_OK;
    pthread_mutex_lock(&s->conn_mu);
    if (s->max_conns_per_ip > 0 && count_addr(s, key) >= s->max_conns_per_ip) {
        fe_conn_t *o = oldest_evictable(s, key);
        if (o) {
            conn_close(s, o);
            atomic_fetch_add(&s->n_conn_evicted, 1);
        } else {
            v = FE_CONN_PER_IP;
        }
    }
    if (v == FE_CONN_OK && s->n_conns >= s->max_conns) {
        fe_conn_t *o = oldest_evictable(s, NULL);
        if (o) {
            conn_close(s, o);
            atomic_fetch_add(&s->n_conn_evicted, 1);
        } else {
            v = FE_CONN_FULL;
        }
    }
    bool ok = v == FE_CONN_OK || s->n_conns_over < FE_CONN_OVERFLOW;
    pthread_mutex_unlock(&s->conn_mu);
    if (!ok) atomic_fetch_add(&s->n_conn_refused, 1);
    tl_verdict = v;
    return ok ? MHD_YES : MHD_NO;
}

static void conn_started(srv_t *s, struct MHD_Connection *conn, void **socket_context) {
    fe_conn_verdict_t v = tl_verdict;
    tl_verdict = FE_CONN_OK;
    fe_conn_t *e = calloc(1, sizeof *e);
    *socket_context = e;
    if (!e) return; /* out of memory: served, unmanaged */
    e->conn = conn;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    e->fd = ci ? (int)ci->connect_fd : -1;
    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    addr_key(ci ? ci->client_addr : NULL, e->addr);
    e->verdict = v;
    e->phase = CP_HEADERS;
    e->since_ns = lt_now_ns();
    /* one let in only to be refused gets little time to say what it wants */
    unsigned t = s->header_timeout_s;
    if (v != FE_CONN_OK && t > FE_CONN_REFUSE_TIMEOUT_S) t = FE_CONN_REFUSE_TIMEOUT_S;
    e->deadline_ns = e->since_ns + (uint64_t)t * 1000000000ull;
    e->mhd_timeout_s = s->header_timeout_s; /* the daemon's default */
    pthread_mutex_lock(&s->conn_mu);
    e->next = s->conns;
    if (s->conns) s->conns->prev = e;
    s->conns = e;
    (*count_of(s, e))++;
    pthread_mutex_unlock(&s->conn_mu);
}

static void conn_closed(srv_t *s, void **socket_context) {
    fe_conn_t *e = *socket_context;
    if (!e) return;
    *socket_context = NULL;
    pthread_mutex_lock(&s->conn_mu);
    if (!e->closing) (*count_of(s, e))--;
    if (e->prev)
        e->prev->next = e->next;
    else
        s->conns = e->next;
    if (e->next) e->next->prev = e->prev;
    pthread_mutex_unlock(&s->conn_mu);
    free(e);
}

void fe_http_conns_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        conn_started(cls, conn, socket_context);
    else if (code == MHD_CONNECTION_NOTIFY_CLOSED)
        conn_closed(cls, socket_context);
}

/* ---- a request's phases (from the connection's own MHD thread) ---- */

static fe_conn_t *conn_of(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void set_mhd_timeout(fe_conn_t *e, unsigned seconds) {
    if (e->mhd_timeout_s == seconds) return;
    e->mhd_timeout_s = seconds;
    MHD_set_connection_option(e->conn, MHD_CONNECTION_OPTION_TIMEOUT, seconds);
}

fe_conn_verdict_t fe_http_conns_request(srv_t *s, struct MHD_Connection *conn) {
    fe_conn_t *e = conn_of(conn);
    if (!e) return FE_CONN_OK;
    pthread_mutex_lock(&s->conn_mu);
    fe_conn_verdict_t v = e->closing ? FE_CONN_CLOSED : e->verdict;
    if (!e->closing) {
        e->phase = CP_REQUEST;
        e->since_ns = lt_now_ns();
        e->deadline_ns = 0;
    }
    pthread_mutex_unlock(&s->conn_mu);
    if (v == FE_CONN_OK) set_mhd_timeout(e, s->header_timeout_s); /* the body's */
    return v;
}

void fe_http_conns_body_done(srv_t *s, struct MHD_Connection *conn) {
    fe_conn_t *e = conn_of(conn);
    if (e) set_mhd_timeout(e, s->idle_timeout_s); /* the response's, then keep-alive's */
}

void fe_http_conns_completed(srv_t *s, struct MHD_Connection *conn) {
    fe_conn_t *e = conn_of(conn);
    if (!e) return;
    pthread_mutex_lock(&s->conn_mu);
    if (!e->closing) {
        e->phase = CP_IDLE;
        e->since_ns = lt_now_ns();
        e->deadline_ns = e->since_ns + (uint64_t)s->idle_timeout_s * 1000000000ull;
    }
    pthread_mutex_unlock(&s->conn_mu);
}

/* ---- the main thread ---- */

void fe_http_conns_tick(srv_t *s) {
    uint64_t now = lt_now_ns();
    pthread_mutex_lock(&s->conn_mu);
    for (fe_conn_t *e = s->conns; e; e = e->next) {
        if (e->closing || !e->deadline_ns || now < e->deadline_ns) continue;
        atomic_fetch_add(e->phase == CP_IDLE ? &s->n_conn_idle_closed : &s->n_conn_timed_out, 1);
        conn_close(s, e);
    }
    pthread_mutex_unlock(&s->conn_mu);
}

void fe_http_conns_count(srv_t *s, int *n_headers, int *n_request, int *n_idle, int *n_over) {
    *n_headers = *n_request = *n_idle = *n_over = 0;
    pthread_mutex_lock(&s->conn_mu);
    for (fe_conn_t *e = s->conns; e; e = e->next) {
        if (e->closing) continue;
        if (e->verdict != FE_CONN_OK)
            (*n_over)++;
        else if (e->phase == CP_HEADERS)
            (*n_headers)++;
        else if (e->phase == CP_REQUEST)
            (*n_request)++;
        else
            (*n_idle)++;
    }
    pthread_mutex_unlock(&s->conn_mu);
}
