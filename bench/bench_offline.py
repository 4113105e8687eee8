#!/usr/bin/env python3
"""bench_offline.py — lantern's offline batched-generation throughput against llama.cpp's.

For each concurrency C (default 1, 8, 32): C distinct 128-token prompts, 128 greedy output
tokens each (EOS ignored), all C sequences generated together. Both engines run the same GGUF,
the same prompts and the same thread count, in the same run, alternating (lantern, llama.cpp,
lantern, ...) so that noise from other jobs on the machine hits both sides. Prints a table:
concurrency | lantern tok/s | llama.cpp tok/s | ratio, plus the machine, the commit and the
peer's version (see bench/README.md for how to read it).

    tools/setup.sh --bench && .venv/bin/python bench/bench_offline.py [--concurrency 1,8,32]

lantern: `build/lantern batch --input FILE --concurrency C --max-num-seqs C --threads T`, a fresh
process tree per run; its JSON summary's output_tok_s (output tokens / time from the first
submit to the last request's end; model loading excluded). llama.cpp: in this process through
llama-cpp-python's low-level API; the prompts are prefilled as batches of whole prompts with
distinct sequence ids, then all C sequences decode together, one token each per llama_decode,
greedy argmax over each sequence's logits; output tok/s = C * 128 / (start of the prefill to the
last token).
"""
import argparse
import atexit
import ctypes
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_generate import (PROMPT_TEXT, ROOT, cpu_isa, cpu_model, prepare,  # noqa: E402
                            default_model, git_commit, n_cores)

# ---- the prompts ----

# Plain English prose (written for these benchmarks), cut into consecutive 128-token chunks
# after tokenization by the model's own tokenizer: one chunk per request, so every prompt is
# different text from its first token on (no prefix-cache hits in lantern) and looks like a
# real one. With bench_generate's text it is 4,122 tokens, enough for 32 prompts.
MORE_TEXT = """\
Bread is one of the oldest foods that people make on purpose. Long before anyone wrote down a
recipe, farmers learned that flour mixed with water and left in a warm place would begin to
bubble, and that the dough baked from it rose higher and tasted better than a flat cake. We now
know that the bubbles come from wild yeasts and bacteria that live on grain and in the air.
They eat the sugars in the flour and release carbon dioxide, which the stretchy gluten in the
dough traps in thousands of tiny pockets. A baker who keeps a sourdough starter is really
keeping a small farm of these organisms, feeding them flour every day and watching how quickly
they grow. In summer the starter is lively and sour; in winter it is slow, and the bread takes
longer to rise. Good bakers learn to read the dough with their hands. They press it with a
finger and watch how fast the dent fills back in, they notice whether the surface looks dry or
shiny, and they judge by smell when the fermentation has gone far enough. None of this can be
learned entirely from a book, which is why bakeries have always trained apprentices by letting
them work next to someone older for years.

The history of maps is a history of people trying to fit a round world onto a flat page. Every
flat map distorts something: distances, areas, angles or shapes. The projection that many of us
saw on classroom walls keeps angles correct, which made it valuable to sailors who steered by
compass, but it swells the lands near the poles until Greenland looks as large as Africa, which
is in fact fourteen times bigger. Other projections keep areas honest but bend the outlines of
the continents, or show the whole globe as an oval with curved lines of longitude. Mapmakers
choose according to what the map is for. A chart for pilots needs straight lines to mean
constant headings; a map of population needs equal areas so that crowded and empty regions can
be compared fairly; a subway map ignores distance almost completely and shows only the order of
the stations and where the lines cross. The best maps are honest about what they leave out. A
reader who understands that every map is a set of choices will look at the next one with more
curiosity and a little more suspicion.

Honeybees organize their work without anyone in charge. A colony of tens of thousands of
insects gathers nectar, builds comb, cools the hive on hot days and raises new generations, yet
the queen gives no orders; her job is to lay eggs. The division of labour emerges from simple
rules. Young workers clean cells and feed larvae, middle-aged ones build wax and guard the
entrance, and the oldest fly out to forage. When a forager finds a rich patch of flowers, she
returns and performs a dance on the comb. The angle of her run relative to straight up tells
the others the direction of the flowers relative to the sun, and the length of the run tells
them the distance. Other bees follow her, smell the nectar she carries, and fly out to find the
same place. If the patch is good, they dance too, and within an hour hundreds of bees may be
working it. If it runs dry, the dancing stops and the colony shifts its effort elsewhere. In
this way a crowd of small brains, each knowing very little, makes decisions that are often
better than those a single clever manager could make.

When the river flooded the valley in the spring of that year, the village school became a
shelter for forty families. The teachers pushed the desks against the walls, and the gymnasium
filled with mattresses, blankets and the smell of soup cooking on camping stoves. The children
treated it as an adventure at first. They organized races in the corridors and built forts out
of cardboard boxes that had held donated clothes. After a week the mood changed. The water was
not going down, the adults were tired and worried about their houses, and the younger children
missed their own beds. One of the teachers, a quiet man who taught mathematics, began holding
short lessons every morning in the library. He did not follow the curriculum. Instead he asked
the children to measure the height of the river each day from the school roof, to draw graphs,
and to predict when the water would reach its old level. The lessons gave the days a shape.
When the river finally fell, a little faster than the children had predicted, they were almost
disappointed to go home.

The invention of the mechanical clock changed how people thought about time. Before it, the
day was divided by the sun and by the bells of monasteries, which rang for prayers at hours
that stretched in summer and shrank in winter. A clock driven by a falling weight and regulated
by an escapement ticked at the same rate whatever the season. Towns put clocks in towers where
everyone could see them, and merchants began to agree on meetings at a particular hour rather
than at sunrise or after the market. Later the pendulum made clocks far more accurate, and the
balance spring made watches small enough to carry. Sailors needed accurate clocks most of all,
because the difference between local noon and the time at the home port told them how far east
or west they had travelled. For decades the problem seemed impossible, since no clock kept good
time on a rolling ship through heat and cold. A carpenter who had taught himself clockmaking
finally solved it, building a series of marine timekeepers over thirty years, each smaller and
more precise than the last.

Learning to play a musical instrument as an adult is humbling. Children seem to absorb scales
and rhythms without effort, while an adult beginner is painfully aware of every wrong note. The
fingers do not go where they are told; the bow scrapes; the hand cramps after ten minutes. Yet
adults have advantages too. They can practise deliberately, breaking a difficult passage into
pieces, playing it slowly with a metronome and raising the speed only when it is clean. They
can understand the theory behind a chord progression and use it to remember a piece. Above all
they chose to learn, which means they can keep going through the weeks when progress seems to
stop. Teachers often say that the plateau is where the real learning happens: the brain is
reorganizing itself, and one day a phrase that was impossible suddenly flows. The most useful
habit is short daily practice rather than long sessions once a week, because skills are
consolidated during sleep, and a little repetition every day gives the brain more nights in
which to do that work.

Most cities were not planned for the cars that now fill them. Their streets were laid out for
people on foot, for horses and for carts, and the widest avenues were built for parades rather
than traffic. In the last century many cities cut highways through old neighbourhoods, widened
roads and turned squares into car parks. Some are now trying to undo part of that. They narrow
lanes, plant trees, add protected paths for bicycles and give buses their own lanes so that
they are not stuck in the same queues as private cars. The results are often surprising.
Traffic does not always get worse when a road is closed; drivers change their routes and their
habits, and some of them stop driving that journey altogether. Shops on streets that became
pleasant to walk along frequently report more customers, not fewer. None of this is simple.
People who live far from the centre may depend on their cars, and a change that helps one
neighbourhood can push problems into another. The cities that manage it best tend to move step
by step, measure what happens, and listen to the people who live there.

Astronomers have found thousands of planets orbiting other stars, most of them by watching
light. When a planet passes in front of its star, it blocks a tiny fraction of the light, and
a sensitive telescope can see the star dim by a regular amount at regular intervals. The depth
of the dip reveals the size of the planet, and the time between dips reveals the length of its
year. Another method watches the star itself wobble: as the planet circles, it pulls the star
slightly towards and away from us, and the light shifts towards blue and then towards red. From
the size of the wobble astronomers can estimate the planet's mass. Combining size and mass gives
density, which tells whether a world is rocky like the Earth or puffy like a gas giant. The most
exciting measurements look at starlight that has passed through a planet's atmosphere on its way
to us. Gases absorb particular colours, so the spectrum carries a fingerprint of what the air is
made of. Someday such fingerprints may show water vapour, oxygen and other gases together on a
small rocky planet, and we will have to ask carefully what could have put them there.

Repairing an old bicycle is a good introduction to mechanics because almost every part can be
seen and understood. The chain carries the force of the rider's legs from the front sprocket to
the rear wheel, and the ratio between the number of teeth on the two sprockets decides how far
the bicycle travels with each turn of the pedals. A large front sprocket and a small rear one
make the bicycle fast but hard to start; the opposite makes climbing easy but the legs spin
uselessly on the flat. Gears let the rider choose. The brakes are levers that multiply the
pull of a hand into a firm squeeze of rubber against the rim, and a cable that has stretched by
a few millimetres is enough to make them feel soft and dangerous. Wheels are more subtle than
they look. The spokes are not rigid rods holding the rim up; they are wires under tension, and
the hub actually hangs from the spokes above it. Truing a wheel means adjusting dozens of
small nipples a quarter turn at a time until the rim spins without wobbling, a job that rewards
patience and punishes haste. Someone who has rebuilt a bicycle from a rusty frame in a shed
understands, in their hands, ideas about force, friction and leverage that are hard to learn
from diagrams alone.

Forests recover from fire in a sequence that ecologists can describe almost like the chapters
of a book. In the first months the ground is black and bare, but the ash is rich in minerals,
and within weeks the first green shoots appear. Some plants have seeds that wait in the soil
for years and germinate only after the heat of a fire; certain pines keep their cones sealed
with resin that melts in the flames, releasing seeds onto the fresh ground. Grasses and
flowering herbs spread quickly, followed by shrubs, and insects and birds return to feed on
them. Over decades, fast-growing trees that need a lot of light form a young forest, and in
their shade the seedlings of slower, longer-lived species take root. Eventually those slower
trees rise through the canopy and replace the pioneers. The whole process can take centuries.
For a long time people tried to prevent every fire, but foresters learned that many forests
depend on small, frequent burns that clear the undergrowth. Where fire was suppressed for too
long, dead wood piled up, and the fires that finally came were far hotter and more destructive
than the ones the forest had evolved with.

The post office in a small town used to be a place where everyone eventually met. People came
to buy stamps, to send parcels to relatives abroad, to collect their pensions, and to pay bills
in cash. The woman who ran the counter in our town had done it for thirty years and knew
nearly every family by name. She knew whose son was working overseas and waited for the blue
envelopes that came from him every month; she knew which old man needed help filling in forms
because his eyesight was failing, and she would quietly read the small print to him without
making a fuss. When the office was reorganized and the counter moved into a corner of the
supermarket, the service became faster and the queues shorter. Yet something was lost that no
one had written into any plan. The old building had been a meeting point, a place to stop and
exchange news, and the conversations that happened there were part of what held the town
together. A few years later a group of residents opened a café in the empty building, and
without anyone intending it, the café slowly became the new place where people met.

Learning a second language changes the way a person notices their first. Words that seemed
natural begin to look like choices. A learner discovers that one language has a single word
for what another expresses with a whole phrase, that some languages mark whether the speaker
saw an event with their own eyes or only heard about it, and that the polite way to address a
stranger varies enormously from place to place. Grammar that was once invisible becomes
visible by contrast. Many learners go through a stage when they can read a newspaper but still
freeze in a real conversation, because listening and speaking in real time demand a different
skill from decoding text at leisure. The cure is usually practice with patient people and a
willingness to make mistakes in public. Teachers often recommend reading stories written for
children or teenagers, which use everyday vocabulary in rich contexts, and listening to the
same short recordings many times until every word is clear. Progress is rarely smooth. It comes
in steps, with long flat stretches between them, and the learners who succeed are usually the
ones who simply keep going after the excitement of the first months has worn off.

Glass is a strange material. It looks and feels like a solid, yet its atoms are arranged with
no regular pattern, as in a liquid that has been frozen in place before it could organize
itself into crystals. Ordinary window glass is made mostly from sand, with soda to lower the
melting point and lime to make the result resist water. The mixture is heated in a furnace
until it flows like thick honey, and then it is floated on a bath of molten tin, where it
spreads into a perfectly flat sheet before cooling. Older windows were made by spinning or
blowing, which is why the panes in very old houses are often slightly uneven. A popular story
says that such panes are thicker at the bottom because glass slowly flows downward over the
centuries, but careful measurements show that this is not true; at room temperature the flow
would take far longer than the age of the universe to be noticed. The unevenness comes from
the old methods of manufacture, and glaziers simply tended to put the heavier edge at the
bottom of the frame, where it seemed more stable.

The kitchen of a busy restaurant runs on preparation. Long before the first guest arrives,
cooks have chopped onions and herbs, made stocks and sauces, portioned meat and fish, and
arranged everything in small containers along their stations so that each dish can be
assembled in a few minutes. The French phrase for this, putting everything in its place, has
become a general word for organization in many kitchens around the world. During service the
head chef calls out orders, and each station answers so that nothing is forgotten. Timing is
everything. A table of four may order dishes that take very different lengths of time to cook,
yet they must all arrive hot at the same moment. Experienced cooks keep several clocks running
in their heads at once and adjust constantly when something goes wrong: a pan that burns, an
order that was misread, a delivery of vegetables that never came. When the last plates go out
and the kitchen is cleaned, the cooks often sit down together late at night to eat a simple
meal of their own, which many of them say is the best part of the day.

Libraries have changed more in the last thirty years than in the previous three hundred, and
yet they remain surprisingly popular. When books and articles became available online, many
people predicted that libraries would empty. Instead, libraries turned into places that offer
much more than shelves. They lend laptops and tools, run reading groups for children and
language classes for newcomers, help job seekers write applications, and provide quiet rooms
for students who have nowhere else to study. Librarians spend less time stamping books and more
time teaching people how to judge whether a source can be trusted, a skill that matters more as
information multiplies. The buildings themselves matter too. A public library is one of the few
indoor spaces where anyone may stay for hours without buying anything, and in cold winters or
hot summers it can be a refuge. Cities that have invested in bright new libraries often find
that they become some of the busiest buildings in town, used from opening to closing by people
of every age.
"""


def make_prompts(tokenize, n, length):
    """n prompts of `length` ids: consecutive chunks of the tokenized text. If the text is too
    short (many or long prompts), later chunks start at evenly spread offsets of the text read
    as a ring, so they still differ from their first token but overlap one another."""
    ids = []
    for part in (PROMPT_TEXT, MORE_TEXT):
        ids.extend(tokenize(part))
    if len(ids) < length:
        sys.exit(f"bench_offline: the built-in text has only {len(ids)} tokens")
    if n * length <= len(ids):
        starts = [i * length for i in range(n)]
    else:
        print(f"bench_offline: {n} prompts of {length} tokens need {n * length} tokens of text, "
              f"have {len(ids)}: the prompts overlap", file=sys.stderr)
        starts = [(i * len(ids)) // n for i in range(n)]
    ring = ids + ids
    return [ring[s:s + length] for s in starts]


# ---- lantern ----


def run_lantern(binary, model, prompts, n_out, threads, workdir):
    """One `lantern batch` run of all prompts at once; returns (summary dict, ids per request)."""
    c = len(prompts)
    inp = os.path.join(workdir, f"in-{c}.jsonl")
    out = os.path.join(workdir, f"out-{c}.jsonl")
    with open(inp, "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt_ids": p, "max_tokens": n_out, "ignore_eos": True}) + "\n")
    cmd = [binary, "batch", "--model", model, "--input", inp, "--output", out,
           "--concurrency", str(c), "--max-num-seqs", str(c), "--threads", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_offline: lantern failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}")
    try:
        summary = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        sys.exit(f"bench_offline: could not parse lantern's summary from:\n{p.stdout}\n{p.stderr}")
    if summary.get("failed") or summary.get("output_tokens") != c * n_out:
        sys.exit(f"bench_offline: lantern produced {summary.get('output_tokens')} tokens "
                 f"({summary.get('failed')} failed), expected {c * n_out}:\n{p.stdout}")
    ids = [None] * c
    with open(out) as f:
        for line in f:
            r = json.loads(line)
            ids[r["index"]] = r["ids"]
    return summary, ids


# ---- llama.cpp ----


class LlamaPeer:
    """One llama.cpp context per concurrency, on a model loaded once."""

    def __init__(self, model_path, threads, flash_attn, kv_unified, n_ubatch):
        import logging

        import llama_cpp as L
        self.L = L
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # as Llama(verbose=False)
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(model_path.encode(), mp)
        if not self.model:
            sys.exit(f"bench_offline: llama.cpp could not load {model_path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.threads, self.flash_attn, self.kv_unified = threads, flash_attn, kv_unified
        self.n_ubatch = n_ubatch
        self.ctx = None
        self.c = 0

    def tokenize(self, text):
        b = text.encode("utf-8")
        buf = (self.L.llama_token * (len(b) + 16))()
        n = self.L.llama_tokenize(self.vocab, b, len(b), buf, len(buf), False, False)
        if n < 0:
            sys.exit("bench_offline: llama_tokenize failed")
        return list(buf[:n])

    def context(self, c, n_ctx_seq, n_batch):
        """A context for c sequences of up to n_ctx_seq positions each (reused across reps)."""
        L = self.L
        if self.ctx is not None and self.c == c:
            return
        if self.ctx is not None:
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
        cp = L.llama_context_default_params()
        cp.n_ctx = c * n_ctx_seq
        cp.n_batch = n_batch
        cp.n_ubatch = min(self.n_ubatch, n_batch)
        cp.n_seq_max = c
        cp.n_threads = cp.n_threads_batch = self.threads
        cp.flash_attn_type = {"auto": L.LLAMA_FLASH_ATTN_TYPE_AUTO,
                              "on": L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                              "off": L.LLAMA_FLASH_ATTN_TYPE_DISABLED}[self.flash_attn]
        cp.kv_unified = self.kv_unified
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            sys.exit(f"bench_offline: llama.cpp could not create a context for {c} sequences")
        self.c = c
        self.n_batch = n_batch
        self.batch = L.llama_batch_init(max(n_batch, c), 0, 1)

    def run(self, prompts, n_out):
        """Prefill every prompt, then n_out - 1 decode steps of all sequences together (n_out
        tokens per sequence, the first from the prefill's logits, as in lantern); returns
        (output tok/s, ids per sequence, prefill seconds, total seconds)."""
        import numpy as np
        L, ctx, b = self.L, self.ctx, self.batch
        c, n_vocab = len(prompts), self.n_vocab
        L.llama_memory_clear(L.llama_get_memory(ctx), True)

        def fill(items):  # items: (token, pos, seq, want_logits)
            for i, (tok, pos, seq, want) in enumerate(items):
                b.token[i] = tok
                b.pos[i] = pos
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq
                b.logits[i] = want
            b.n_tokens = len(items)
            rc = L.llama_decode(ctx, b)
            if rc != 0:
                sys.exit(f"bench_offline: llama_decode returned {rc}")

        ids = [[] for _ in range(c)]
        t0 = time.perf_counter()
        # Prefill: as many whole prompts per llama_decode as fit in n_batch.
        group, n_group = [], 0
        for s, p in enumerate(prompts + [None]):
            if p is None or n_group + len(p) > self.n_batch:
                fill([(tok, pos, seq, pos == len(prompts[seq]) - 1)
                      for seq in group for pos, tok in enumerate(prompts[seq])])
                last = -1
                for seq in group:  # llama_get_logits_ith takes the token's index in the batch
                    last += len(prompts[seq])
                    row = L.llama_get_logits_ith(ctx, last)
                    ids[seq].append(int(np.argmax(np.ctypeslib.as_array(row, shape=(n_vocab,)))))
                group, n_group = [], 0
            if p is not None:
                group.append(s)
                n_group += len(p)
        tp = time.perf_counter()
        # Decode: one token per sequence per step.
        for _ in range(n_out - 1):
            fill([(ids[s][-1], len(prompts[s]) + len(ids[s]) - 1, s, True) for s in range(c)])
            logits = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(c, n_vocab))
            for s, t in enumerate(np.argmax(logits, axis=1)):
                ids[s].append(int(t))
        t1 = time.perf_counter()
        return c * n_out / (t1 - t0), ids, tp - t0, t1 - t0


# ---- main ----


def agreement(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF file (default: tools/fetch_model.sh's default model)")
    ap.add_argument("--threads", type=int, default=n_cores(),
                    help="threads for both engines (default: all cores, %(default)s here)")
    ap.add_argument("--concurrency", default="1,8,32",
                    help="comma-separated numbers of concurrent requests (default 1,8,32)")
    ap.add_argument("--reps", type=int, default=3, help="measured runs per side (default 3)")
    ap.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (default 128)")
    ap.add_argument("--output-tokens", type=int, default=128,
                    help="generated tokens per request (default 128)")
    ap.add_argument("--lantern", default=os.path.join(ROOT, "build", "lantern"),
                    help="lantern binary (default build/lantern)")
    ap.add_argument("--llama-flash-attn", choices=["auto", "on", "off"], default="auto",
                    help="llama.cpp flash_attn_type (default auto, llama.cpp's default)")
    ap.add_argument("--llama-kv-unified", action="store_true",
                    help="llama.cpp: one KV buffer shared by all sequences (default: one per "
                         "sequence, llama.cpp's default, faster for unrelated prompts)")
    ap.add_argument("--llama-ubatch", type=int, default=512,
                    help="llama.cpp n_ubatch (default 512, llama.cpp's default)")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    args = ap.parse_args()
    try:
        concs = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        ap.error("--concurrency takes comma-separated integers, e.g. 1,8,32")
    if (not concs or min(concs) < 1 or args.threads < 1 or args.reps < 1
            or args.prompt_tokens < 1 or args.output_tokens < 1 or args.llama_ubatch < 1):
        ap.error("--concurrency, --threads, --reps, --prompt-tokens, --output-tokens and "
                 "--llama-ubatch must be >= 1")

    llama_cpp, binary, bin_sha, bin_mtime, model = prepare("bench_offline", args.lantern,
                                                           args.model)
    snapdir = os.path.dirname(binary)  # the snapshot's directory also holds the request files

    peer = LlamaPeer(model, args.threads, args.llama_flash_attn, args.llama_kv_unified,
                     args.llama_ubatch)
    all_prompts = make_prompts(peer.tokenize, max(concs), args.prompt_tokens)
    # Per-sequence context: prompt + outputs, rounded up to llama.cpp's 256-cell granularity.
    n_ctx_seq = -(-(args.prompt_tokens + args.output_tokens) // 256) * 256
    n_batch = max(2048, args.prompt_tokens)  # lantern's default --max-num-batched-tokens

    machine = {"cpu": cpu_model(), "cores": n_cores(), "threads": args.threads,
               "isa": cpu_isa(), "kernel": platform.release(), "loadavg_start": os.getloadavg()}
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": git_commit(), "llama_cpp_python": llama_cpp.__version__,
            "lantern_binary": {"path": args.lantern, "sha256_12": bin_sha,
                               "built": bin_mtime.isoformat(timespec="seconds")},
            "model": model, "prompt_tokens": args.prompt_tokens,
            "output_tokens": args.output_tokens, "reps": args.reps, "concurrency": concs,
            "llama_cpp_config": {"flash_attn": args.llama_flash_attn,
                                 "kv_unified": args.llama_kv_unified,
                                 "n_batch": n_batch, "n_ubatch": min(args.llama_ubatch, n_batch),
                                 "n_ctx_per_seq": n_ctx_seq},
            "machine": machine}

    print(f"bench_offline: {os.path.basename(model)}, {args.prompt_tokens}-token prompts, "
          f"{args.output_tokens} output tokens each, concurrency {concs}, {args.threads} "
          f"threads, {args.reps} reps (+1 warm-up each)", file=sys.stderr, flush=True)
    results = {}
    for c in concs:
        prompts = all_prompts[:c]
        peer.context(c, n_ctx_seq, n_batch)
        runs = {"lantern": [], "llama.cpp": []}
        detail = {"lantern_summaries": [], "llama_cpp_prefill_s": [], "llama_cpp_total_s": []}
        lt_sum = lt_ids = lc_ids = None
        for rep in range(args.reps + 1):
            tag = "warm-up" if rep == 0 else f"rep {rep}/{args.reps}"
            lt_sum, lt_ids = run_lantern(binary, model, prompts, args.output_tokens,
                                         args.threads, snapdir)
            lc, lc_ids, lc_pre, lc_tot = peer.run(prompts, args.output_tokens)
            print(f"  C={c:<3} {tag:>9}: lantern {lt_sum['output_tok_s']:8.1f} tok/s "
                  f"({lt_sum['elapsed_s']:.2f} s, max_running {lt_sum['max_running']}, "
                  f"{lt_sum['steps']} steps) | llama.cpp {lc:8.1f} tok/s ({lc_tot:.2f} s, "
                  f"prefill {lc_pre:.2f} s)", file=sys.stderr, flush=True)
            if rep > 0:
                runs["lantern"].append(lt_sum["output_tok_s"])
                runs["llama.cpp"].append(lc)
                detail["lantern_summaries"].append(lt_sum)
                detail["llama_cpp_prefill_s"].append(lc_pre)
                detail["llama_cpp_total_s"].append(lc_tot)
        agree = [agreement(a, b) for a, b in zip(lt_ids, lc_ids)]
        med = {k: statistics.median(v) for k, v in runs.items()}
        results[c] = {"runs": runs, "median": med, "ratio": med["lantern"] / med["llama.cpp"],
                      "detail": detail, "lantern_summary": lt_sum, "greedy_agree": agree,
                      "lantern_ids": lt_ids, "llama_cpp_ids": lc_ids}

    machine["loadavg_end"] = os.getloadavg()
    print()
    print(f"| concurrency ({args.prompt_tokens}+{args.output_tokens} tokens per request, "
          f"output tok/s, median of {args.reps}) | lantern | llama.cpp | "
          "ratio (lantern/llama.cpp) |")
    print("|---:|---:|---:|---:|")
    for c in concs:
        r = results[c]
        print(f"| {c} | {r['median']['lantern']:.1f} | {r['median']['llama.cpp']:.1f} | "
              f"{r['ratio']:.3f} |")
    print()
    print(f"machine: {machine['cpu']} ({' '.join(machine['isa']) or 'no AVX2'}), "
          f"{machine['cores']} cores, {args.threads} threads used; Linux {machine['kernel']}; "
          "load average (1/5/15 min) %.1f/%.1f/%.1f at start, %.1f/%.1f/%.1f at end"
          % (machine["loadavg_start"] + machine["loadavg_end"]))
    print(f"commit: {info['commit']}; llama-cpp-python {info['llama_cpp_python']} "
          f"(flash_attn {args.llama_flash_attn}, kv_unified {args.llama_kv_unified}, "
          f"n_batch {n_batch}, n_ubatch {min(args.llama_ubatch, n_batch)}); "
          f"model {os.path.basename(model)}")
    print(f"lantern binary: {args.lantern} built {info['lantern_binary']['built']} "
          f"(sha256 {bin_sha}...)")
    for c in concs:
        a = results[c]["greedy_agree"]
        s = results[c]["lantern_summary"]
        print(f"C={c}: greedy ids identical for the first min {min(a)} / median "
              f"{statistics.median(a):g} / max {max(a)} of {args.output_tokens} tokens per "
              f"request; lantern max_running {s['max_running']}, {s['steps']} steps, "
              f"{s['preemptions']} preemptions, {s['prefix_hits']} prefix hits")

    if args.json:
        out = dict(info, results={str(c): r for c, r in results.items()},
                   prompt_ids=all_prompts)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
