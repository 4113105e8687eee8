/*
 * core_spans.c — the engine's spans (DESIGN.md §5). Per request, children of the frontend's
 * llm_request (whose context came in the ADD envelope):
 *
 *   queue       arrival → first scheduled
 *   prefill     one per step that computed part of its prompt (or recomputed after a preemption),
 *               with the chunk's token count and start position
 *   preempted   preemption → rescheduled (its KV blocks were taken; it is recomputed)
 *   decode      first decode step → finished, with the tokens and steps it took
 *
 * With --collect-detailed-traces engine (or worker, all): one "step" span per scheduler step, the
 * root of its own trace (a step serves many requests), linked to the llm_request of every
 * request in its batch; each request's prefill and decode spans link back to the steps they ran
 * in. The step span's context travels in the STEP envelope, so the workers' spans of that step
 * are its children.
 *
 * Tail keeping: spans of a sampled trace are exported as they end; those of an unsampled one
 * are held until the request ends, then exported if it was aborted, failed or took longer than
 * --trace-slow-threshold-ms, and dropped otherwise.
 *
 * Everything here runs on the engine's one thread, in its step loop; with tracing off each
 * function returns at once.
 */
#include <stdlib.h>
#include <string.h>

#include "core_priv.h"
#include "lt.h"

int core_spans_init(core_t *c, char *err) {
    c->chunk_spans = calloc((size_t)c->args.max_num_seqs, sizeof *c->chunk_spans);
    if (!c->chunk_spans) return lt_errf(err, LT_ERR_NOMEM, "engine: out of memory for spans");
    c->trace_slow_ns = (uint64_t)c->args.trace_slow_threshold_ms * 1000000ull;
    return LT_OK;
}

void core_spans_fini(core_t *c) {
    free(c->chunk_spans);
    c->chunk_spans = NULL;
}

void core_spans_add(core_t *c, core_req_t *r) {
    (void)c;
    r->arrival_unix_ns = tel_now_unix_ns();
    /* parsed with tracing off too: the metrics' exemplars carry the trace id */
    const char *tp = r->ident.traceparent;
    if (!tel_ctx_parse(tp, strlen(tp), &r->parent)) r->parent.valid = false;
}

/* A child of the request's llm_request, with the request's id. */
static tel_span_t *req_span(core_req_t *r, const char *name, uint64_t start) {
    if (!r->parent.valid) return NULL;
    tel_span_t *sp = tel_span_start(name, TEL_KIND_INTERNAL, &r->parent, start);
    if (sp) tel_span_set_str(sp, "gen_ai.request.id", r->ident.id);
    return sp;
}

/* A request span has ended: exported now if its trace is sampled, else held for the decision
 * at the request's end (or dropped, counted, if too many are held). */
static void req_span_done(core_req_t *r, tel_span_t *sp, uint64_t end) {
    if (!sp) return;
    if ((sp->flags & 1) || r->n_held == CORE_SPANS_HELD) {
        tel_span_submit(sp, end, false);
        return;
    }
    sp->end_unix_ns = end;
    r->held[r->n_held++] = sp;
}

static void link_step(core_t *c, tel_span_t *sp) {
    if (!c->step_span || !sp) return;
    tel_ctx_t sc = tel_span_ctx(c->step_span);
    tel_span_add_link(sp, &sc);
}

static void step_span_start(core_t *c, uint64_t now) {
    const eng_plan_t *pl = &c->plan;
    c->step_traceparent[0] = '\0';
    if (!(c->args.detailed_traces & IPC_TRACE_ENGINE)) return;
    c->step_span = tel_span_start("step", TEL_KIND_INTERNAL, NULL, now);
    if (!c->step_span) return;
    tel_span_t *sp = c->step_span;
    int prefill = 0;
    for (int i = 0; i < pl->n_seqs; i++) prefill += !pl->seqs[i].sample || pl->seqs[i].n_tokens > 1;
    eng_sched_stats_t st;
    eng_sched_get_stats(c->sched, &st);
    tel_span_set_int(sp, "lantern.step.id", (int64_t)pl->step_id);
    tel_span_set_int(sp, "lantern.step.batch_size", pl->n_seqs);
    tel_span_set_int(sp, "lantern.step.scheduled_tokens", pl->n_tokens);
    tel_span_set_int(sp, "lantern.step.prefill_rows", prefill);
    tel_span_set_int(sp, "lantern.step.decode_rows", pl->n_seqs - prefill);
    tel_span_set_int(sp, "lantern.step.preempted", pl->n_preempted);
    tel_span_set_double(sp, "lantern.kv_cache.usage", st.kv.usage);
    tel_span_set_int(sp, "lantern.requests.running", st.n_running);
    tel_span_set_int(sp, "lantern.requests.waiting", st.n_waiting);
    for (int i = 0; i < pl->n_seqs; i++) {
        const core_req_t *r = pl->seqs[i].user;
        tel_span_add_link(sp, &r->parent);
    }
    if (c->args.detailed_traces & IPC_TRACE_WORKER) {
        tel_ctx_t sc = tel_span_ctx(sp);
        tel_ctx_format(&sc, c->step_traceparent);
    }
}

void core_spans_step(core_t *c, uint64_t now) {
    if (!tel_tracer_enabled()) return;
    const eng_plan_t *pl = &c->plan;
    step_span_start(c, now);
    for (int i = 0; i < pl->n_preempted; i++) {
        core_req_t *r = NULL;
        for (core_req_t *q = c->reqs; q && !r; q = q->next)
            if (q->id == pl->preempted_ids[i]) r = q;
        if (r) r->preempted_unix_ns = now;
    }
    for (int i = 0; i < pl->n_seqs; i++) {
        const eng_plan_seq_t *q = &pl->seqs[i];
        core_req_t *r = (core_req_t *)q->user;
        c->chunk_spans[i] = NULL;
        if (!r->parent.valid) continue;
        if (!r->scheduled) {
            r->scheduled = true;
            req_span_done(r, req_span(r, "queue", r->arrival_unix_ns), now);
        } else if (r->preempted_unix_ns && (q->flags & ENG_SEQ_NEW)) {
            req_span_done(r, req_span(r, "preempted", r->preempted_unix_ns), now);
            r->preempted_unix_ns = 0;
        }
        bool decode = q->sample && q->n_tokens == 1 && q->start_pos >= q->n_prompt;
        if (decode) {
            if (!r->decode) r->decode = req_span(r, "decode", now);
            r->decode_steps++;
            link_step(c, r->decode);
            continue;
        }
        tel_span_t *sp = req_span(r, "prefill", now);
        if (!sp) continue;
        r->prefill_chunks++;
        tel_span_set_int(sp, "lantern.chunk.tokens", q->n_tokens);
        tel_span_set_int(sp, "lantern.chunk.start_pos", q->start_pos);
        tel_span_set_int(sp, "lantern.prompt_tokens", q->n_prompt);
        tel_span_set_int(sp, "lantern.step.id", (int64_t)pl->step_id);
        tel_span_set_bool(sp, "lantern.chunk.samples", q->sample);
        link_step(c, sp);
        c->chunk_spans[i] = sp;
    }
}

/* Ends every open span of r and decides on the held ones. */
static void finish_req(core_t *c, core_req_t *r, uint64_t now, const char *why, bool keep) {
    if (r->decode) {
        tel_span_set_int(r->decode, "lantern.decode.steps", r->decode_steps);
        tel_span_set_int(r->decode, "lantern.prefill.chunks", r->prefill_chunks);
        if (why) tel_span_set_str(r->decode, "lantern.finish_reason", why);
        if (keep && why && strcmp(why, "stop") && strcmp(why, "length"))
            tel_span_set_status(r->decode, TEL_STATUS_ERROR, why);
        tel_span_submit(r->decode, now, keep);
        r->decode = NULL;
    }
    if (r->preempted_unix_ns) {
        tel_span_submit(req_span(r, "preempted", r->preempted_unix_ns), now, keep);
        r->preempted_unix_ns = 0;
    }
    for (int i = 0; i < r->n_held; i++) tel_span_submit(r->held[i], r->held[i]->end_unix_ns, keep);
    r->n_held = 0;
    (void)c;
}

void core_spans_result(core_t *c, const eng_outputs_t *outs, uint64_t now) {
    if (!tel_tracer_enabled()) return;
    const eng_plan_t *pl = &c->plan;
    for (int i = 0; i < pl->n_seqs; i++) {
        if (!c->chunk_spans[i]) continue;
        req_span_done((core_req_t *)pl->seqs[i].user, c->chunk_spans[i], now);
        c->chunk_spans[i] = NULL;
    }
    for (int i = 0; i < outs->n; i++) {
        const eng_output_t *o = &outs->items[i];
        core_req_t *r = (core_req_t *)o->user;
        if (r->decode) tel_span_set_int(r->decode, "lantern.decode.tokens", o->n_output);
        if (o->finish == ENG_FINISH_NONE || !r->parent.valid) continue;
        bool slow = c->trace_slow_ns && now - r->arrival_unix_ns > c->trace_slow_ns;
        finish_req(c, r, now, eng_finish_str(o->finish), slow || o->finish == ENG_FINISH_ABORT);
    }
    if (c->step_span) {
        tel_span_submit(c->step_span, now, false);
        c->step_span = NULL;
    }
}

void core_spans_finish(core_t *c, core_req_t *r, const char *why, bool error) {
    if (!tel_tracer_enabled() || !r->parent.valid) return;
    uint64_t now = tel_now_unix_ns();
    /* a chunk of the step in flight ends here too */
    for (int i = 0; i < c->plan.n_seqs && c->chunk_spans; i++)
        if (c->plan.seqs[i].user == r && c->chunk_spans[i]) {
            req_span_done(r, c->chunk_spans[i], now);
            c->chunk_spans[i] = NULL;
        }
    if (error && r->decode) tel_span_set_status(r->decode, TEL_STATUS_ERROR, why);
    finish_req(c, r, now, why, true);
}
