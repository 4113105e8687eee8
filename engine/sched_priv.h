/*
 * sched_priv.h — the scheduler's internal state, shared by sched.c (adding, stepping, updating)
 * and sched_info.c (stats, listing, dumps). Not a public header: nothing outside engine/
 * includes it.
 */
#ifndef ENG_SCHED_PRIV_H
#define ENG_SCHED_PRIV_H

#include "engine.h"
#include "step_model.h"

typedef enum { RS_WAITING = 0, RS_RUNNING, RS_FINISHED } eng_rstate_t;

/* One request, allocated once at add with room for its whole life (prompt + max_tokens tokens,
 * the blocks they need, its stop ids), freed at the step after it finishes. */
typedef struct eng_req {
    uint64_t id;
    uint64_t order; /* FCFS priority: add order, lower first */
    const void *user;
    int32_t *tokens; /* (cap_tokens) prompt, then outputs */
    int n_prompt, n_tokens, cap_tokens;
    int num_computed; /* tokens whose KV is (being) computed; the rest must be fed */
    int max_tokens, min_tokens;
    bool ignore_eos;
    int32_t eos_id;
    int32_t *stop_ids; /* (n_stop) */
    int n_stop;
    eng_kv_seq_t kv; /* block table, storage after the tokens */
    int n_cached_tokens;
    eng_rstate_t state;
    bool known;   /* workers hold state for it: report it in finished_ids */
    bool resumed; /* preempted since it was last scheduled: flag NEW|RESUMED */
    eng_finish_t finish;
    int32_t stop_token;
    eng_req_events_t ev;
    struct eng_req *prev, *next; /* waiting queue (doubly) or released list (next only) */
    struct eng_req *hnext;       /* id map chain */
} eng_req_t;

struct eng_sched {
    eng_sched_config_t cfg;
    eng_kv_t *kv;

    /* id -> request, chained; grows only in add */
    eng_req_t **map;
    uint64_t map_mask;
    int n_reqs; /* every request held, finished-not-released included */
    uint64_t next_order;

    eng_req_t **running; /* (max_num_seqs) sorted by order */
    int n_running;
    eng_req_t *wait_head, *wait_tail;
    int n_waiting, n_preempted_waiting;
    eng_req_t *done_head, *done_tail; /* finished, released by the next step */
    int n_done;

    /* the plan being built / in flight, all (max_num_seqs) or (max_num_batched_tokens) */
    uint64_t step_id;
    bool in_flight;
    eng_plan_seq_t *p_seqs;
    eng_req_t **p_reqs;
    int32_t *p_tokens, *p_pos, *p_seq_idx;
    const int32_t **p_tables;
    int32_t *p_table_lens;
    int32_t *p_sample_rows, *p_sample_seqs;
    uint64_t *p_finished, *p_preempted;
    int32_t *hit_buf; /* (max blocks of one request) */
    eng_output_t *outputs;

    eng_step_info_t steps[ENG_STEP_HISTORY];
    uint64_t n_steps_recorded;

    /* --max-step-ms: the step-time model, the in-flight step's features, and the prefill cap the
     * last step had (-1: none: nothing decoding, or off) */
    eng_step_model_t model;
    double step_x[ENG_STEP_FEATURES];
    int last_prefill_cap;

    uint64_t num_preemptions, num_prefill_tokens, num_generation_tokens;
    uint64_t num_finished[ENG_FINISH_COUNT];
};

eng_phase_t eng_req_phase(const eng_req_t *r);
eng_req_t *eng_sched_find(const eng_sched_t *s, uint64_t id);

#endif
