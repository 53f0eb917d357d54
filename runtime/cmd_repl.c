#include "cmd_repl.h"

#include <errno.h>
#include <fcntl.h>
#include <histedit.h>
#include <lauxlib.h>
#include <locale.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <wchar.h>

#include "common.h"
#include "replproto.h"
#include "tls.h"

typedef struct {
    int fd;
    SSL_CTX *tls; /* NULL: plain text */
    SSL *ssl;
    char *rbuf;
    size_t rlen, rcap;
    uint64_t next_id;
    char *plant;
    char *where;
    bool color;
    bool tty; /* stdout is a terminal */
    bool lost;
    bool cancel_line;
    EditLine *el;
    History *hist;
    char *hist_path;
    lua_State *L;
} client_t;

static int g_sigpipe[2] = {-1, -1};
static char g_prompt[256];

static void on_sigint(int sig)
{
    (void)sig;
    int saved = errno;
    if (g_sigpipe[1] >= 0 && write(g_sigpipe[1], "x", 1) < 0) {
        /* Nothing to do: a full pipe already says "interrupted". */
    }
    errno = saved;
}

static void drain_sigpipe(void)
{
    char b[64];
    while (read(g_sigpipe[0], b, sizeof b) > 0) {
    }
}

/* ---- connecting ----------------------------------------------------------- */

static int connect_unix(const char *data_dir, char *shown, size_t size)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/repl.sock", data_dir);
    snprintf(shown, size, "%s/repl.sock", data_dir);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) {
        fprintf(stderr, "doppel repl: socket path %s is too long for a Unix socket\n", shown);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (e == ENOENT)
            fprintf(stderr,
                    "doppel repl: no plant is running with data dir \"%s\" (%s not found; "
                    "start one with `doppel run`, or give --data-dir)\n",
                    data_dir, shown);
        else if (e == ECONNREFUSED)
            fprintf(stderr,
                    "doppel repl: %s exists but no plant answers (did `doppel run` stop "
                    "abruptly?)\n",
                    shown);
        else
            fprintf(stderr, "doppel repl: cannot connect to %s: %s\n", shown, strerror(e));
        return -1;
    }
    return fd;
}

/* The host of "HOST:PORT" or "[IPv6]:PORT" (checked to have a colon), in buf. */
static const char *host_of(const char *addr, char *buf, size_t size)
{
    const char *colon = strrchr(addr, ':');
    snprintf(buf, size, "%.*s", (int)(colon - addr), addr);
    size_t hl = strlen(buf);
    if (hl > 2 && buf[0] == '[' && buf[hl - 1] == ']') {
        buf[hl - 1] = '\0';
        return buf + 1;
    }
    return buf;
}

/* Connects to HOST:PORT; with `plain` (no TLS) only to a loopback address,
 * so that the token never crosses a network in clear. */
static int connect_tcp(const char *addr, bool plain)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || colon[1] == '\0') {
        fprintf(stderr, "doppel repl: --connect \"%s\": expected HOST:PORT\n", addr);
        return -1;
    }
    char host[256];
    const char *h = host_of(addr, host, sizeof host);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(h, colon + 1, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "doppel repl: --connect %s: %s\n", addr, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    bool remote = false;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        if (plain && !dp_is_loopback(ai->ai_addr)) {
            remote = true;
            continue;
        }
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0 && remote && e == 0)
        fprintf(stderr,
                "doppel repl: %s is not a loopback address: the token would travel in clear; "
                "add --ca CERT or --tls (the plant listens with --repl-cert), or use an SSH "
                "tunnel to a loopback port\n",
                addr);
    else if (fd < 0)
        fprintf(stderr, "doppel repl: cannot connect to %s: %s\n", addr, strerror(e));
    return fd;
}

/* TLS over the connected socket: the plant's certificate must chain to a
 * trusted CA (`ca`, or the system's) and name the host given in `addr` (a
 * DNS name or an IP address). */
static int start_tls(client_t *cl, const char *addr, const char *ca)
{
    char host[256];
    const char *h = host_of(addr, host, sizeof host);
    cl->tls = SSL_CTX_new(TLS_client_method());
    if (cl->tls == NULL) {
        fprintf(stderr, "doppel repl: TLS: %s\n", dp_tls_reason("the connection was closed"));
        return -1;
    }
    SSL_CTX_set_min_proto_version(cl->tls, TLS1_2_VERSION);
    SSL_CTX_set_verify(cl->tls, SSL_VERIFY_PEER, NULL);
    /* Reads return after each record instead of waiting for data, so a
     * record without data (a ticket) never blocks the prompt. */
    SSL_CTX_clear_mode(cl->tls, SSL_MODE_AUTO_RETRY);
    if (ca != NULL ? SSL_CTX_load_verify_locations(cl->tls, ca, NULL) != 1
                   : SSL_CTX_set_default_verify_paths(cl->tls) != 1) {
        fprintf(stderr, "doppel repl: --ca %s: cannot load the CA certificates: %s\n",
                ca != NULL ? ca : "(system)", dp_tls_reason("the connection was closed"));
        return -1;
    }
    cl->ssl = SSL_new(cl->tls);
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, h, ip) == 1 || inet_pton(AF_INET6, h, ip) == 1;
    if (is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(cl->ssl), h);
    else {
        SSL_set1_host(cl->ssl, h);
        SSL_set_tlsext_host_name(cl->ssl, h);
    }
    SSL_set_fd(cl->ssl, cl->fd);
    if (SSL_connect(cl->ssl) != 1) {
        long v = SSL_get_verify_result(cl->ssl);
        if (v != X509_V_OK)
            fprintf(stderr,
                    "doppel repl: TLS with %s: the plant's certificate is not trusted: %s\n", addr,
                    X509_verify_cert_error_string(v));
        else
            fprintf(stderr,
                    "doppel repl: TLS with %s failed: %s (is the plant listening with "
                    "--repl-cert?)\n",
                    addr, dp_tls_reason("the connection was closed"));
        return -1;
    }
    return 0;
}

/* ---- frames ----------------------------------------------------------------- */

static int send_frame(client_t *cl, const dp_repl_msg_t *m)
{
    char *buf = NULL, *err = NULL;
    size_t len = 0;
    if (dp_repl_encode(m, &buf, &len, &err) < 0) {
        fprintf(stderr, "doppel repl: %s\n", err);
        free(err);
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n;
        if (cl->ssl != NULL) {
            int w = SSL_write(cl->ssl, buf + off, (int)(len - off));
            n = w > 0 ? w : -1;
            if (w <= 0)
                errno = ECONNRESET;
        } else {
            n = write(cl->fd, buf + off, len - off);
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "doppel repl: lost the connection to the plant: %s\n", strerror(errno));
            cl->lost = true;
            free(buf);
            return -1;
        }
        off += (size_t)n;
    }
    free(buf);
    return 0;
}

/* Reads what the socket has into the buffer. -1 on EOF or error; 0 also
 * when a TLS record brought no data. */
static int fill(client_t *cl)
{
    if (cl->rcap - cl->rlen < 65536) {
        cl->rcap = cl->rlen + 65536;
        cl->rbuf = dp_xrealloc(cl->rbuf, cl->rcap);
    }
    ssize_t n;
    if (cl->ssl != NULL) {
        int r = SSL_read(cl->ssl, cl->rbuf + cl->rlen, (int)(cl->rcap - cl->rlen));
        if (r <= 0 && SSL_get_error(cl->ssl, r) == SSL_ERROR_WANT_READ)
            return 0;
        n = r;
    } else {
        do
            n = read(cl->fd, cl->rbuf + cl->rlen, cl->rcap - cl->rlen);
        while (n < 0 && errno == EINTR);
    }
    if (n <= 0) {
        cl->lost = true;
        return -1;
    }
    cl->rlen += (size_t)n;
    return 0;
}

/* A complete message from the buffer: 1, 0 (none yet) or -1 (malformed). */
static int take(client_t *cl, dp_repl_msg_t *m)
{
    size_t used = 0;
    char *err = NULL;
    int rc = dp_repl_decode(cl->rbuf, cl->rlen, m, &used, &err);
    if (rc < 0) {
        fprintf(stderr, "doppel repl: malformed frame from the plant: %s\n", err);
        free(err);
        cl->lost = true;
        return -1;
    }
    if (rc == 1) {
        memmove(cl->rbuf, cl->rbuf + used, cl->rlen - used);
        cl->rlen -= used;
    }
    return rc;
}

/* Waits for the next message. Returns 1, or 0 when Ctrl-C was pressed
 * (with watch_sigint), or -1 when the connection is gone. */
static int recv_msg(client_t *cl, dp_repl_msg_t *m, bool watch_sigint)
{
    for (;;) {
        int rc = take(cl, m);
        if (rc != 0)
            return rc;
        if (cl->ssl != NULL && SSL_pending(cl->ssl) > 0) {
            if (fill(cl) < 0)
                return -1;
            continue;
        }
        struct pollfd p[2] = {{.fd = cl->fd, .events = POLLIN},
                              {.fd = g_sigpipe[0], .events = POLLIN}};
        int n = poll(p, watch_sigint ? 2 : 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (watch_sigint && (p[1].revents & POLLIN)) {
            drain_sigpipe();
            return 0;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (fill(cl) < 0) {
                fprintf(stderr, "doppel repl: the plant closed the connection\n");
                return -1;
            }
        }
    }
}

static void print_notice(client_t *cl, const char *text)
{
    if (cl->color)
        printf("\033[2m%s\033[0m\n", text);
    else
        printf("%s\n", text);
}

static void set_where(client_t *cl, const char *where)
{
    if (where == NULL)
        return;
    free(cl->where);
    cl->where = dp_xstrdup(where);
    if (strcmp(where, "plant") == 0)
        snprintf(g_prompt, sizeof g_prompt, "%s> ", cl->plant);
    else
        snprintf(g_prompt, sizeof g_prompt, "%s:%s> ", cl->plant, where);
}

/* Sends a request and handles messages until its answer arrives. Output
 * lines are printed as they come; Ctrl-C sends "cancel" (stopping a .watch).
 * Returns 1 with *answer filled (the caller clears it), or -1. */
static int request(client_t *cl, dp_repl_type_t type, const char *text, dp_repl_msg_t *answer,
                   bool show_notices)
{
    uint64_t id = ++cl->next_id;
    dp_repl_msg_t m = {.type = type, .id = id, .text = (char *)text};
    if (send_frame(cl, &m) < 0)
        return -1;
    for (;;) {
        int rc = recv_msg(cl, answer, type == DP_RM_EVAL);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            if (cl->tty)
                printf("\n"); /* after the ^C the terminal echoed */
            dp_repl_msg_t cancel = {.type = DP_RM_CANCEL, .id = id};
            if (send_frame(cl, &cancel) < 0)
                return -1;
            continue;
        }
        if (answer->type == DP_RM_ERROR) {
            fprintf(stderr, "doppel repl: the plant refused: %s\n", answer->text);
            dp_repl_msg_clear(answer);
            cl->lost = true;
            return -1;
        }
        if (answer->type == DP_RM_OUT && answer->id == id) {
            printf("%s\n", answer->text);
            fflush(stdout);
        } else if (answer->type == DP_RM_OUT && answer->id == 0) {
            if (show_notices)
                print_notice(cl, answer->text);
        } else if ((answer->type == DP_RM_RESULT || answer->type == DP_RM_ITEMS) &&
                   answer->id == id) {
            return 1;
        }
        dp_repl_msg_clear(answer);
    }
}

static int hello(client_t *cl)
{
    dp_repl_msg_t m = {
        .type = DP_RM_HELLO, .version = DP_REPL_VERSION, .token = getenv("DOPPEL_REPL_TOKEN")};
    if (send_frame(cl, &m) < 0)
        return -1;
    dp_repl_msg_t r;
    if (recv_msg(cl, &r, false) < 0)
        return -1;
    if (r.type == DP_RM_ERROR) {
        fprintf(stderr, "doppel repl: the plant refused the connection: %s\n", r.text);
        dp_repl_msg_clear(&r);
        return -1;
    }
    if (r.type != DP_RM_HELLO) {
        fprintf(stderr, "doppel repl: expected \"hello\" from the plant, got \"%s\"\n",
                dp_repl_type_name((int)r.type));
        dp_repl_msg_clear(&r);
        return -1;
    }
    cl->plant = dp_xstrdup(r.text != NULL ? r.text : "plant");
    set_where(cl, r.where != NULL ? r.where : "plant");
    dp_repl_msg_clear(&r);
    return 0;
}

/* ---- line editing ----------------------------------------------------------- */

static char *prompt_fn(EditLine *el)
{
    (void)el;
    return g_prompt;
}

static char g_cont_prompt[] = ">> ";

static char *cont_prompt_fn(EditLine *el)
{
    (void)el;
    return g_cont_prompt;
}

/* Reads one character for libedit, printing notices from the plant (a
 * reload, an error) above the line being edited as they arrive. */
static int getc_fn(EditLine *el, wchar_t *wc)
{
    client_t *cl = NULL;
    el_get(el, EL_CLIENTDATA, &cl);
    mbstate_t ps;
    memset(&ps, 0, sizeof ps);
    for (;;) {
        struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                              {.fd = cl->fd, .events = POLLIN}};
        /* Bytes TLS already decrypted are not on the socket any more. */
        bool pending = cl->ssl != NULL && SSL_pending(cl->ssl) > 0;
        int n = poll(p, 2, pending ? 0 : -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (pending)
            p[1].revents |= POLLIN;
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (fill(cl) < 0) {
                printf("\r\033[K(the plant closed the connection)\n");
                return 0;
            }
            dp_repl_msg_t m;
            bool printed = false;
            while (take(cl, &m) == 1) {
                if (m.type == DP_RM_OUT && m.id == 0) {
                    if (!printed)
                        printf("\r\033[K");
                    print_notice(cl, m.text);
                    printed = true;
                }
                dp_repl_msg_clear(&m);
            }
            if (cl->lost)
                return 0;
            if (printed) {
                fflush(stdout);
                el_set(el, EL_REFRESH);
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char b;
            ssize_t r = read(STDIN_FILENO, &b, 1);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return 0;
            size_t k = mbrtowc(wc, &b, 1, &ps);
            if (k == (size_t)-2)
                continue; /* more bytes of a multibyte character */
            if (k == (size_t)-1) {
                memset(&ps, 0, sizeof ps);
                *wc = (wchar_t)(unsigned char)b;
            }
            return 1;
        }
    }
}

/* Ctrl-C while editing: drop the line (and any unfinished chunk). */
static unsigned char cancel_fn(EditLine *el, int ch)
{
    (void)ch;
    client_t *cl = NULL;
    el_get(el, EL_CLIENTDATA, &cl);
    const LineInfo *li = el_line(el);
    el_cursor(el, (int)(li->lastchar - li->cursor));
    el_insertstr(el, "^C");
    cl->cancel_line = true;
    /* An Enter of our own ends the line the usual way (display included). */
    el_push(el, "\n");
    return CC_REFRESH;
}

static int term_width(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

/* Tab: the plant completes the word before the cursor. */
static unsigned char complete_fn(EditLine *el, int ch)
{
    (void)ch;
    client_t *cl = NULL;
    el_get(el, EL_CLIENTDATA, &cl);
    const LineInfo *li = el_line(el);
    char *text = strndup(li->buffer, (size_t)(li->cursor - li->buffer));
    dp_repl_msg_t r;
    int rc = request(cl, DP_RM_COMPLETE, text, &r, false);
    free(text);
    if (rc < 0)
        return CC_EOF;
    unsigned char ret = CC_REFRESH_BEEP;
    const char *word = r.text != NULL ? r.text : "";
    size_t wl = strlen(word);
    if (r.nitems > 0) {
        /* The longest prefix all candidates share. */
        size_t common = strlen(r.items[0]);
        for (size_t i = 1; i < r.nitems; i++) {
            size_t k = 0;
            while (k < common && r.items[i][k] == r.items[0][k])
                k++;
            common = k;
        }
        if (common > wl && strncmp(r.items[0], word, wl) == 0) {
            char *add = strndup(r.items[0] + wl, common - wl);
            el_insertstr(el, add);
            free(add);
            ret = CC_REFRESH;
        } else if (r.nitems == 1 || common < wl) {
            /* A replacement that does not extend the word (e.g. other case). */
            if (strcmp(r.items[0], word) != 0 && r.nitems == 1) {
                el_deletestr(el, (int)wl);
                el_insertstr(el, r.items[0]);
                ret = CC_REFRESH;
            }
        } else {
            size_t width = 0;
            for (size_t i = 0; i < r.nitems; i++) {
                if (strlen(r.items[i]) > width)
                    width = strlen(r.items[i]);
            }
            width += 2;
            size_t cols = (size_t)term_width() / width;
            if (cols == 0)
                cols = 1;
            printf("\n");
            for (size_t i = 0; i < r.nitems; i++)
                printf("%-*s%s", (int)width, r.items[i],
                       (i + 1) % cols == 0 || i + 1 == r.nitems ? "\n" : "");
            ret = CC_REDISPLAY;
        }
    }
    dp_repl_msg_clear(&r);
    return ret;
}

/* ---- chunks ----------------------------------------------------------------- */

/* True when `chunk` is unfinished Lua (as the standalone lua decides: the
 * syntax error is at <eof>), so the next line continues it. */
static bool incomplete(lua_State *L, const char *chunk)
{
    char *ret = dp_xasprintf("return %s;", chunk);
    int rc = luaL_loadbuffer(L, ret, strlen(ret), "=repl");
    free(ret);
    lua_pop(L, 1);
    if (rc == LUA_OK)
        return false;
    rc = luaL_loadbuffer(L, chunk, strlen(chunk), "=repl");
    bool more = false;
    if (rc == LUA_ERRSYNTAX) {
        size_t len;
        const char *msg = lua_tolstring(L, -1, &len);
        more = len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
    }
    lua_pop(L, 1);
    return more;
}

static bool is_command(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s[0] == '.' && !(s[1] >= '0' && s[1] <= '9');
}

static bool blank(const char *s)
{
    for (; *s; s++) {
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return false;
    }
    return true;
}

/* Evaluates one chunk and prints the outcome. Returns 1 for success, 0 for
 * an error result, -1 when the connection is gone. */
static int eval_chunk(client_t *cl, const char *chunk, bool interactive)
{
    dp_repl_msg_t r;
    if (request(cl, DP_RM_EVAL, chunk, &r, interactive) < 0)
        return -1;
    set_where(cl, r.where);
    int ok = r.ok ? 1 : 0;
    if (r.text != NULL && r.text[0] != '\0') {
        if (r.ok)
            printf("%s\n", r.text);
        else if (interactive && cl->color)
            printf("\033[31m%s\033[0m\n", r.text);
        else
            fprintf(interactive ? stdout : stderr, "%s\n", r.text);
    }
    fflush(stdout);
    dp_repl_msg_clear(&r);
    return ok;
}

/* Reads a line: libedit on a terminal, plain stdin otherwise. The result
 * has no trailing newline and is malloc'd; NULL at end of input. */
static char *read_line(client_t *cl, bool cont)
{
    if (cl->el != NULL) {
        el_set(cl->el, EL_PROMPT, cont ? cont_prompt_fn : prompt_fn);
        /* Editing mode before the prompt shows, not at the first key: a key
         * typed as soon as the prompt appears must not meet the cooked
         * terminal (a Ctrl-D there would be lost). */
        el_set(cl->el, EL_PREP_TERM, 1);
        int count = 0;
        const char *s = el_gets(cl->el, &count);
        if (s == NULL || count <= 0)
            return NULL;
        char *line = dp_xstrdup(s);
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] == '\n')
            line[n - 1] = '\0';
        return line;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    if (n > 0 && line[n - 1] == '\n')
        line[n - 1] = '\0';
    return line;
}

static void setup_editor(client_t *cl)
{
    cl->el = el_init("doppel", stdin, stdout, stderr);
    el_set(cl->el, EL_CLIENTDATA, cl);
    el_set(cl->el, EL_EDITOR, "emacs");
    el_set(cl->el, EL_SIGNAL, 1);
    el_source(cl->el, NULL); /* the user's ~/.editrc, before our own bindings */
    el_set(cl->el, EL_GETCFN, getc_fn);
    /* The wide calls: libedit's narrow EL_ADDFN copies the names and never
     * frees them. */
    el_wset(cl->el, EL_ADDFN, L"doppel-complete", L"complete with the plant's names", complete_fn);
    el_set(cl->el, EL_BIND, "^I", "doppel-complete", NULL);
    el_wset(cl->el, EL_ADDFN, L"doppel-cancel", L"cancel the line", cancel_fn);
    el_set(cl->el, EL_BIND, "^C", "doppel-cancel", NULL);
    /* Ctrl-C reaches us as a key while editing (and as SIGINT otherwise). */
    el_set(cl->el, EL_SETTY, "-d", "-isig", NULL);

    cl->hist = history_init();
    HistEvent ev;
    history(cl->hist, &ev, H_SETSIZE, 1000);
    history(cl->hist, &ev, H_SETUNIQUE, 1);
    const char *path = getenv("DOPPEL_HISTORY");
    const char *home = getenv("HOME");
    if (path != NULL && path[0] != '\0')
        cl->hist_path = dp_xstrdup(path);
    else if (home != NULL)
        cl->hist_path = dp_xasprintf("%s/.doppel_history", home);
    if (cl->hist_path != NULL)
        history(cl->hist, &ev, H_LOAD, cl->hist_path);
    el_set(cl->el, EL_HIST, history, cl->hist);
}

static void remember(client_t *cl, const char *chunk)
{
    if (cl->hist == NULL)
        return;
    HistEvent ev;
    history(cl->hist, &ev, H_ENTER, chunk);
    if (cl->hist_path != NULL)
        history(cl->hist, &ev, H_SAVE, cl->hist_path);
}

static int interactive(client_t *cl, const char *shown)
{
    bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    if (tty) {
        setup_editor(cl);
        printf("doppel %s: attached to plant %s (%s)\n"
               ".help lists the commands; Tab completes; Ctrl-D leaves.\n",
               DP_VERSION, cl->plant, shown);
    }
    int status = 0;
    char *chunk = NULL;
    for (;;) {
        char *line = read_line(cl, chunk != NULL);
        if (cl->lost) {
            free(line);
            status = 1;
            break;
        }
        if (line == NULL) {
            if (tty)
                printf("\n");
            break;
        }
        if (cl->cancel_line) {
            cl->cancel_line = false;
            free(line);
            free(chunk);
            chunk = NULL;
            continue;
        }
        if (chunk == NULL) {
            chunk = line;
        } else {
            char *joined = dp_xasprintf("%s\n%s", chunk, line);
            free(chunk);
            free(line);
            chunk = joined;
        }
        if (blank(chunk)) {
            free(chunk);
            chunk = NULL;
            continue;
        }
        if (!is_command(chunk) && incomplete(cl->L, chunk))
            continue;
        remember(cl, chunk);
        int rc = eval_chunk(cl, chunk, true);
        free(chunk);
        chunk = NULL;
        if (rc < 0) {
            status = 1;
            break;
        }
        if (!tty && rc == 0)
            status = 1;
    }
    free(chunk);
    return status;
}

int dp_cmd_repl(int argc, char **argv, const dp_repl_client_opts_t *o)
{
    if (argc > 0) {
        fprintf(stderr,
                "doppel repl: unexpected argument \"%s\" (to evaluate an expression use -e "
                "'EXPR')\n",
                argv[0]);
        return 2;
    }
    setlocale(LC_CTYPE, "");
    client_t cl = {.fd = -1};
    char shown[512];
    if (o->tls && o->connect == NULL) {
        fprintf(stderr, "doppel repl: --tls and --ca need --connect HOST:PORT (the local socket "
                        "needs no TLS)\n");
        return 2;
    }
    if (o->connect != NULL) {
        snprintf(shown, sizeof shown, "%s %s", o->tls ? "tls" : "tcp", o->connect);
        cl.fd = connect_tcp(o->connect, !o->tls);
        if (cl.fd >= 0 && o->tls && start_tls(&cl, o->connect, o->ca) < 0) {
            SSL_free(cl.ssl);
            SSL_CTX_free(cl.tls);
            close(cl.fd);
            return 1;
        }
    } else {
        cl.fd = connect_unix(o->data_dir != NULL ? o->data_dir : "data", shown, sizeof shown);
    }
    if (cl.fd < 0)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    int status = 1;
    if (pipe(g_sigpipe) == 0) {
        fcntl(g_sigpipe[0], F_SETFL, O_NONBLOCK);
        fcntl(g_sigpipe[1], F_SETFL, O_NONBLOCK);
        struct sigaction sa = {.sa_handler = on_sigint};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
    }
    cl.tty = isatty(STDOUT_FILENO);
    cl.color = cl.tty && getenv("NO_COLOR") == NULL;
    if (hello(&cl) < 0) {
        if (o->connect != NULL && !o->tls && cl.lost)
            fprintf(stderr, "doppel repl: (a plant listening with TLS closes plain-text "
                            "connections: add --ca CERT or --tls)\n");
        goto out;
    }
    if (o->eval != NULL) {
        int rc = eval_chunk(&cl, o->eval, false);
        status = rc == 1 ? 0 : 1;
        goto out;
    }
    cl.L = luaL_newstate();
    status = interactive(&cl, shown);
out:
    if (cl.el != NULL)
        el_end(cl.el);
    if (cl.hist != NULL)
        history_end(cl.hist);
    if (cl.L != NULL)
        lua_close(cl.L);
    if (cl.ssl != NULL)
        SSL_shutdown(cl.ssl); /* close_notify; the plant does not answer it */
    SSL_free(cl.ssl);
    SSL_CTX_free(cl.tls);
    close(cl.fd);
    if (g_sigpipe[0] >= 0) {
        signal(SIGINT, SIG_DFL);
        close(g_sigpipe[0]);
        close(g_sigpipe[1]);
        g_sigpipe[0] = g_sigpipe[1] = -1;
    }
    free(cl.rbuf);
    free(cl.plant);
    free(cl.where);
    free(cl.hist_path);
    return status;
}
