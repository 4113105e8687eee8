/*
 * lantern_core.c — entry point of the `lantern-core` binary: the engine-core and worker processes
 * of a `lantern serve` tree (`lantern-core __engine`, `lantern-core __worker`), started by the
 * frontend from the directory of its own executable (lt_proc_spawn_sibling).
 *
 * `lantern` carries the same two entry points and serves when lantern-core is absent; this binary
 * exists so that those processes do not load what only the frontend uses: libmicrohttpd with its
 * TLS stack (GnuTLS, p11-kit, nettle, GMP, ...), PCRE2 and utf8proc, ~2.5 MiB of resident
 * library pages in each process.
 */
#include <stdio.h>
#include <string.h>

/* Declared here as in frontend/cli/main.c: the executable is where the modules meet. */
int eng_core_main(int argc, char **argv);
int wk_worker_main(int argc, char **argv);

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "__engine") == 0) return eng_core_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "__worker") == 0) return wk_worker_main(argc - 1, argv + 1);
    fprintf(stderr, "lantern-core: the engine and worker processes of `lantern serve`, started by "
                    "it; run `lantern` instead\n");
    return 2;
}
