/*
 * cli.h — the `lantern` command line: subcommands and their shared helpers.
 * Single-threaded start-up code; each cmd_* returns the process exit status.
 */
#ifndef FE_CLI_H
#define FE_CLI_H

#include <stdbool.h>

/* The single-process reference path of `lantern generate --in-process`: the model run in this
 * process, without the engine. It lives with the worker (which the frontend does not link); the
 * `lantern` executable hands it in. Returns the exit status. */
typedef int (*fe_in_process_fn)(const char *model, const int *prompt, int n_prompt, int max_tokens,
                                bool ignore_eos, int threads);

/* `lantern generate`: one request from the command line, text (--prompt, --chat) or token ids
 * (--prompt-ids, greedy, with prefill/decode throughput). */
int fe_cmd_generate(int argc, char **argv, fe_in_process_fn run_in_process);

/* `lantern batch`: offline generation of JSON-lines requests through the process tree. */
int fe_cmd_batch(int argc, char **argv);

/* `lantern serve`: the OpenAI-compatible HTTP server. */
int fe_cmd_serve(int argc, char **argv);

/* Parses "1,2,3" into a malloc'd array; returns the count, or -1 with a message in err. */
int fe_parse_ids(const char *s, int **out, char *err);

#endif
