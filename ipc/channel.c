/*
 * channel.c — thin ZeroMQ wrappers: one envelope per message, ROUTER identities as an extra
 * leading frame, explicit timeouts with IPC_AGAIN instead of blocking by default, linger 0 so a
 * dying process never hangs in close, and a size limit on every receiving socket.
 *
 * A received message stays in the socket's zmq_msg_t, so receiving hands out a view and copies
 * nothing; ZeroMQ itself copies on send and allocates for messages above 33 bytes, which is why
 * the ring, not these sockets, carries the per-step broadcast.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "ipc_priv.h"

#define MAX_BOUND 4

struct ipc_ctx {
    void *zmq;
};

struct ipc_sock {
    void *z;
    ipc_sock_type_t type;
    zmq_msg_t msg; /* the last message received: what ipc_sock_recv's view points into */
    char bound[MAX_BOUND][256]; /* ipc:// endpoints bound, unlinked on destroy */
};

static const char *const type_names[] = {"ROUTER", "DEALER", "PUSH", "PULL", "PUB", "XPUB", "SUB"};

void *ipc_sock_zmq(ipc_sock_t *s) {
    return s->z;
}

void *ipc_ctx_zmq(ipc_ctx_t *c) {
    return c->zmq;
}

/* ---- context ---- */

int ipc_ctx_create(ipc_ctx_t **out, char *err) {
    *out = NULL;
    ipc_ctx_t *c = calloc(1, sizeof *c);
    if (!c) return lt_errf(err, LT_ERR_NOMEM, "zmq: out of memory");
    if (!(c->zmq = zmq_ctx_new())) {
        free(c);
        return lt_errf(err, LT_ERR_IO, "zmq: cannot create a context: %s",
                       zmq_strerror(zmq_errno()));
    }
    *out = c;
    return 0;
}

void ipc_ctx_destroy(ipc_ctx_t **ctx) {
    if (!ctx || !*ctx) return;
    /* Every socket has linger 0, so termination does not wait for unsent messages. */
    while (zmq_ctx_term((*ctx)->zmq) != 0 && zmq_errno() == EINTR) {
    }
    free(*ctx);
    *ctx = NULL;
}

/* ---- sockets ---- */

static int zerr(char *err, const ipc_sock_t *s, const char *what) {
    int e = zmq_errno();
    if (e == EAGAIN || e == EINTR)
        return lt_errf(err, IPC_AGAIN, "zmq %s: %s: would block", type_names[s->type], what);
    if (e == EHOSTUNREACH)
        return lt_errf(err, LT_ERR_NOTFOUND, "zmq %s: %s: peer is gone", type_names[s->type], what);
    return lt_errf(err, LT_ERR_IO, "zmq %s: %s: %s", type_names[s->type], what, zmq_strerror(e));
}

int ipc_sock_create(ipc_ctx_t *ctx, ipc_sock_type_t type, size_t max_msg, ipc_sock_t **out,
                    char *err) {
    static const int ztype[] = {ZMQ_ROUTER, ZMQ_DEALER, ZMQ_PUSH, ZMQ_PULL,
                                ZMQ_PUB,    ZMQ_XPUB,   ZMQ_SUB};
    *out = NULL;
    if (!ctx || (unsigned)type > IPC_SUB)
        return lt_errf(err, LT_ERR_INVAL, "zmq: bad context or socket type");
    ipc_sock_t *s = calloc(1, sizeof *s);
    if (!s) return lt_errf(err, LT_ERR_NOMEM, "zmq: out of memory");
    s->type = type;
    zmq_msg_init(&s->msg);
    if (!(s->z = zmq_socket(ctx->zmq, ztype[type]))) {
        int rc = zerr(err, s, "socket");
        zmq_msg_close(&s->msg);
        free(s);
        return rc;
    }
    int zero = 0, one = 1;
    int64_t maxsz =
        max_msg ? (int64_t)max_msg : (int64_t)IPC_MAX_PAYLOAD_DEF + IPC_ENVELOPE_OVERHEAD;
    bool receives = type == IPC_ROUTER || type == IPC_DEALER || type == IPC_PULL ||
                    type == IPC_SUB || type == IPC_XPUB;
    int rc = zmq_setsockopt(s->z, ZMQ_LINGER, &zero, sizeof zero);
    if (!rc && receives) rc = zmq_setsockopt(s->z, ZMQ_MAXMSGSIZE, &maxsz, sizeof maxsz);
    if (!rc && type == IPC_ROUTER)
        rc = zmq_setsockopt(s->z, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (!rc && (type == IPC_PUB || type == IPC_XPUB))
        rc = zmq_setsockopt(s->z, ZMQ_SNDHWM, &zero, sizeof zero);
    if (!rc && type == IPC_XPUB) rc = zmq_setsockopt(s->z, ZMQ_XPUB_VERBOSE, &one, sizeof one);
    if (!rc && type == IPC_SUB) rc = zmq_setsockopt(s->z, ZMQ_RCVHWM, &zero, sizeof zero);
    if (!rc && type == IPC_SUB) rc = zmq_setsockopt(s->z, ZMQ_SUBSCRIBE, "", 0);
    if (rc) {
        rc = zerr(err, s, "setsockopt");
        ipc_sock_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

void ipc_sock_destroy(ipc_sock_t **sp) {
    if (!sp || !*sp) return;
    ipc_sock_t *s = *sp;
    zmq_msg_close(&s->msg);
    if (s->z) zmq_close(s->z);
    for (int i = 0; i < MAX_BOUND; i++)
        if (s->bound[i][0]) ipc_endpoint_unlink(s->bound[i]);
    free(s);
    *sp = NULL;
}

int ipc_sock_set_id(ipc_sock_t *s, const void *id, size_t len, char *err) {
    if (len == 0 || len > 255)
        return lt_errf(err, LT_ERR_INVAL, "zmq: routing id of %zu bytes (1..255)", len);
    if (zmq_setsockopt(s->z, ZMQ_ROUTING_ID, id, len)) return zerr(err, s, "routing id");
    return 0;
}

int ipc_sock_bind(ipc_sock_t *s, const char *endpoint, char *err) {
    if (zmq_bind(s->z, endpoint)) {
        int rc = zerr(err, s, "bind");
        if (err) {
            size_t k = strlen(err);
            snprintf(err + k, LT_ERR_LEN - k, " (%s)", endpoint);
        }
        return rc;
    }
    if (strncmp(endpoint, "ipc://", 6) == 0 && strlen(endpoint) < sizeof s->bound[0]) {
        for (int i = 0; i < MAX_BOUND; i++)
            if (!s->bound[i][0]) {
                strcpy(s->bound[i], endpoint);
                break;
            }
    }
    return 0;
}

int ipc_sock_connect(ipc_sock_t *s, const char *endpoint, char *err) {
    if (zmq_connect(s->z, endpoint)) {
        int rc = zerr(err, s, "connect");
        if (err) {
            size_t k = strlen(err);
            snprintf(err + k, LT_ERR_LEN - k, " (%s)", endpoint);
        }
        return rc;
    }
    return 0;
}

int ipc_sock_endpoint(ipc_sock_t *s, char *buf, size_t n, char *err) {
    size_t sz = n;
    if (zmq_getsockopt(s->z, ZMQ_LAST_ENDPOINT, buf, &sz)) return zerr(err, s, "last endpoint");
    return 0;
}

/* Waits up to timeout_ms (> 0) for `events` on one socket: 1 ready, 0 not. */
static int wait_one(ipc_sock_t *s, short events, int timeout_ms) {
    zmq_pollitem_t it = {.socket = s->z, .events = events};
    int n = zmq_poll(&it, 1, timeout_ms);
    return n > 0 && (it.revents & events);
}

int ipc_sock_send(ipc_sock_t *s, const ipc_peer_t *to, const void *data, size_t len, int timeout_ms,
                  char *err) {
    if (s->type == IPC_ROUTER && (!to || to->len == 0))
        return lt_errf(err, LT_ERR_INVAL, "zmq ROUTER: send without a peer id");
    if (timeout_ms > 0 && !wait_one(s, ZMQ_POLLOUT, timeout_ms))
        return lt_errf(err, IPC_AGAIN, "zmq %s: send: not writable within %d ms",
                       type_names[s->type], timeout_ms);
    int flags = timeout_ms >= 0 ? ZMQ_DONTWAIT : 0;
    if (s->type == IPC_ROUTER && zmq_send(s->z, to->id, to->len, flags | ZMQ_SNDMORE) < 0)
        return zerr(err, s, "send");
    /* A multipart message is atomic: once its first frame is queued, the rest are too. */
    if (zmq_send(s->z, data, len, flags) < 0) return zerr(err, s, "send");
    return 0;
}

/* Discards the remaining frames of a message. */
static void drain(ipc_sock_t *s) {
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(s->z, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, s->z, 0);
        zmq_msg_close(&m);
    }
}

int ipc_sock_recv(ipc_sock_t *s, ipc_peer_t *from, const void **data, size_t *len, int timeout_ms,
                  char *err) {
    *data = NULL;
    *len = 0;
    if (s->type == IPC_ROUTER && !from)
        return lt_errf(err, LT_ERR_INVAL, "zmq ROUTER: receive without a peer buffer");
    if (timeout_ms > 0 && !wait_one(s, ZMQ_POLLIN, timeout_ms))
        return lt_errf(err, IPC_AGAIN, "zmq %s: nothing received within %d ms", type_names[s->type],
                       timeout_ms);
    int flags = timeout_ms >= 0 ? ZMQ_DONTWAIT : 0;
    int more = 0;
    size_t sz = sizeof more;
    if (s->type == IPC_ROUTER) {
        int n = zmq_recv(s->z, from->id, sizeof from->id, flags);
        if (n < 0) return zerr(err, s, "recv");
        zmq_getsockopt(s->z, ZMQ_RCVMORE, &more, &sz);
        if (!more || n == 0 || n > (int)sizeof from->id)
            return lt_errf(err, LT_ERR_FORMAT, "zmq ROUTER: message without a payload frame");
        from->len = (uint8_t)n;
        flags = 0; /* the rest of a multipart message is already here */
    }
    if (zmq_msg_recv(&s->msg, s->z, flags) < 0) return zerr(err, s, "recv");
    if (zmq_getsockopt(s->z, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        drain(s);
        return lt_errf(err, LT_ERR_FORMAT, "zmq %s: message with more than one payload frame",
                       type_names[s->type]);
    }
    *data = zmq_msg_data(&s->msg);
    *len = zmq_msg_size(&s->msg);
    return 0;
}

int ipc_sock_recv_envelope(ipc_sock_t *s, ipc_peer_t *from, ipc_envelope_t *env, int timeout_ms,
                           char *err) {
    const void *data;
    size_t len;
    int rc = ipc_sock_recv(s, from, &data, &len, timeout_ms, err);
    if (rc) return rc;
    return ipc_envelope_decode(data, len, env, err);
}

int ipc_poll(ipc_poll_item_t *items, int n, int timeout_ms, char *err) {
    if (n < 0 || n > IPC_POLL_MAX)
        return lt_errf(err, LT_ERR_INVAL, "ipc_poll: %d items (at most %d)", n, IPC_POLL_MAX);
    zmq_pollitem_t zi[IPC_POLL_MAX];
    for (int i = 0; i < n; i++) {
        zi[i] =
            (zmq_pollitem_t){.socket = items[i].sock ? items[i].sock->z : NULL,
                             .fd = items[i].fd,
                             .events = (short)((items[i].events & IPC_POLLIN ? ZMQ_POLLIN : 0) |
                                               (items[i].events & IPC_POLLOUT ? ZMQ_POLLOUT : 0))};
        items[i].revents = 0;
    }
    int r = zmq_poll(zi, n, timeout_ms);
    if (r < 0) {
        if (zmq_errno() == EINTR) return 0;
        return lt_errf(err, LT_ERR_IO, "ipc_poll: %s", zmq_strerror(zmq_errno()));
    }
    for (int i = 0; i < n; i++)
        items[i].revents = (short)((zi[i].revents & ZMQ_POLLIN ? IPC_POLLIN : 0) |
                                   (zi[i].revents & ZMQ_POLLOUT ? IPC_POLLOUT : 0));
    return r;
}
