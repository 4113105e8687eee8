/*
 * main.c — entry point of the `lantern` binary: dispatches to subcommands.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "lt.h"

/* The other processes of the tree are this binary under hidden subcommands: the executable is
 * the one place that links every module (the frontend's libraries link neither the engine nor
 * the worker), so it declares their entry points itself. */
int eng_core_main(int argc, char **argv);
int wk_worker_main(int argc, char **argv);
int wk_generate_solo(const char *model_path, const int *prompt, int n_prompt, int max_tokens,
                     bool ignore_eos, int threads);

static void usage(FILE *f) {
    fprintf(f, "usage: lantern <command> [options]\n"
               "\n"
               "commands:\n"
               "  generate   run a model on a prompt given as token ids (greedy) and print the\n"
               "             generated ids and the prefill/decode speed\n"
               "  batch      run JSON-lines requests through the engine concurrently\n"
               "  serve      serve a model over an OpenAI-compatible HTTP API\n"
               "\n"
               "`lantern <command> --help` describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("lantern %s\n", lt_version());
        return 0;
    }
    if (strcmp(argv[1], "generate") == 0)
        return fe_cmd_generate(argc - 1, argv + 1, wk_generate_solo);
    if (strcmp(argv[1], "batch") == 0) return fe_cmd_batch(argc - 1, argv + 1);
    if (strcmp(argv[1], "serve") == 0) return fe_cmd_serve(argc - 1, argv + 1);
    if (strcmp(argv[1], "__engine") == 0) return eng_core_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "__worker") == 0) return wk_worker_main(argc - 1, argv + 1);
    fprintf(stderr, "lantern: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
