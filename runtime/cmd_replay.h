/* `doppel replay PLANT --input RECORDING`: runs a plant's twins over a
 * recording in virtual time and writes what they derive (derived tag changes,
 * alarms, events, commands) as CSV or msgpack. The input is a CSV recording
 * (recording.h) or a journal (journal.h). docs/replay.md describes the
 * formats; the output is byte-identical for the same plant and input. */
#ifndef DP_CMD_REPLAY_H
#define DP_CMD_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "common.h"

typedef enum { DP_REPLAY_CSV = 0, DP_REPLAY_MSGPACK } dp_replay_format_t;

typedef struct {
    const char *plant; /* plant file */
    const char *input; /* CSV recording, or a journal folder (or a data dir with journal/) */
    double speed;      /* 0: as fast as possible; N: N times real time */
    bool has_from, has_to;
    dp_time_t from, to;
    const char *out; /* output file; NULL: stdout */
    dp_replay_format_t format;
    /* Progress on stderr: 0 none, 1 plain lines, 2 a bar (a terminal). */
    int progress;
} dp_replay_opts_t;

typedef struct {
    uint64_t samples;     /* fed to the plant */
    uint64_t skipped;     /* outside --from/--to, or of derived tags */
    uint64_t records;     /* output records */
    uint64_t tag_changes; /* derived tag changes written */
    uint64_t alarms;      /* alarm events */
    uint64_t events;      /* other events */
    uint64_t commands;
    int64_t timer_events;
    dp_time_t start, end; /* virtual time span */
    double wall_s;
} dp_replay_stats_t;

/* Runs a replay. Returns 0, or a negative error with *err saying what was
 * wrong (a malformed recording names file:line:column). */
int dp_replay_run(const dp_replay_opts_t *opts, dp_replay_stats_t *stats, char **err);

/* The command: parses option strings as given on the command line (NULL
 * when absent) and runs. Returns the exit status (0, 1 failure, 2 usage). */
int dp_cmd_replay(int argc, char **argv, const char *input, const char *speed, const char *from,
                  const char *to, const char *out, const char *format);

#endif
