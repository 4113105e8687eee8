/*
 * source.c — finding a model's own chat template: GGUF metadata `tokenizer.chat_template`, or
 * `chat_template` in a Hugging Face directory's tokenizer_config.json (a string, or a list of
 * named templates of which "default" wins).
 */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "gguf.h"
#include "lt.h"

int fe_chat_template_source(const char *model_path, char **src, char *err) {
    *src = NULL;
    if (!lt_is_dir(model_path)) {
        lt_gguf_t *g;
        int rc = lt_gguf_open(model_path, &g, err);
        if (rc) return rc;
        const char *s;
        size_t len;
        rc = lt_gguf_get_str(g, "tokenizer.chat_template", &s, &len);
        if (rc == LT_OK) {
            *src = strndup(s, len);
            if (!*src) rc = lt_errf(err, LT_ERR_NOMEM, "out of memory");
        } else {
            rc = lt_errf(err, LT_ERR_NOTFOUND, "%s: the model has no chat template", model_path);
        }
        lt_gguf_close(&g);
        return rc;
    }
    char path[4200], *text;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model_path);
    int rc = lt_read_file(path, &text, NULL, err);
    if (rc) return rc;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) return lt_errf(err, LT_ERR_FORMAT, "%s: not valid JSON", path);
    const cJSON *t = cJSON_GetObjectItem(j, "chat_template");
    const char *found = NULL;
    if (cJSON_IsString(t)) {
        found = t->valuestring;
    } else if (cJSON_IsArray(t)) { /* [{"name": "default", "template": ...}, ...] */
        const cJSON *it;
        cJSON_ArrayForEach(it, t) {
            const cJSON *name = cJSON_GetObjectItem(it, "name");
            const cJSON *tpl = cJSON_GetObjectItem(it, "template");
            if (cJSON_IsString(tpl) &&
                (!found || (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0)))
                found = tpl->valuestring;
        }
    }
    rc = found ? ((*src = strdup(found)) ? LT_OK : LT_ERR_NOMEM)
               : lt_errf(err, LT_ERR_NOTFOUND, "%s: no chat_template", path);
    cJSON_Delete(j);
    return rc;
}
