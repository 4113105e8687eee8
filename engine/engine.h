/*
 * engine.h — the engine-core's scheduling brain: the paged KV block manager with prefix caching
 * (eng_kv_*) and the continuous-batching scheduler with chunked prefill and preemption by
 * recompute (eng_sched_*).
 *
 * Both are pure, deterministic libraries: no processes, no I/O except eng_sched_dump(), no
 * clocks — every timestamp is passed in by the caller (monotonic nanoseconds, lt_now_ns()), so
 * the same calls with the same timestamps always give the same plans.
 *
 * Thread safety: none. An eng_sched_t / eng_kv_t belongs to one thread, the engine-core's main
 * loop; the loop alternates eng_sched_step() (plan a step) and eng_sched_update() (apply the
 * sampled tokens); eng_sched_add() and eng_sched_abort() may be called between any two of them.
 *
 * Ownership: the scheduler copies everything it is given at eng_sched_add() (prompt, stop ids)
 * except `user`, an opaque pointer it echoes back and never dereferences. Plans and outputs are
 * views into the scheduler's own preallocated storage, valid until the next eng_sched_step();
 * the caller never frees them.
 *
 * Hot path: eng_sched_step() and eng_sched_update() allocate nothing; every array they fill is
 * sized at eng_sched_create() from max_num_seqs, max_num_batched_tokens and max_model_len.
 * Allocation happens only in eng_sched_add() (one block per request, sized for its whole life);
 * requests are released (free) in the eng_sched_step() after they finish.
 */
#ifndef ENG_ENGINE_H
#define ENG_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A normal, non-error return: "not now, nothing changed" (not enough free KV blocks). */
#define ENG_AGAIN 1

/* ==== KV block manager ==== */

/*
 * The cache is num_blocks blocks of block_size token slots; the workers hold the memory, this
 * manager only hands out block ids. A sequence's block table maps position p to block
 * table[p / block_size].
 *
 * Prefix caching: a *full* block is identified by a chained 64-bit hash of (its parent block's
 * hash, its block_size token ids). Full blocks are registered in a hash table as they are
 * computed; a new sequence reuses the longest run of cached full blocks matching its tokens
 * (refcount++), never including its last token (one token at least must be computed to produce
 * logits). Hash collisions cannot give a wrong hit: a candidate must also have exactly the same
 * token ids and the same parent *content id* (a number unique to each distinct registered prefix),
 * so a hit is exact by induction over the chain. A released block with a hash keeps its contents,
 * refcount 0, in an LRU list; it is evicted (unregistered and reused) only when no never-cached
 * block is free. A sequence releases its blocks last-first, so a prefix's tail is evicted before
 * its head.
 */
typedef struct eng_kv eng_kv_t;

/* A sequence's block table. The storage is the caller's (cap entries); the manager fills it. */
typedef struct eng_kv_seq {
    int32_t *blocks; /* (cap) block ids; [0, n_blocks) are held by this sequence */
    int n_blocks;
    int cap;
    int n_full; /* leading blocks whose contents are hashed (full and computed) */
} eng_kv_seq_t;

typedef struct eng_kv_stats {
    int num_blocks;
    int used;     /* refcount > 0 */
    int free;     /* never cached or invalidated: reused first */
    int cached;   /* refcount 0 but holding a registered prefix: reusable, evictable (LRU) */
    double usage; /* used / num_blocks, vLLM's kv_cache_usage */
    uint64_t prefix_queries; /* tokens looked up at admission (vLLM prefix_cache_queries) */
    uint64_t prefix_hits;    /* of which found in the cache (vLLM prefix_cache_hits) */
    uint64_t evictions;      /* cached blocks reused for other contents */
} eng_kv_stats_t;

/* Hash of one full block given its parent's hash (ENG_KV_ROOT_HASH for the first block). */
typedef uint64_t (*eng_kv_hash_fn)(uint64_t parent, const int32_t *tokens, int n);
#define ENG_KV_ROOT_HASH 0x6c616e7465726e31ull

/* The default hash: an xxhash-style multiply-rotate over the token ids, seeded with the parent. */
uint64_t eng_kv_hash_block(uint64_t parent, const int32_t *tokens, int n);

int eng_kv_create(int num_blocks, int block_size, bool enable_prefix_caching, eng_kv_t **out,
                  char *err);
void eng_kv_destroy(eng_kv_t **kv);

int eng_kv_block_size(const eng_kv_t *kv);
/* Blocks an allocation can draw on now: free plus evictable cached. */
int eng_kv_num_available(const eng_kv_t *kv);
/* Blocks seq needs beyond those it holds to cover n_slots token slots. */
int eng_kv_blocks_needed(const eng_kv_t *kv, const eng_kv_seq_t *seq, int n_slots);

/* Finds the longest run of cached full blocks equal to tokens' leading blocks, at most
 * (n_tokens - 1) / block_size and at most max_blocks, writing their ids to out. Takes no
 * reference. *n_evictable (may be NULL) receives how many of them have refcount 0: acquiring them
 * removes them from the available pool. Returns the number of blocks (0 without prefix caching).
 */
int eng_kv_match_prefix(const eng_kv_t *kv, const int32_t *tokens, int n_tokens, int32_t *out,
                        int max_blocks, int *n_evictable);

/* Starts the empty seq with the n blocks eng_kv_match_prefix() found (refcount++ each) and counts
 * the lookup in the prefix-cache statistics: n_query_tokens queried, n * block_size hit. */
int eng_kv_seq_acquire(eng_kv_t *kv, eng_kv_seq_t *seq, const int32_t *blocks, int n,
                       int n_query_tokens);

/* Grows seq's table to cover n_slots token slots. Returns 0, ENG_AGAIN when not enough blocks are
 * available (nothing allocated), or LT_ERR_RANGE when the table's storage is too small. */
int eng_kv_seq_alloc(eng_kv_t *kv, eng_kv_seq_t *seq, int n_slots);

/* Registers the blocks of seq that tokens[0, n_computed) fill completely (prefix caching on).
 * Call once their contents are being computed: a later lookup may hand them to another sequence.
 */
void eng_kv_seq_commit(eng_kv_t *kv, eng_kv_seq_t *seq, const int32_t *tokens, int n_computed);

/* Releases every block of seq (last first) and empties it. Cached blocks stay as cache. */
void eng_kv_seq_free(eng_kv_t *kv, eng_kv_seq_t *seq);

void eng_kv_get_stats(const eng_kv_t *kv, eng_kv_stats_t *st);

/* Introspection for tests and dumps. */
int eng_kv_block_ref(const eng_kv_t *kv, int32_t block);
bool eng_kv_block_cached(const eng_kv_t *kv, int32_t block);

/* Test hook: replaces the block hash (NULL restores eng_kv_hash_block), e.g. with a constant to
 * force collisions. Only on an empty cache (nothing cached): returns LT_ERR_INVAL otherwise. */
int eng_kv_set_hash_fn(eng_kv_t *kv, eng_kv_hash_fn fn);

/* ==== scheduler ==== */

typedef struct eng_sched eng_sched_t;

typedef struct eng_sched_config {
    int num_blocks;                   /* KV blocks (required); max_model_len must fit in them */
    int block_size;                   /* token slots per block (IPC_DEF_BLOCK_SIZE) */
    int max_num_seqs;                 /* running sequences at most (IPC_DEF_MAX_NUM_SEQS) */
    int max_num_batched_tokens;       /* tokens per step at most (IPC_DEF_MAX_BATCHED_TOKENS) */
    int max_model_len;                /* prompt + output tokens at most, default 2048 */
    bool enable_prefix_caching;       /* default true */
    bool enable_chunked_prefill;      /* default true; false: a prompt is computed in one step, so
                                         max_num_batched_tokens must be >= max_model_len */
    int long_prefill_token_threshold; /* > 0: at most this many tokens per sequence per step */
    int max_step_ms; /* > 0: while sequences decode, prefill only what the step-time model
                        (step_model.h) says fits in this many ms beside them (--max-step-ms) */
    int vocab_size;  /* > 0: token ids are checked against it; 0: only checked >= 0 */
} eng_sched_config_t;

void eng_sched_config_defaults(eng_sched_config_t *c);

/* Validates c (every field, and that max_model_len fits in the cache) and preallocates the
 * scheduler, its KV manager and every per-step array. */
int eng_sched_create(const eng_sched_config_t *c, eng_sched_t **out, char *err);
/* Frees the scheduler and every request in it; *s becomes NULL. */
void eng_sched_destroy(eng_sched_t **s);

/* ---- requests ---- */

typedef struct eng_req_params {
    uint64_t id;           /* unique among the requests the scheduler holds */
    const int32_t *prompt; /* (n_prompt) copied */
    int n_prompt;          /* >= 1 */
    int max_tokens;        /* >= 1; <= 0: as many as max_model_len leaves */
    int min_tokens;        /* EOS and stop tokens do not stop before this many outputs */
    bool ignore_eos;
    int32_t eos_id;                /* < 0: none */
    const int32_t *stop_token_ids; /* (n_stop_token_ids) copied */
    int n_stop_token_ids;
    uint64_t arrival_ns; /* when the request arrived (frontend clock); 0: now_ns of the add */
    const void *user;    /* the caller's (sampling params, span...): echoed, never dereferenced */
} eng_req_params_t;

/* Queues a request (FCFS: at the back of the waiting queue). Validates: a non-empty prompt with
 * ids in range, max_tokens and min_tokens consistent, prompt + max_tokens <= max_model_len (the
 * message gives both numbers), the id not in use. Allocates the request's storage. */
int eng_sched_add(eng_sched_t *s, const eng_req_params_t *p, uint64_t now_ns, char *err);

/* Aborts a waiting or running request: frees its blocks, finishes it with ENG_FINISH_ABORT. Its
 * id is listed in the next plan's finished_ids if workers knew it. Safe while a step is in
 * flight: the request's plan entry is then skipped by eng_sched_update(). LT_ERR_NOTFOUND if the
 * id is unknown or already finished. */
int eng_sched_abort(eng_sched_t *s, uint64_t id, uint64_t now_ns);

/* True while any request waits or runs. */
bool eng_sched_has_work(const eng_sched_t *s);

/* ---- step plan ---- */

enum {
    ENG_SEQ_NEW = 1 << 0,     /* first time scheduled since add or since a preemption: workers
                                 (re)create per-request state from `user`'s sampling params */
    ENG_SEQ_RESUMED = 1 << 1, /* with NEW, after a preemption: a worker still holding the
                                 request's generator keeps it, so seeded outputs do not change */
};

typedef struct eng_plan_seq {
    uint64_t id;
    const void *user;
    const int32_t *tokens; /* (n_tokens) the tokens to compute, borrowed */
    int n_tokens;
    int start_pos;              /* position of tokens[0]; positions before it are in the cache */
    const int32_t *block_table; /* (n_blocks) the whole table, borrowed */
    int n_blocks;
    int n_prompt;  /* the request's prompt length: tokens at positions >= n_prompt are outputs */
    bool sample;   /* the chunk reaches the end: sample a token from its last row's logits */
    uint8_t flags; /* ENG_SEQ_* */
} eng_plan_seq_t;

/* One step. Every pointer is into the scheduler, valid until the next eng_sched_step(). The flat
 * arrays are a ready-made wk_batch_t: tokens/pos/seq_idx per row, block_tables/block_table_lens
 * per sequence, sample_rows the rows whose logits are sampled, in plan order. */
typedef struct eng_plan {
    uint64_t step_id;
    uint64_t now_ns;
    int n_seqs;
    const eng_plan_seq_t *seqs;         /* (n_seqs) running ones first, then newly admitted */
    int n_tokens;                       /* sum of seqs[].n_tokens <= max_num_batched_tokens */
    const int32_t *tokens;              /* (n_tokens) */
    const int32_t *pos;                 /* (n_tokens) */
    const int32_t *seq_idx;             /* (n_tokens) index into seqs */
    const int32_t *const *block_tables; /* (n_seqs) */
    const int32_t *block_table_lens;    /* (n_seqs) */
    int n_sampled;
    const int32_t *sample_rows; /* (n_sampled) row of each sampled sequence's last token */
    const int32_t *sample_seqs; /* (n_sampled) index into seqs */
    int n_finished;
    const uint64_t *finished_ids; /* finished or aborted since the last plan: workers drop them */
    int n_preempted;
    const uint64_t *preempted_ids; /* preempted by this step (their KV blocks are gone) */
} eng_plan_t;

/* Plans the next step at now_ns: running sequences first in arrival order (a decode is 1 token,
 * a sequence still computing its prompt gets the next chunk within the remaining token budget),
 * then waiting requests in FCFS order while a sequence slot, budget and blocks remain (their first
 * chunk may be partial). When a running sequence needs a block and none is available, the
 * latest-arrived running sequence is preempted (possibly itself) and recomputed later. Allocates
 * the step's blocks. An empty plan (n_seqs == 0) needs no update; otherwise eng_sched_update()
 * must follow before the next step (LT_ERR_INVAL otherwise). Allocates nothing. HOT */
int eng_sched_step(eng_sched_t *s, uint64_t now_ns, eng_plan_t *plan);

typedef enum {
    ENG_FINISH_NONE = 0,
    ENG_FINISH_STOP,   /* EOS or a stop token id */
    ENG_FINISH_LENGTH, /* max_tokens or max_model_len */
    ENG_FINISH_ABORT,
    ENG_FINISH_COUNT
} eng_finish_t;

/* "stop", "length", "abort", or NULL for ENG_FINISH_NONE (OpenAI / vLLM finished_reason). */
const char *eng_finish_str(eng_finish_t f);

/* ---- per-request events ---- */

typedef enum {
    ENG_EV_ARRIVED = 0, /* arrival_ns given at add */
    ENG_EV_QUEUED,      /* added to the waiting queue */
    ENG_EV_SCHEDULED,   /* left the waiting queue (first time, and again after a preemption) */
    ENG_EV_FIRST_TOKEN,
    ENG_EV_PREEMPTED,
    ENG_EV_FINISHED,
} eng_event_type_t;

const char *eng_event_str(eng_event_type_t t);

#define ENG_REQ_MAX_EVENTS 16

typedef struct eng_event {
    uint64_t t_ns;
    eng_event_type_t type;
} eng_event_t;

/* A request's timeline. The log keeps the first events and always the FINISHED one; later
 * SCHEDULED/PREEMPTED pairs beyond the capacity are counted in n_dropped. The summary fields are
 * 0 until the event happens. */
typedef struct eng_req_events {
    uint64_t arrived_ns, queued_ns, first_scheduled_ns, first_token_ns, finished_ns;
    uint64_t last_preempted_ns;
    int n_preemptions;
    int n_events, n_dropped;
    eng_event_t log[ENG_REQ_MAX_EVENTS];
} eng_req_events_t;

/* ---- update ---- */

typedef struct eng_output {
    uint64_t id;
    const void *user;
    int32_t token; /* the token sampled this step, appended to the request's output */
    int n_output;  /* output tokens so far, this one included */
    int n_prompt;
    int n_cached_tokens;            /* prompt tokens found in the prefix cache at first admission */
    eng_finish_t finish;            /* ENG_FINISH_NONE while it goes on */
    int32_t stop_token;             /* the stop_token_ids entry that stopped it, or -1 */
    const eng_req_events_t *events; /* valid until the next eng_sched_step() */
} eng_output_t;

typedef struct eng_outputs {
    int n;
    const eng_output_t *items; /* (n) in plan order, valid until the next eng_sched_step() */
    int n_finished;            /* how many items have finish != NONE */
} eng_outputs_t;

/* Applies a step's results: sampled[i] is the token for the i-th sampled sequence of plan (plan
 * order, n_sampled of them). Appends each token, checks the stop conditions — EOS (unless
 * ignore_eos) and stop_token_ids once min_tokens outputs exist, then max_tokens and
 * max_model_len — and frees finished sequences' blocks (cached blocks stay as cache). Entries of
 * requests aborted while the step was in flight are skipped. On an error (wrong plan, count or a
 * token out of range) nothing changes. Allocates nothing. HOT */
int eng_sched_update(eng_sched_t *s, const eng_plan_t *plan, const int32_t *sampled, int n_sampled,
                     uint64_t now_ns, eng_outputs_t *out);

/* ---- introspection: stats, requests, dumps ---- */

typedef enum {
    ENG_PHASE_WAITING = 0, /* never scheduled */
    ENG_PHASE_PREFILL,     /* running, computing its prompt (or recomputing after preemption) */
    ENG_PHASE_DECODE,      /* running, one token per step */
    ENG_PHASE_PREEMPTED,   /* back in the waiting queue after a preemption */
    ENG_PHASE_FINISHED,    /* finished, released at the next step */
} eng_phase_t;

const char *eng_phase_str(eng_phase_t p);

typedef struct eng_req_info {
    uint64_t id;
    const void *user; /* the caller's, as given at eng_sched_add */
    eng_phase_t phase;
    int n_prompt;
    int n_computed; /* tokens whose KV is in the cache */
    int n_output;
    int n_cached_tokens;
    int n_blocks;
    int n_preemptions;
    uint64_t age_ns; /* now - arrival */
} eng_req_info_t;

#define ENG_STEP_HISTORY 64

typedef struct eng_step_info {
    uint64_t step_id;
    uint64_t start_ns; /* now_ns of the step */
    uint64_t dur_ns;   /* now_ns of its update - start_ns; 0 until updated */
    int n_seqs, n_tokens;
    int n_prefill_seqs; /* sequences that computed more than one token or did not sample */
    int n_preempted;
} eng_step_info_t;

typedef struct eng_sched_stats {
    int n_running, n_waiting;
    int n_preempted_waiting; /* of the waiting, those preempted */
    eng_kv_stats_t kv;
    uint64_t num_steps;
    uint64_t num_preemptions;
    uint64_t num_prefill_tokens;    /* tokens computed outside decodes: prompts and recomputes
                                       (prefix-cache hits excluded) */
    uint64_t num_generation_tokens; /* tokens sampled */
    uint64_t num_finished[ENG_FINISH_COUNT];
} eng_sched_stats_t;

void eng_sched_get_stats(const eng_sched_t *s, eng_sched_stats_t *st);

/* Fills up to cap entries (running first, then waiting, then finished-not-yet-released) and
 * returns how many requests there are in all. */
int eng_sched_list(const eng_sched_t *s, uint64_t now_ns, eng_req_info_t *out, int cap);

/* One request's info / timeline; LT_ERR_NOTFOUND / NULL if the scheduler no longer holds it (a
 * finished request is held until the next eng_sched_step()). */
int eng_sched_get(const eng_sched_t *s, uint64_t id, uint64_t now_ns, eng_req_info_t *out);
const eng_req_events_t *eng_sched_events(const eng_sched_t *s, uint64_t id);

/* A step's duration is recorded as (now_ns of its update - now_ns of its step); a caller that
 * measures it differently (e.g. the workers' forward time) overrides it here. LT_ERR_NOTFOUND once
 * the step has left the history. */
int eng_sched_set_step_duration(eng_sched_t *s, uint64_t step_id, uint64_t dur_ns);

/* Up to cap of the last ENG_STEP_HISTORY steps, newest first; returns the count. */
int eng_sched_recent_steps(const eng_sched_t *s, eng_step_info_t *out, int cap);

/* The scheduler's KV manager, for introspection and test hooks. */
eng_kv_t *eng_sched_kv(eng_sched_t *s);

/* Names a request for a dump, from its `user` pointer: writes a label (e.g. "req=<id>") into buf.
 */
typedef void (*eng_req_label_fn)(const void *user, char *buf, size_t n);

/* Writes a readable state dump (counters, KV usage, every request with phase and age, recent
 * steps) for SIGUSR1; label (may be NULL) names each request. now_ns is only used for ages. */
void eng_sched_dump(const eng_sched_t *s, uint64_t now_ns, eng_req_label_fn label, FILE *f);

#endif
