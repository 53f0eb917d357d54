/* doppel export: the journal as CSV (or the newest snapshot as JSON). */
#ifndef DP_CMD_EXPORT_H
#define DP_CMD_EXPORT_H

/* The help text of the command's options. */
#define DP_CMD_EXPORT_HELP                                                                         \
    "Writes the journal's records as CSV to standard output, oldest first:\n"                      \
    "  seq,time,type,tag,value,quality,twin,kind,text\n"                                           \
    "time is ISO 8601 UTC with microseconds; type is sample, event or command;\n"                  \
    "a sample with an empty value changed only its quality; derived samples (set by\n"             \
    "twins) have kind \"derived\". Corrupted stretches are skipped and reported on\n"              \
    "standard error.\n\n"                                                                          \
    "Options:\n"                                                                                   \
    "  --data-dir DIR   the plant's data directory (journal in DIR/journal)\n"                     \
    "  --tags GLOB      only samples and commands of matching tags (\"P101.*\",\n"                 \
    "                   several globs separated by commas); events are left out\n"                 \
    "  --from TIME      records at or after TIME (ISO 8601 UTC or epoch seconds)\n"                \
    "  --to TIME        records before TIME\n"                                                     \
    "  --csv            CSV output (the default and only format)\n"                                \
    "  --state          instead: the newest valid snapshot (DIR/snapshots) as JSON,\n"             \
    "                   with the record it covers, every tag's value and every\n"                  \
    "                   twin's state\n"

/* Runs `doppel export` with the arguments after the command name; data_dir
 * is the default data directory (--data-dir among argv overrides it).
 * Returns the exit status. */
int dp_cmd_export(int argc, char **argv, const char *data_dir);

#endif
