/*
 * curl_lazy.c — loads libcurl on first use. See curl_lazy.h.
 */
#include "curl_lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "lt.h"

/* The soname the development package's libcurl.so points to on every distribution we build on
 * (OpenSSL and GnuTLS flavours alike). */
#define CURL_SONAME "libcurl.so.4"

tel_curl_api_t tel_curl;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static bool g_ok;
static char g_why[256];

/* *slot = the symbol's address (POSIX's way from a dlsym result to a function pointer); false
 * when the library lacks it. */
static bool sym(void *lib, const char *name, void *slot) {
    void *p = dlsym(lib, name);
    if (!p) {
        snprintf(g_why, sizeof g_why, "%s has no %s (too old a libcurl?)", CURL_SONAME, name);
        return false;
    }
    memcpy(slot, &p, sizeof p);
    return true;
}

static void load(void) {
    void *lib = dlopen(CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(g_why, sizeof g_why, "%s", e ? e : CURL_SONAME ": cannot be loaded");
        return;
    }
    tel_curl_api_t *a = &tel_curl;
    g_ok = sym(lib, "curl_global_init", &a->global_init) &&
           sym(lib, "curl_version_info", &a->version_info) &&
           sym(lib, "curl_getdate", &a->getdate) && sym(lib, "curl_free", &a->free) &&
           sym(lib, "curl_slist_append", &a->slist_append) &&
           sym(lib, "curl_slist_free_all", &a->slist_free_all) &&
           sym(lib, "curl_easy_init", &a->easy_init) &&
           sym(lib, "curl_easy_setopt", &a->easy_setopt) &&
           sym(lib, "curl_easy_getinfo", &a->easy_getinfo) &&
           sym(lib, "curl_easy_strerror", &a->easy_strerror) &&
           sym(lib, "curl_easy_cleanup", &a->easy_cleanup) &&
           sym(lib, "curl_multi_init", &a->multi_init) &&
           sym(lib, "curl_multi_add_handle", &a->multi_add_handle) &&
           sym(lib, "curl_multi_remove_handle", &a->multi_remove_handle) &&
           sym(lib, "curl_multi_perform", &a->multi_perform) &&
           sym(lib, "curl_multi_poll", &a->multi_poll) &&
           sym(lib, "curl_multi_info_read", &a->multi_info_read) &&
           sym(lib, "curl_multi_cleanup", &a->multi_cleanup) && sym(lib, "curl_url", &a->url) &&
           sym(lib, "curl_url_set", &a->url_set) && sym(lib, "curl_url_get", &a->url_get) &&
           sym(lib, "curl_url_cleanup", &a->url_cleanup);
    /* on failure the library stays loaded: harmless, and tel_curl is never used */
}

int tel_curl_load(char *err) {
    pthread_once(&g_once, load);
    return g_ok ? 0 : lt_errf(err, LT_ERR_UNSUPPORTED, "otlp: libcurl: %s", g_why);
}
