/* Runs the bundled demo pump station for one simulated day in virtual time
 * and checks what its twins computed and the alarms they raised. */
#include <criterion/criterion.h>
#include <math.h>
#include <msgpack.h>
#include <string.h>
#include <uv.h>

#include "runtime/alarms.h"
#include "runtime/command.h"
#include "runtime/log.h"
#include "runtime/plant.h"

#define T0     INT64_C(1767225600000000) /* 2026-01-01T00:00:00Z */
#define HOUR   (3600 * DP_US_PER_SEC)
#define MINUTE (60 * DP_US_PER_SEC)

typedef struct {
    char twin[16];
    char state[16];
    char name[32];
    dp_time_t ts;
} alarm_t;

static alarm_t alarms[64];
static int nalarms;
static int nrecommendations;
static int nwork_orders;
static int ncommands, ncommands_done;
static double last_command = -1;

/* Every command the recommendation issues is done by the guard (a writable
 * tag without a device is written to the store) and within its limits. */
static void on_command(const dp_cmd_t *cmd, void *ud)
{
    (void)ud;
    ncommands++;
    cr_assert_str_eq(cmd->tag, "P101.speed_sp");
    cr_assert_str_eq(cmd->origin, "twin:P101");
    cr_assert_eq(cmd->outcome, DP_CMD_DONE, "command %s: %s", cmd->tag, cmd->reason);
    cr_assert(cmd->value.u.n >= 900 && cmd->value.u.n <= 1480);
    ncommands_done++;
    last_command = cmd->value.u.n;
}

/* Reads a string field of the event's msgpack map. */
static void field(const dp_event_t *ev, const char *key, char *out, size_t size)
{
    out[0] = '\0';
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, ev->payload, ev->payload_len, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            msgpack_object k = u.data.via.map.ptr[i].key, v = u.data.via.map.ptr[i].val;
            if (k.type == MSGPACK_OBJECT_STR && k.via.str.size == strlen(key) &&
                memcmp(k.via.str.ptr, key, k.via.str.size) == 0 && v.type == MSGPACK_OBJECT_STR)
                snprintf(out, size, "%.*s", (int)v.via.str.size, v.via.str.ptr);
        }
    }
    msgpack_unpacked_destroy(&u);
}

static void on_event(const dp_event_t *ev, void *ud)
{
    (void)ud;
    if (strcmp(ev->kind, "recommendation") == 0 && strcmp(ev->twin, "P101") == 0)
        nrecommendations++;
    if (strcmp(ev->kind, "work_order") == 0)
        nwork_orders++;
    if (strcmp(ev->kind, "alarm") != 0 || nalarms == 64)
        return;
    alarm_t *a = &alarms[nalarms++];
    snprintf(a->twin, sizeof a->twin, "%s", ev->twin);
    field(ev, "state", a->state, sizeof a->state);
    field(ev, "name", a->name, sizeof a->name);
    a->ts = ev->ts;
}

static double num(dp_plant_t *p, const char *name)
{
    dp_store_t *s = dp_plant_store(p);
    int id = dp_store_find(s, name);
    cr_assert_geq(id, 0, "no tag %s", name);
    cr_assert_eq(dp_store_get(s, id)->v.type, DP_NUM, "%s has no number", name);
    return dp_store_get(s, id)->v.u.n;
}

Test(demo, one_simulated_day_in_virtual_time)
{
    dp_log_set_level(DP_LOG_WARN);
    char *err = NULL;
    dp_plant_opts_t o = {.path = "embed:examples/pump-station/plant.lua", .start = T0};
    dp_plant_t *p = dp_plant_open(&o, &err);
    cr_assert_not_null(p, "%s", err);
    dp_plant_on_event(p, on_event, NULL);
    dp_guard_on_command(dp_plant_guard(p), on_command, NULL);
    cr_assert_eq(dp_plant_start(p, &err), 0, "%s", err);

    uint64_t t0 = uv_hrtime();
    int64_t steps = dp_plant_run_until(p, T0 + 24 * HOUR);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    cr_log_info("one day: %lld timer events in %.2f s", (long long)steps, secs);
    cr_assert_gt(steps, 500000);

    /* P101's vibration fault (14:00 for 40 min) raises one alarm after the
     * 30 s on-delay and clears when the fault ends; nothing else alarms. */
    cr_assert_eq(nalarms, 2, "expected 2 alarm transitions, got %d", nalarms);
    cr_assert_str_eq(alarms[0].twin, "P101");
    cr_assert_str_eq(alarms[0].name, "vibration_high");
    cr_assert_str_eq(alarms[0].state, "active");
    cr_assert_geq(alarms[0].ts, T0 + 14 * HOUR + 30 * DP_US_PER_SEC);
    cr_assert_lt(alarms[0].ts, T0 + 14 * HOUR + 2 * MINUTE);
    cr_assert_str_eq(alarms[1].twin, "P101");
    cr_assert_str_eq(alarms[1].state, "cleared");
    cr_assert_geq(alarms[1].ts, T0 + 14 * HOUR + 40 * MINUTE);
    cr_assert_lt(alarms[1].ts, T0 + 14 * HOUR + 42 * MINUTE);

    /* The plant's alarm list: it returned to normal, nobody acknowledged it. */
    dp_alarms_t *list = dp_plant_alarms(p);
    int vib = dp_alarms_find(list, "P101", "vibration_high");
    cr_assert_geq(vib, 0);
    dp_alarm_info_t info;
    cr_assert_eq(dp_alarms_get(list, vib, &info), 0);
    cr_assert_eq(info.state, DP_ALARM_RTN_UNACKED);
    cr_assert_not(info.active);
    cr_assert_eq(info.severity, DP_SEV_HIGH);

    /* Derived tags are computed and plausible. */
    double eff1 = num(p, "P101.efficiency"), eff2 = num(p, "P102.efficiency");
    cr_assert(eff1 > 55 && eff1 < 90, "P101 efficiency %.1f%%", eff1);
    cr_assert(eff2 > 55 && eff2 < 90, "P102 efficiency %.1f%%", eff2);
    /* P101 runs all day; P102 runs half of every 8 h. Minute ticks at 1..1440. */
    cr_assert_float_eq(num(p, "P101.run_hours"), 24.0, 1e-6);
    cr_assert_float_eq(num(p, "P102.run_hours"), 12.0, 2.0 / 60);
    /* P102 starts at 0 h, 8 h, 16 h and 24 h (the run includes its end). */
    cr_assert_eq(num(p, "P102.starts"), 4);
    cr_assert_eq(num(p, "P101.starts"), 1);
    double total = num(p, "station.total_flow");
    cr_assert(total > 80 && total < 300, "total flow %.1f", total);
    /* Station energy: about 20 kW + 19 kW half the time over a day. */
    double kwh = num(p, "station.energy"), cost = num(p, "station.energy_cost");
    cr_assert(kwh > 600 && kwh < 850, "station energy %.1f kWh", kwh);
    cr_assert(cost > 0.11 * kwh && cost < 0.24 * kwh, "cost %.2f for %.1f kWh", cost, kwh);
    double sec = num(p, "station.energy_per_m3");
    cr_assert(sec > 0.12 && sec < 0.25, "specific energy %.3f kWh/m3", sec);
    cr_assert_eq(num(p, "station.active_alarms"), 0);
    /* What-if: a recommendation every 15 min while P101 runs (it always does),
     * a lower speed for a demand below its flow, nothing written. */
    cr_assert_eq(nrecommendations, 96, "%d recommendations", nrecommendations);
    double speed = num(p, "P101.recommended_speed");
    cr_assert(speed > 1000 && speed < 1480, "recommended speed %.0f rpm", speed);
    cr_assert(num(p, "P101.predicted_saving") > 0);
    /* P101 writes its recommendation through the guard when it moves by 10
     * rpm or more; P102 only recommends. */
    cr_log_info("%d speed_sp commands, last %.0f rpm", ncommands, last_command);
    cr_assert(ncommands > 10 && ncommands <= 96, "%d commands", ncommands);
    cr_assert_eq(ncommands_done, ncommands);
    cr_assert_float_eq(num(p, "P101.speed_sp"), last_command, 1e-9);
    cr_assert(fabs(num(p, "P101.speed_sp") - speed) < 10);
    cr_assert_eq(
        dp_store_get(dp_plant_store(p), dp_store_find(dp_plant_store(p), "P102.speed_sp"))->v.type,
        DP_NIL);
    /* Predictive maintenance: P101 wears faster than P102. */
    cr_log_info(
        "P101 rul %.2f d (low %.2f), health %.2f, anomaly %.2f; P102 rul %.2f d health %.2f",
        num(p, "P101.vibration_rul"), num(p, "P101.vibration_rul_low"), num(p, "P101.health"),
        num(p, "P101.vibration_anomaly"), num(p, "P102.vibration_rul"), num(p, "P102.health"));
    double rul1 = num(p, "P101.vibration_rul"), rul2 = num(p, "P102.vibration_rul");
    cr_assert(rul1 > 0.5 && rul1 < 5, "P101 vibration RUL %.2f d", rul1);
    cr_assert(rul2 > 3 * rul1, "P102 RUL %.2f d vs P101 %.2f d", rul2, rul1);
    cr_assert(num(p, "P101.vibration_rul_low") <= rul1);
    for (int k = 0; k < 2; k++) {
        double h = num(p, k ? "P102.health" : "P101.health");
        cr_assert(h >= 0 && h <= 1, "health %.2f", h);
    }
    /* Work orders: P101's lasting vibration alarm and its vibration trend. */
    cr_assert_eq(nwork_orders, 2, "%d work orders", nwork_orders);

    cr_assert_eq(
        dp_store_get(dp_plant_store(p), dp_store_find(dp_plant_store(p), "P101.vibration_alarm"))
            ->v.u.b,
        false);

    for (int i = 0; i < dp_plant_twin_count(p); i++) {
        dp_twin_stats_t st;
        dp_twin_get_stats(dp_plant_twin_at(p, i), &st);
        cr_assert_eq(st.errors + st.faults, 0, "twin %s had errors",
                     dp_twin_name(dp_plant_twin_at(p, i)));
    }
    dp_plant_free(p);
}
