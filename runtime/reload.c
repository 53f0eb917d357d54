#include "reload.h"

#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "log.h"

typedef struct {
    uv_fs_event_t handle;
    char *dir;
    dp_reload_t *owner;
} dir_watch_t;

struct dp_reload {
    uv_loop_t *loop;
    uv_timer_t debounce;
    unsigned debounce_ms;
    dp_reload_cb cb;
    void *ud;
    char **files;
    int nfiles;
    char **pending;
    int npending;
    dir_watch_t **dirs;
    int ndirs;
    int open_handles;
};

const char *dp_reload_canonical(const char *path, char *buf, size_t size)
{
    char copy[PATH_MAX], dir[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    char *base = strrchr(copy, '/');
    const char *name = path;
    if (base != NULL) {
        *base = '\0';
        name = base + 1;
        if (realpath(copy[0] ? copy : "/", dir) == NULL)
            return path;
    } else if (realpath(".", dir) == NULL) {
        return path;
    }
    snprintf(buf, size, "%s/%s", strcmp(dir, "/") == 0 ? "" : dir, name);
    return buf;
}

static void maybe_free(dp_reload_t *r)
{
    if (r->open_handles > 0)
        return;
    for (int i = 0; i < r->nfiles; i++)
        free(r->files[i]);
    for (int i = 0; i < r->npending; i++)
        free(r->pending[i]);
    free(r->files);
    free(r->pending);
    free(r->dirs);
    free(r);
}

static void on_close_dir(uv_handle_t *h)
{
    dir_watch_t *w = h->data;
    dp_reload_t *r = w->owner;
    free(w->dir);
    free(w);
    r->open_handles--;
    maybe_free(r);
}

static void on_close_timer(uv_handle_t *h)
{
    dp_reload_t *r = h->data;
    r->open_handles--;
    maybe_free(r);
}

static void on_debounce(uv_timer_t *t)
{
    dp_reload_t *r = t->data;
    /* Take the list first: the callback may add watches. */
    char **pending = r->pending;
    int n = r->npending;
    r->pending = NULL;
    r->npending = 0;
    for (int i = 0; i < n; i++) {
        r->cb(pending[i], r->ud);
        free(pending[i]);
    }
    free(pending);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)events;
    dir_watch_t *w = h->data;
    dp_reload_t *r = w->owner;
    if (status < 0) {
        dp_log_warn(NULL, "watching %s: %s", w->dir, uv_strerror(status));
        return;
    }
    if (filename == NULL)
        return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", w->dir, filename);
    bool watched = false;
    for (int i = 0; i < r->nfiles && !watched; i++)
        watched = strcmp(r->files[i], path) == 0;
    if (!watched)
        return;
    for (int i = 0; i < r->npending; i++) {
        if (strcmp(r->pending[i], path) == 0)
            goto arm;
    }
    r->pending = dp_xrealloc(r->pending, sizeof *r->pending * (size_t)(r->npending + 1));
    r->pending[r->npending++] = dp_xstrdup(path);
arm:
    /* Restarting the timer on every event waits for the writes to settle. */
    uv_timer_start(&r->debounce, on_debounce, r->debounce_ms, 0);
}

dp_reload_t *dp_reload_new(uv_loop_t *loop, unsigned debounce_ms, dp_reload_cb cb, void *ud)
{
    dp_reload_t *r = dp_xcalloc(1, sizeof *r);
    r->loop = loop;
    r->debounce_ms = debounce_ms ? debounce_ms : 50;
    r->cb = cb;
    r->ud = ud;
    uv_timer_init(loop, &r->debounce);
    r->debounce.data = r;
    r->open_handles = 1;
    return r;
}

int dp_reload_watch(dp_reload_t *r, const char *path)
{
    if (strncmp(path, "embed:", 6) == 0)
        return 0;
    char canon[PATH_MAX];
    const char *c = dp_reload_canonical(path, canon, sizeof canon);
    for (int i = 0; i < r->nfiles; i++) {
        if (strcmp(r->files[i], c) == 0)
            return 0;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", c);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        return UV_EINVAL;
    *slash = '\0';
    bool have_dir = false;
    for (int i = 0; i < r->ndirs && !have_dir; i++)
        have_dir = strcmp(r->dirs[i]->dir, dir) == 0;
    if (!have_dir) {
        dir_watch_t *w = dp_xcalloc(1, sizeof *w);
        w->dir = dp_xstrdup(dir);
        w->owner = r;
        uv_fs_event_init(r->loop, &w->handle);
        w->handle.data = w;
        int rc = uv_fs_event_start(&w->handle, on_fs_event, dir[0] ? dir : "/", 0);
        r->open_handles++;
        if (rc < 0) {
            uv_close((uv_handle_t *)&w->handle, on_close_dir);
            return rc;
        }
        r->dirs = dp_xrealloc(r->dirs, sizeof *r->dirs * (size_t)(r->ndirs + 1));
        r->dirs[r->ndirs++] = w;
    }
    r->files = dp_xrealloc(r->files, sizeof *r->files * (size_t)(r->nfiles + 1));
    r->files[r->nfiles++] = dp_xstrdup(c);
    return 0;
}

void dp_reload_free(dp_reload_t *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < r->ndirs; i++)
        uv_close((uv_handle_t *)&r->dirs[i]->handle, on_close_dir);
    r->ndirs = 0;
    uv_close((uv_handle_t *)&r->debounce, on_close_timer);
}
