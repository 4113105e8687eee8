/*
 * fuzz_msg.c — libFuzzer target for the message payload readers beyond the envelope (ipc/msg.c):
 * ADD, ABORT, OUTPUT, STEP, RESULT, HELLO and ERROR. Any byte string is decoded as an envelope
 * and, when that passes, read by the reader its type names (and by one other reader, which must
 * refuse or read it without harm). Invariant: a payload a reader accepts is written back by the
 * matching writer, and that message decodes and reads again to the same values (ids, counts,
 * token ids, parameters). Build: the `fuzz` preset (tests/fuzz/README.md); the seeds in
 * tests/fuzz/corpus_msg/ are replayed by ctest (fuzz_msg_corpus) in every build.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"
#include "msg.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

enum { CAP_TOK = 256, CAP_SEQ = 32, MAX_BLK = 16, CAP_NEW = 8, MAX_PROMPT = 64, CAP_FIN = 32 };

typedef struct step_store {
    int32_t tokens[CAP_TOK], pos[CAP_TOK], seq_idx[CAP_TOK];
    uint64_t seq_ids[CAP_SEQ];
    int32_t table_lens[CAP_SEQ], tables[CAP_SEQ * MAX_BLK];
    int32_t sample_rows[CAP_TOK], sample_seqs[CAP_TOK];
    ipc_step_new_t news[CAP_NEW];
    int32_t new_prompts[CAP_NEW * MAX_PROMPT];
    uint64_t finished[CAP_FIN];
} step_store_t;

static void step_bind(ipc_step_t *s, step_store_t *st) {
    memset(s, 0, sizeof *s);
    memset(st, 0, sizeof *st);
    s->tokens = st->tokens, s->pos = st->pos, s->seq_idx = st->seq_idx;
    s->seq_ids = st->seq_ids, s->table_lens = st->table_lens, s->tables = st->tables;
    s->sample_rows = st->sample_rows, s->sample_seqs = st->sample_seqs;
    s->news = st->news, s->new_prompts = st->new_prompts, s->finished = st->finished;
    s->cap_tokens = CAP_TOK, s->cap_seqs = CAP_SEQ, s->max_blocks = MAX_BLK;
    s->cap_new = CAP_NEW, s->max_prompt = MAX_PROMPT, s->cap_finished = CAP_FIN;
}

static ipc_envelope_t env2;
static ipc_writer_t wr;

/* decodes the writer's message into env2 (which must pass) */
static void redecode(const void *data, size_t len) {
    char err[LT_ERR_LEN];
    CHECK(ipc_envelope_decode(data, len, &env2, err) == 0);
}

static void add_case(const ipc_envelope_t *env) {
    static int32_t p1[MAX_PROMPT], p2[MAX_PROMPT];
    ipc_add_t a = {.prompt = p1, .prompt_cap = MAX_PROMPT},
              b = {.prompt = p2, .prompt_cap = MAX_PROMPT};
    char err[LT_ERR_LEN];
    const void *data;
    size_t len;
    if (ipc_msg_add_read(env, &a, err) != 0) return;
    CHECK(a.n_prompt >= 0 && a.n_prompt <= MAX_PROMPT);
    if (ipc_msg_add_write(&wr, &a, &data, &len, err) != 0) return; /* e.g. a field out of range */
    redecode(data, len);
    CHECK(ipc_msg_add_read(&env2, &b, err) == 0);
    CHECK(a.id == b.id && a.n_prompt == b.n_prompt);
    CHECK(!memcmp(p1, p2, sizeof(int32_t) * (size_t)a.n_prompt));
    CHECK(!strcmp(a.ident.id, b.ident.id) && !strcmp(a.ident.traceparent, b.ident.traceparent));
    CHECK(a.params.max_tokens == b.params.max_tokens && a.params.has_seed == b.params.has_seed);
    CHECK(a.params.logprobs == b.params.logprobs);
}

static void abort_case(const ipc_envelope_t *env) {
    uint64_t id, id2;
    char err[LT_ERR_LEN], rid[IPC_REQUEST_ID_MAX + 1] = "";
    const void *data;
    size_t len;
    if (ipc_msg_abort_read(env, &id, err) != 0) return;
    if (env->request_id.ptr) {
        CHECK(env->request_id.len <= IPC_REQUEST_ID_MAX);
        memcpy(rid, env->request_id.ptr, env->request_id.len);
        rid[env->request_id.len] = '\0';
    }
    if (ipc_msg_abort_write(&wr, id, rid, &data, &len, err) != 0) return;
    redecode(data, len);
    CHECK(ipc_msg_abort_read(&env2, &id2, err) == 0 && id == id2);
}

static void output_case(const ipc_envelope_t *env) {
    static ipc_out_item_t i1[8], i2[8];
    ipc_output_t a = {.items = i1, .items_cap = 8}, b = {.items = i2, .items_cap = 8};
    char err[LT_ERR_LEN];
    const void *data;
    size_t len;
    if (ipc_msg_output_read(env, &a, err) != 0) return;
    CHECK(a.n_items >= 0 && a.n_items <= 8);
    for (int i = 0; i < a.n_items; i++)
        CHECK(i1[i].n_top >= 0 && i1[i].n_top <= IPC_MAX_LOGPROBS &&
              memchr(i1[i].rid, 0, sizeof i1[i].rid));
    if (ipc_msg_output_write(&wr, &a, &data, &len, err) != 0) return;
    redecode(data, len);
    CHECK(ipc_msg_output_read(&env2, &b, err) == 0);
    CHECK(a.step_id == b.step_id && a.n_items == b.n_items);
    for (int i = 0; i < a.n_items; i++) {
        CHECK(i1[i].id == i2[i].id && i1[i].token == i2[i].token && i1[i].finish == i2[i].finish);
        CHECK(i1[i].n_top == i2[i].n_top && !strcmp(i1[i].rid, i2[i].rid));
        CHECK(!memcmp(i1[i].top_ids, i2[i].top_ids, sizeof(int32_t) * (size_t)i1[i].n_top));
    }
}

static void step_case(const ipc_envelope_t *env) {
    static step_store_t s1, s2;
    ipc_step_t a, b;
    char err[LT_ERR_LEN];
    const void *data;
    size_t len;
    step_bind(&a, &s1);
    if (ipc_msg_step_read(env, &a, err) != 0) return;
    CHECK(a.n_tokens >= 0 && a.n_tokens <= CAP_TOK && a.n_seqs >= 0 && a.n_seqs <= CAP_SEQ);
    CHECK(a.n_new >= 0 && a.n_new <= CAP_NEW && a.n_finished >= 0 && a.n_finished <= CAP_FIN);
    CHECK(a.n_sampled >= 0 && a.n_sampled <= CAP_TOK);
    if (ipc_msg_step_write(&wr, &a, env->has_trace ? &env->trace : NULL, &data, &len, err) != 0)
        return;
    redecode(data, len);
    step_bind(&b, &s2);
    CHECK(ipc_msg_step_read(&env2, &b, err) == 0);
    CHECK(a.step_id == b.step_id && a.n_tokens == b.n_tokens && a.n_seqs == b.n_seqs);
    CHECK(a.n_new == b.n_new && a.n_finished == b.n_finished && a.n_sampled == b.n_sampled);
    CHECK(!memcmp(s1.tokens, s2.tokens, sizeof(int32_t) * (size_t)a.n_tokens));
    CHECK(!memcmp(s1.seq_ids, s2.seq_ids, sizeof(uint64_t) * (size_t)a.n_seqs));
    CHECK(!memcmp(s1.finished, s2.finished, sizeof(uint64_t) * (size_t)a.n_finished));
}

static void other_cases(const ipc_envelope_t *env) {
    static ipc_out_item_t items[8];
    ipc_result_t r = {.items = items, .cap = 8};
    ipc_hello_t h;
    int code;
    char err[LT_ERR_LEN], text[64];
    if (ipc_msg_result_read(env, &r, err) == 0) CHECK(r.n >= 0 && r.n <= 8);
    ipc_msg_hello_read(env, &h, err);
    if (ipc_msg_error_read(env, &code, text, sizeof text, err) == 0)
        CHECK(memchr(text, 0, sizeof text));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static ipc_envelope_t env;
    static int ready;
    char err[LT_ERR_LEN];
    if (!ready) {
        CHECK(ipc_envelope_init(&env, 1u << 20, err) == 0 &&
              ipc_envelope_init(&env2, 1u << 20, err) == 0);
        CHECK(ipc_writer_init(&wr, 4096, err) == 0);
        ready = 1;
    }
    if (ipc_envelope_decode(data, size, &env, err) != 0) {
        CHECK(err[0]);
        return 0;
    }
    switch (env.type) {
    case IPC_MSG_ADD: add_case(&env); break;
    case IPC_MSG_ABORT: abort_case(&env); break;
    case IPC_MSG_OUTPUT: output_case(&env); break;
    case IPC_MSG_STEP: step_case(&env); break;
    default: other_cases(&env); break;
    }
    /* a reader given another type's payload refuses it or reads it within bounds */
    if (env.type != IPC_MSG_STEP) step_case(&env);
    if (env.type != IPC_MSG_ADD) add_case(&env);
    return 0;
}
