/*
 * sched_info.c — the scheduler seen from outside: counters for /metrics, per-request phases and
 * timelines for tracing, recent step timings, and the readable dump SIGUSR1 asks for. Read-only
 * over the state sched.c keeps; nothing here is on the step path.
 */
#include <inttypes.h>

#include "lt.h"
#include "sched_priv.h"

/* ---- names ---- */

const char *eng_finish_str(eng_finish_t f) {
    switch (f) {
    case ENG_FINISH_STOP: return "stop";
    case ENG_FINISH_LENGTH: return "length";
    case ENG_FINISH_ABORT: return "abort";
    default: return NULL;
    }
}

const char *eng_event_str(eng_event_type_t t) {
    switch (t) {
    case ENG_EV_ARRIVED: return "arrived";
    case ENG_EV_QUEUED: return "queued";
    case ENG_EV_SCHEDULED: return "scheduled";
    case ENG_EV_FIRST_TOKEN: return "first_token";
    case ENG_EV_PREEMPTED: return "preempted";
    case ENG_EV_FINISHED: return "finished";
    }
    return "?";
}

const char *eng_phase_str(eng_phase_t p) {
    switch (p) {
    case ENG_PHASE_WAITING: return "waiting";
    case ENG_PHASE_PREFILL: return "prefill";
    case ENG_PHASE_DECODE: return "decode";
    case ENG_PHASE_PREEMPTED: return "preempted";
    case ENG_PHASE_FINISHED: return "finished";
    }
    return "?";
}

/* ---- requests ---- */

eng_phase_t eng_req_phase(const eng_req_t *r) {
    switch (r->state) {
    case RS_WAITING: return r->resumed ? ENG_PHASE_PREEMPTED : ENG_PHASE_WAITING;
    case RS_FINISHED: return ENG_PHASE_FINISHED;
    case RS_RUNNING: break;
    }
    /* decoding: outputs exist and at most the last sampled token is still to be fed */
    if (r->n_tokens > r->n_prompt && r->num_computed >= r->n_tokens - 1) return ENG_PHASE_DECODE;
    return ENG_PHASE_PREFILL;
}

static void req_info(const eng_req_t *r, uint64_t now_ns, eng_req_info_t *o) {
    o->id = r->id;
    o->user = r->user;
    o->phase = eng_req_phase(r);
    o->n_prompt = r->n_prompt;
    o->n_computed = r->num_computed;
    o->n_output = r->n_tokens - r->n_prompt;
    o->n_cached_tokens = r->n_cached_tokens;
    o->n_blocks = r->kv.n_blocks;
    o->n_preemptions = r->ev.n_preemptions;
    o->age_ns = now_ns > r->ev.arrived_ns ? now_ns - r->ev.arrived_ns : 0;
}

int eng_sched_list(const eng_sched_t *s, uint64_t now_ns, eng_req_info_t *out, int cap) {
    int n = 0;
    for (int i = 0; i < s->n_running; i++, n++)
        if (n < cap) req_info(s->running[i], now_ns, &out[n]);
    for (const eng_req_t *r = s->wait_head; r; r = r->next, n++)
        if (n < cap) req_info(r, now_ns, &out[n]);
    for (const eng_req_t *r = s->done_head; r; r = r->next, n++)
        if (n < cap) req_info(r, now_ns, &out[n]);
    return n;
}

int eng_sched_get(const eng_sched_t *s, uint64_t id, uint64_t now_ns, eng_req_info_t *out) {
    const eng_req_t *r = eng_sched_find(s, id);
    if (!r) return LT_ERR_NOTFOUND;
    req_info(r, now_ns, out);
    return 0;
}

const eng_req_events_t *eng_sched_events(const eng_sched_t *s, uint64_t id) {
    const eng_req_t *r = eng_sched_find(s, id);
    return r ? &r->ev : NULL;
}

/* ---- counters and steps ---- */

void eng_sched_get_stats(const eng_sched_t *s, eng_sched_stats_t *st) {
    st->n_running = s->n_running;
    st->n_waiting = s->n_waiting;
    st->n_preempted_waiting = s->n_preempted_waiting;
    eng_kv_get_stats(s->kv, &st->kv);
    st->num_steps = s->n_steps_recorded;
    st->num_preemptions = s->num_preemptions;
    st->num_prefill_tokens = s->num_prefill_tokens;
    st->num_generation_tokens = s->num_generation_tokens;
    for (int i = 0; i < ENG_FINISH_COUNT; i++) st->num_finished[i] = s->num_finished[i];
}

int eng_sched_recent_steps(const eng_sched_t *s, eng_step_info_t *out, int cap) {
    uint64_t have = s->n_steps_recorded < ENG_STEP_HISTORY ? s->n_steps_recorded : ENG_STEP_HISTORY;
    int n = 0;
    for (uint64_t i = 0; i < have && n < cap; i++)
        out[n++] = s->steps[(s->n_steps_recorded - 1 - i) % ENG_STEP_HISTORY];
    return n;
}

int eng_sched_set_step_duration(eng_sched_t *s, uint64_t step_id, uint64_t dur_ns) {
    /* empty plans are not recorded, so step ids and ring slots do not line up: search */
    for (int i = 0; i < ENG_STEP_HISTORY; i++)
        if (s->steps[i].step_id == step_id && step_id != 0) {
            s->steps[i].dur_ns = dur_ns;
            return 0;
        }
    return LT_ERR_NOTFOUND;
}

/* ---- dump ---- */

#define DUMP_MAX_REQS 256

static void dump_req(const eng_req_t *r, uint64_t now_ns, eng_req_label_fn label, FILE *f) {
    eng_req_info_t in;
    req_info(r, now_ns, &in);
    char name[768] = "";
    if (label) label(r->user, name, sizeof name);
    fprintf(f,
            "  %s%sid=%" PRIu64 " phase=%s prompt=%d computed=%d output=%d cached=%d blocks=%d "
            "preemptions=%d age=%.3fs",
            name, name[0] ? " " : "", in.id, eng_phase_str(in.phase), in.n_prompt, in.n_computed,
            in.n_output, in.n_cached_tokens, in.n_blocks, in.n_preemptions,
            (double)in.age_ns * 1e-9);
    if (r->state == RS_FINISHED) fprintf(f, " finish=%s", eng_finish_str(r->finish));
    fputc('\n', f);
}

void eng_sched_dump(const eng_sched_t *s, uint64_t now_ns, eng_req_label_fn label, FILE *f) {
    eng_sched_stats_t st;
    eng_sched_get_stats(s, &st);
    fprintf(f,
            "scheduler: step %" PRIu64 " (%" PRIu64 " non-empty), running %d/%d, waiting %d "
            "(%d preempted), finished-unreleased %d%s\n",
            s->step_id, st.num_steps, st.n_running, s->cfg.max_num_seqs, st.n_waiting,
            st.n_preempted_waiting, s->n_done, s->in_flight ? ", step in flight" : "");
    fprintf(f,
            "kv: %d blocks x %d tokens: used %d, cached %d, free %d (usage %.1f%%), evictions "
            "%" PRIu64 "\n",
            st.kv.num_blocks, s->cfg.block_size, st.kv.used, st.kv.cached, st.kv.free,
            st.kv.usage * 100.0, st.kv.evictions);
    fprintf(f, "prefix cache: %s, hits %" PRIu64 " / queries %" PRIu64 " tokens (%.1f%%)\n",
            s->cfg.enable_prefix_caching ? "on" : "off", st.kv.prefix_hits, st.kv.prefix_queries,
            st.kv.prefix_queries ? 100.0 * (double)st.kv.prefix_hits / (double)st.kv.prefix_queries
                                 : 0.0);
    fprintf(f,
            "counters: preemptions %" PRIu64 ", prefill tokens %" PRIu64 ", generation tokens "
            "%" PRIu64 ", finished stop %" PRIu64 " length %" PRIu64 " abort %" PRIu64 "\n",
            st.num_preemptions, st.num_prefill_tokens, st.num_generation_tokens,
            st.num_finished[ENG_FINISH_STOP], st.num_finished[ENG_FINISH_LENGTH],
            st.num_finished[ENG_FINISH_ABORT]);
    const double *k = s->model.coef;
    fprintf(f,
            "step model (--max-step-ms %d): %.3f ms + %.4f ms/decode row + %.4f ms/prefill token + "
            "%.4f ms/1k attended positions, from %lld steps; last prefill cap %d\n",
            s->cfg.max_step_ms, k[0], k[1], k[2], k[3], s->model.n_steps, s->last_prefill_cap);
    fprintf(f, "requests (%d):\n", s->n_reqs);
    int n = 0;
    for (int i = 0; i < s->n_running; i++)
        if (n++ < DUMP_MAX_REQS) dump_req(s->running[i], now_ns, label, f);
    for (const eng_req_t *r = s->wait_head; r; r = r->next)
        if (n++ < DUMP_MAX_REQS) dump_req(r, now_ns, label, f);
    for (const eng_req_t *r = s->done_head; r; r = r->next)
        if (n++ < DUMP_MAX_REQS) dump_req(r, now_ns, label, f);
    if (n > DUMP_MAX_REQS) fprintf(f, "  ... and %d more\n", n - DUMP_MAX_REQS);
    eng_step_info_t steps[ENG_STEP_HISTORY];
    int ns = eng_sched_recent_steps(s, steps, ENG_STEP_HISTORY);
    fprintf(f, "recent steps (%d, newest first):\n", ns);
    for (int i = 0; i < ns; i++)
        fprintf(f, "  step %" PRIu64 " dur=%.3fms seqs=%d tokens=%d prefill_seqs=%d preempted=%d\n",
                steps[i].step_id, (double)steps[i].dur_ns * 1e-6, steps[i].n_seqs,
                steps[i].n_tokens, steps[i].n_prefill_seqs, steps[i].n_preempted);
}
