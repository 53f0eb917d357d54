# Writes a deterministic recording of the pump station's inputs (wide CSV, see
# docs/replay.md): P101 and P102 flow, head, power, vibration and running,
# one row every `step` seconds for `n` seconds from 2026-01-01T00:00:00Z.
# P101's vibration drifts up and jumps by 6 mm/s from 14:00 to 14:40 (the
# fault of plant.lua); P102 runs for 4 h, stops for 4 h, and so on.
#
#   awk -v n=86400 -v step=10 -f make-recording.awk > day.csv
#   doppel replay plant.lua --input day.csv
BEGIN {
    if (step == "") step = 1
    if (n == "") n = 86400
    if (from == "") from = 0
    pi = 3.141592653589793
    printf "timestamp"
    split("flow head power vibration running", names, " ")
    for (p = 1; p <= 2; p++)
        for (k = 1; k <= 5; k++)
            printf ",P10%d.%s", p, names[k]
    printf "\n"
    t0 = 1767225600
    for (i = from; i < from + n; i += step) {
        a = 2 * pi * i / 21600
        b = a + 2 * pi / 6
        v1 = 2.4 + 1.2 * i / 86400 + 0.1 * sin(i / 31) + ((i >= 50400 && i < 52800) ? 6 : 0)
        v2 = 2.5 + 0.1 * sin(i / 97)
        r2 = (int(i / 14400) % 2 == 0) ? "true" : "false"
        printf "%d,%.3f,%.3f,%.3f,%.3f,true,%.3f,%.3f,%.3f,%.3f,%s\n", t0 + i,
            120 + 15 * sin(a), 46 - 4 * sin(a), 20.5 + 1.6 * sin(a), v1,
            110 + 15 * sin(b), 46 - 4 * sin(b), 19 + 1.6 * sin(b), v2, r2
    }
}
