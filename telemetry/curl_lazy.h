/*
 * curl_lazy.h — libcurl, loaded on first use (dlopen) rather than linked: the OTLP exporter and
 * its endpoint parser are its only users, and a process that exports nothing should not carry it.
 * Linked, libcurl and the libraries it pulls in (OpenSSL, Kerberos, LDAP, SSH, RTMP, GnuTLS, ...)
 * kept ~2.7 MiB of pages resident in each process of the tree whether tracing was on or not.
 *
 * tel_curl_load() fills tel_curl once (thread-safe); every call into libcurl goes through it, and
 * only after a successful load. The function types come from curl.h, so calls are checked against
 * the header the project builds with.
 */
#ifndef TEL_CURL_LAZY_H
#define TEL_CURL_LAZY_H

#include <curl/curl.h>

typedef struct tel_curl_api {
    __typeof__(curl_global_init) *global_init;
    __typeof__(curl_version_info) *version_info;
    __typeof__(curl_getdate) *getdate;
    __typeof__(curl_free) *free;
    __typeof__(curl_slist_append) *slist_append;
    __typeof__(curl_slist_free_all) *slist_free_all;
    __typeof__(curl_easy_init) *easy_init;
    __typeof__(curl_easy_setopt) *easy_setopt;
    __typeof__(curl_easy_getinfo) *easy_getinfo;
    __typeof__(curl_easy_strerror) *easy_strerror;
    __typeof__(curl_easy_cleanup) *easy_cleanup;
    __typeof__(curl_multi_init) *multi_init;
    __typeof__(curl_multi_add_handle) *multi_add_handle;
    __typeof__(curl_multi_remove_handle) *multi_remove_handle;
    __typeof__(curl_multi_perform) *multi_perform;
    __typeof__(curl_multi_poll) *multi_poll;
    __typeof__(curl_multi_info_read) *multi_info_read;
    __typeof__(curl_multi_cleanup) *multi_cleanup;
    __typeof__(curl_url) *url;
    __typeof__(curl_url_set) *url_set;
    __typeof__(curl_url_get) *url_get;
    __typeof__(curl_url_cleanup) *url_cleanup;
} tel_curl_api_t;

/* libcurl's functions; valid once tel_curl_load has returned 0. */
extern tel_curl_api_t tel_curl;

/* Loads libcurl (once per process; later calls return the first outcome): 0, or an error code
 * with err saying why (the library missing, or lacking a function). */
int tel_curl_load(char *err);

#endif
