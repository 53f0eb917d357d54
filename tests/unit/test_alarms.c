/* The plant's alarm list (alarms.h): every state transition, operator
 * actions and their refusals, shelving expiry, suppression, first-out, the
 * events raised; and the same list driven from a twin through doppel.alarm. */
#include <criterion/criterion.h>
#include <math.h>
#include <msgpack.h>
#include <string.h>

#include "harness.h"
#include "runtime/alarms.h"

typedef struct {
    char twin[16], name[32], state[16], by[32], text[256];
    bool first_out;
    dp_time_t ts;
    int priority;
} ev_t;

static ev_t evs[64];
static int nevs;

static void read_payload(const dp_event_t *ev, ev_t *e)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, ev->payload, ev->payload_len, NULL),
                 MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        msgpack_object k = u.data.via.map.ptr[i].key, v = u.data.via.map.ptr[i].val;
        char key[32];
        snprintf(key, sizeof key, "%.*s", (int)k.via.str.size, k.via.str.ptr);
        if (v.type == MSGPACK_OBJECT_STR) {
            char *dst = strcmp(key, "name") == 0    ? e->name
                        : strcmp(key, "state") == 0 ? e->state
                        : strcmp(key, "by") == 0    ? e->by
                                                    : NULL;
            if (dst != NULL)
                snprintf(dst, 32, "%.*s", (int)v.via.str.size, v.via.str.ptr);
        } else if (strcmp(key, "first_out") == 0) {
            e->first_out = v.via.boolean;
        } else if (strcmp(key, "priority") == 0) {
            e->priority = (int)v.via.i64;
        }
    }
    msgpack_unpacked_destroy(&u);
}

static void on_event(const dp_event_t *ev, void *ud)
{
    (void)ud;
    if (strcmp(ev->kind, "alarm") != 0)
        return;
    cr_assert_lt(nevs, 64);
    ev_t *e = &evs[nevs++];
    memset(e, 0, sizeof *e);
    snprintf(e->twin, sizeof e->twin, "%s", ev->twin);
    snprintf(e->text, sizeof e->text, "%s", ev->text);
    e->ts = ev->ts;
    read_payload(ev, e);
}

static dp_clock_t *clk;
static dp_alarms_t *al;

static void setup(void)
{
    nevs = 0;
    clk = dp_clock_new_virtual(T0);
    al = dp_alarms_new(clk, on_event, NULL);
}

static void teardown(void)
{
    dp_alarms_free(al);
    dp_clock_free(clk);
}

static dp_alarm_info_t info(int id)
{
    dp_alarm_info_t i;
    cr_assert_eq(dp_alarms_get(al, id, &i), 0);
    return i;
}

static void advance(dp_time_t d)
{
    dp_clock_run(clk, dp_clock_now(clk) + d, NULL, NULL);
}

TestSuite(alarms, .init = setup, .fini = teardown);

Test(alarms, declare_validates_and_is_idempotent)
{
    cr_assert_eq(dp_alarms_declare(al, "P1", "", "", "", DP_SEV_HIGH, 2, 1), DP_EINVAL);
    cr_assert_eq(dp_alarms_declare(al, "P1", NULL, "", "", DP_SEV_HIGH, 2, 1), DP_EINVAL);
    cr_assert_eq(dp_alarms_declare(al, "P1", "a", "", "", DP_SEV_HIGH, 0, 1), DP_EINVAL);
    cr_assert_eq(dp_alarms_declare(al, "P1", "a", "", "", DP_SEV_HIGH, 5, 1), DP_EINVAL);
    cr_assert_eq(dp_alarms_declare(al, "P1", "a", "", "", (dp_severity_t)9, 2, 1), DP_EINVAL);
    int a = dp_alarms_declare(al, "P1", "a", "m", "", DP_SEV_HIGH, 2, 7.1);
    int b = dp_alarms_declare(al, "P2", "a", "m", "", DP_SEV_LOW, 4, 1);
    cr_assert_eq(a, 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(dp_alarms_condition(al, a, true, 8), 0);
    /* A reload declares again: same id, state kept, new text. */
    cr_assert_eq(dp_alarms_declare(al, "P1", "a", "new text", "g", DP_SEV_CRITICAL, 1, 7.5), a);
    dp_alarm_info_t i = info(a);
    cr_assert(i.active);
    cr_assert_eq(i.state, DP_ALARM_UNACKED);
    cr_assert_str_eq(i.message, "new text");
    cr_assert_eq(i.severity, DP_SEV_CRITICAL);
    cr_assert_eq(i.priority, 1);
    cr_assert_eq(dp_alarms_count(al), 2);
    cr_assert_eq(dp_alarms_find(al, "P2", "a"), b);
    cr_assert_eq(dp_alarms_find(al, "P3", "a"), DP_ENOENT);
    cr_assert_eq(dp_alarms_get(al, 2, &i), DP_EINVAL);
    cr_assert_eq(dp_alarms_get(al, -1, &i), DP_EINVAL);
    cr_assert_eq(dp_alarms_condition(al, 7, true, 0), DP_EINVAL);
    cr_assert_eq(dp_alarms_suppress(al, -1, true), DP_EINVAL);
}

Test(alarms, the_four_isa_states)
{
    int a = dp_alarms_declare(al, "P1", "vib", "check bearings", "", DP_SEV_HIGH, 2, 7.1);
    cr_assert_eq(info(a).state, DP_ALARM_NORMAL);
    /* Repeating the current condition is not a transition. */
    cr_assert_eq(dp_alarms_condition(al, a, false, 1), 0);
    cr_assert_eq(nevs, 0);

    advance(5 * DP_US_PER_SEC);
    dp_alarms_condition(al, a, true, 8.2);
    dp_alarm_info_t i = info(a);
    cr_assert_eq(i.state, DP_ALARM_UNACKED);
    cr_assert(i.active);
    cr_assert_eq(i.since, T0 + 5 * DP_US_PER_SEC);
    cr_assert_float_eq(i.value, 8.2, 1e-12);
    cr_assert_eq(nevs, 1);
    cr_assert_str_eq(evs[0].twin, "P1");
    cr_assert_str_eq(evs[0].name, "vib");
    cr_assert_str_eq(evs[0].state, "active");
    cr_assert_eq(evs[0].priority, 2);
    cr_assert_eq(evs[0].ts, T0 + 5 * DP_US_PER_SEC);
    cr_assert(strstr(evs[0].text, "vib active (high, priority 2) value=8.2 limit=7.1") != NULL,
              "%s", evs[0].text);

    /* Active, acknowledged; then clearing returns it to normal. */
    cr_assert_eq(dp_alarms_ack(al, "P1", "vib", "alice", NULL), 0);
    cr_assert_eq(info(a).state, DP_ALARM_ACKED);
    cr_assert_str_eq(info(a).acked_by, "alice");
    cr_assert_str_eq(evs[1].state, "acknowledged");
    cr_assert_str_eq(evs[1].by, "alice");
    dp_alarms_condition(al, a, false, 6);
    cr_assert_eq(info(a).state, DP_ALARM_NORMAL);
    cr_assert_str_eq(evs[2].state, "cleared");

    /* Active again, clears unacknowledged, then the ack returns it to normal. */
    dp_alarms_condition(al, a, true, 9);
    cr_assert_eq(info(a).state, DP_ALARM_UNACKED);
    cr_assert_str_eq(info(a).acked_by, "");
    dp_alarms_condition(al, a, false, 5);
    cr_assert_eq(info(a).state, DP_ALARM_RTN_UNACKED);
    cr_assert_not(info(a).active);
    cr_assert_eq(dp_alarms_ack(al, "P1", "vib", "bob", NULL), 0);
    cr_assert_eq(info(a).state, DP_ALARM_NORMAL);
    /* Returned to normal unacknowledged, then active again: unacked. */
    dp_alarms_condition(al, a, true, 9);
    dp_alarms_condition(al, a, false, 5);
    dp_alarms_condition(al, a, true, 9);
    cr_assert_eq(info(a).state, DP_ALARM_UNACKED);
    cr_assert_eq(nevs, 9);
}

Test(alarms, actions_that_do_not_apply_are_refused_with_a_reason)
{
    int a = dp_alarms_declare(al, "P1", "vib", "", "", DP_SEV_HIGH, 2, 7.1);
    char *err = NULL;
    cr_assert_eq(dp_alarms_ack(al, "P1", "vib", "alice", &err), DP_ESTATE);
    cr_assert_str_eq(err, "alarm P1.vib needs no acknowledgement (not active)");
    free(err);
    err = NULL;
    dp_alarms_condition(al, a, true, 8);
    dp_alarms_ack(al, "P1", "vib", "alice", NULL);
    cr_assert_eq(dp_alarms_ack(al, "P1", "vib", "alice", &err), DP_ESTATE);
    cr_assert(strstr(err, "already acknowledged") != NULL, "%s", err);
    free(err);
    err = NULL;
    cr_assert_eq(dp_alarms_ack(al, "P1", "nope", "alice", &err), DP_ENOENT);
    cr_assert_str_eq(err, "no alarm \"nope\" in twin P1");
    free(err);
    err = NULL;
    cr_assert_eq(dp_alarms_shelve(al, "P9", "vib", DP_US_PER_SEC, "x", &err), DP_ENOENT);
    free(err);
    err = NULL;
    cr_assert_eq(dp_alarms_shelve(al, "P1", "vib", 0, "x", &err), DP_EINVAL);
    cr_assert_str_eq(err, "shelving needs a duration > 0");
    free(err);
    err = NULL;
    cr_assert_eq(dp_alarms_unshelve(al, "P1", "vib", "x", &err), DP_ESTATE);
    cr_assert_str_eq(err, "alarm P1.vib is not shelved");
    free(err);
    err = NULL;
    cr_assert_eq(dp_alarms_unshelve(al, "P1", "nope", "x", &err), DP_ENOENT);
    free(err);
    /* Refusals raise no events and change nothing. */
    cr_assert_eq(nevs, 2);
    cr_assert_eq(info(a).state, DP_ALARM_ACKED);
}

Test(alarms, shelving_expires_on_the_tick)
{
    int a = dp_alarms_declare(al, "P1", "vib", "", "", DP_SEV_HIGH, 2, 7.1);
    dp_alarms_condition(al, a, true, 8);
    cr_assert_eq(dp_alarms_shelve(al, "P1", "vib", 60 * DP_US_PER_SEC, "alice", NULL), 0);
    dp_alarm_info_t i = info(a);
    cr_assert(i.shelved);
    cr_assert_eq(i.state, DP_ALARM_NORMAL);
    cr_assert_eq(i.shelved_until, T0 + 60 * DP_US_PER_SEC);
    cr_assert_str_eq(evs[1].state, "shelved");
    cr_assert_str_eq(evs[1].by, "alice");
    /* While shelved the condition is tracked but needs no ack. */
    dp_alarms_condition(al, a, false, 5);
    dp_alarms_condition(al, a, true, 9);
    cr_assert_eq(info(a).state, DP_ALARM_NORMAL);
    cr_assert(info(a).active);
    cr_assert_eq(dp_alarms_ack(al, "P1", "vib", "alice", NULL), DP_ESTATE);

    advance(59 * DP_US_PER_SEC);
    dp_alarms_tick(al);
    cr_assert(info(a).shelved);
    int before = nevs;
    advance(DP_US_PER_SEC);
    dp_alarms_tick(al);
    i = info(a);
    cr_assert_not(i.shelved);
    cr_assert_eq(i.shelved_until, 0);
    /* Still active when the shelf expires: annunciated again, unacked. */
    cr_assert_eq(i.state, DP_ALARM_UNACKED);
    cr_assert_eq(nevs, before + 1);
    cr_assert_str_eq(evs[nevs - 1].state, "unshelved");
    cr_assert_str_eq(evs[nevs - 1].by, "expiry");
    dp_alarms_tick(al);
    cr_assert_eq(nevs, before + 1, "expiry is raised once");
}

Test(alarms, unshelve_by_hand_of_an_inactive_alarm)
{
    int a = dp_alarms_declare(al, "P1", "vib", "", "", DP_SEV_HIGH, 2, 7.1);
    cr_assert_eq(dp_alarms_shelve(al, "P1", "vib", DP_US_PER_SEC, NULL, NULL), 0);
    cr_assert_eq(dp_alarms_unshelve(al, "P1", "vib", "bob", NULL), 0);
    cr_assert_not(info(a).shelved);
    cr_assert_eq(info(a).state, DP_ALARM_NORMAL);
    cr_assert_str_eq(evs[1].state, "unshelved");
    cr_assert_str_eq(evs[1].by, "bob");
}

Test(alarms, suppression_by_design)
{
    int a = dp_alarms_declare(al, "P1", "low_flow", "", "", DP_SEV_MEDIUM, 3, 10);
    cr_assert_eq(dp_alarms_suppress(al, a, true), 0);
    cr_assert_str_eq(evs[0].state, "suppressed");
    cr_assert_eq(dp_alarms_suppress(al, a, true), 0);
    cr_assert_eq(nevs, 1, "no event when nothing changes");
    dp_alarms_condition(al, a, true, 2);
    cr_assert(info(a).suppressed);
    cr_assert(info(a).active);
    cr_assert_eq(info(a).state, DP_ALARM_NORMAL);
    /* Lifting the suppression while the condition holds annunciates it. */
    dp_alarms_suppress(al, a, false);
    cr_assert_str_eq(evs[nevs - 1].state, "unsuppressed");
    cr_assert_eq(info(a).state, DP_ALARM_UNACKED);
    /* Suppressing an unacked alarm takes it off the operator's list. */
    dp_alarms_suppress(al, a, true);
    cr_assert_eq(info(a).state, DP_ALARM_NORMAL);
    dp_alarms_condition(al, a, false, 20);
    dp_alarms_suppress(al, a, false);
    cr_assert_eq(info(a).state, DP_ALARM_NORMAL);
}

Test(alarms, first_out_marks_the_first_of_a_group)
{
    int a = dp_alarms_declare(al, "P1", "low_suction", "", "trip", DP_SEV_HIGH, 2, 1);
    int b = dp_alarms_declare(al, "P1", "high_temp", "", "trip", DP_SEV_HIGH, 2, 80);
    int c = dp_alarms_declare(al, "P1", "vib", "", "", DP_SEV_HIGH, 2, 7);
    dp_alarms_condition(al, b, true, 85);
    dp_alarms_condition(al, a, true, 0.5);
    dp_alarms_condition(al, c, true, 9);
    cr_assert(info(b).first_out);
    cr_assert_not(info(a).first_out);
    cr_assert_not(info(c).first_out, "no group, no first-out");
    cr_assert(evs[0].first_out);
    cr_assert_not(evs[1].first_out);
    cr_assert(strstr(evs[0].text, "first out") != NULL);
    /* While one of the group is still active, the mark stays where it is. */
    dp_alarms_condition(al, b, false, 70);
    dp_alarms_condition(al, b, true, 85);
    cr_assert_not(info(b).first_out);
    /* Once the whole group is clear, the next to activate is first out. */
    dp_alarms_condition(al, a, false, 2);
    dp_alarms_condition(al, b, false, 70);
    dp_alarms_condition(al, a, true, 0.2);
    cr_assert(info(a).first_out);
    cr_assert_not(info(b).first_out);
}

Test(alarms, a_reload_retires_what_it_no_longer_declares)
{
    int a = dp_alarms_declare(al, "P1", "vib", "", "", DP_SEV_HIGH, 2, 7);
    int b = dp_alarms_declare(al, "P1", "temp", "", "", DP_SEV_LOW, 4, 80);
    int c = dp_alarms_declare(al, "P2", "vib", "", "", DP_SEV_HIGH, 2, 7);
    dp_alarms_condition(al, a, true, 9);
    dp_alarms_condition(al, c, true, 9);
    /* The new version of P1 declares only temp, and a new alarm. */
    dp_alarms_begin(al, "P1");
    cr_assert_eq(dp_alarms_declare(al, "P1", "temp", "", "", DP_SEV_LOW, 4, 85), b);
    int d = dp_alarms_declare(al, "P1", "flow", "", "", DP_SEV_LOW, 4, 1);
    dp_alarms_end(al, "P1", true);
    dp_alarm_info_t i = info(a);
    cr_assert(i.retired);
    cr_assert_not(i.active, "an active alarm is cleared when retired");
    cr_assert_eq(i.state, DP_ALARM_NORMAL);
    cr_assert_str_eq(evs[nevs - 1].state, "cleared");
    cr_assert_str_eq(evs[nevs - 1].name, "vib");
    cr_assert_not(info(b).retired);
    cr_assert_not(info(d).retired);
    cr_assert_not(info(c).retired, "another twin's alarm is untouched");
    cr_assert(info(c).active);
    /* Operators cannot act on a retired alarm. */
    char *err = NULL;
    cr_assert_eq(dp_alarms_shelve(al, "P1", "vib", 60000000, "op", &err), DP_ENOENT);
    cr_assert_str_eq(err, "no alarm \"vib\" in twin P1");
    free(err);
    /* A failed reload retires only what it first declared. */
    dp_alarms_begin(al, "P1");
    int e = dp_alarms_declare(al, "P1", "level", "", "", DP_SEV_LOW, 4, 1);
    dp_alarms_end(al, "P1", false);
    cr_assert(info(e).retired);
    cr_assert_not(info(b).retired);
    cr_assert_not(info(d).retired);
    /* Declared again later: back in the list. */
    dp_alarms_begin(al, "P1");
    cr_assert_eq(dp_alarms_declare(al, "P1", "vib", "", "", DP_SEV_HIGH, 2, 7), a);
    dp_alarms_end(al, "P1", true);
    cr_assert_not(info(a).retired);
    cr_assert(info(b).retired, "temp was not declared this time");
}

Test(alarms, names_of_states_and_severities)
{
    cr_assert_str_eq(dp_alarm_state_name(DP_ALARM_RTN_UNACKED), "rtn_unacked");
    cr_assert_str_eq(dp_alarm_state_name((dp_alarm_state_t)42), "?");
    cr_assert_str_eq(dp_severity_name(DP_SEV_CRITICAL), "critical");
    cr_assert_eq(dp_severity_parse("medium"), DP_SEV_MEDIUM);
    cr_assert_eq(dp_severity_parse("urgent"), DP_EINVAL);
}

Test(alarms, no_listener_is_fine)
{
    dp_alarms_t *quiet = dp_alarms_new(clk, NULL, NULL);
    int a = dp_alarms_declare(quiet, "P1", "x", NULL, NULL, DP_SEV_LOW, 4, NAN);
    dp_alarms_condition(quiet, a, true, NAN);
    cr_assert_eq(dp_alarms_ack(quiet, "P1", "x", NULL, NULL), 0);
    dp_alarms_free(quiet);
    dp_alarms_free(NULL);
}

/* ---- through a plant and doppel.alarm --------------------------------- */

static const char *plant_lua =
    "twin 'P1' { script = 'p1.lua', tags = { vib = {}, running = {} } }\n"
    "twin 'P2' { script = 'p2.lua' }\n";

static const char *p1_lua =
    "local alarm = require 'doppel.alarm'\n"
    "local vib = alarm.limit { name = 'vib', high = 7, hysteresis = 1, on_delay = '30s',\n"
    "  off_delay = '10s', severity = 'high', tag = 'vib_alarm', group = 'trip',\n"
    "  suppress_when = function() return tags.running.value == false end }\n"
    "twin.on_change('vib', function(v) vib:update(v) end)\n"
    "function shelve(d) return vib:shelve(d, 'op') end\n";

static const char *p2_lua = "local alarm = require 'doppel.alarm'\n"
                            "function count(f) return #alarm.list(f) end\n"
                            "function ack(n) return alarm.ack(n, 'op2') end\n"
                            "function st(n) local i = alarm.get(n); return i and i.state end\n";

static void set_num(dp_plant_t *p, const char *tag, double v)
{
    dp_store_t *s = dp_plant_store(p);
    dp_value_t val = dp_num(v);
    dp_store_write(s, dp_store_find(s, tag), &val, dp_clock_now(dp_plant_clock(p)), DP_Q_GOOD);
}

/* Calls global `fn` of a twin with one string argument; returns its result as a string. */
static void call(dp_plant_t *p, const char *twin, const char *code, char *out, size_t size)
{
    dp_sandbox_t *sb = dp_twin_sandbox(dp_plant_twin(p, twin));
    lua_State *L = dp_sandbox_state(sb);
    char *err = NULL;
    cr_assert_eq(dp_sandbox_load(sb, code, strlen(code), "=test", &err), 0, "%s", err);
    cr_assert_eq(dp_sandbox_call(sb, 0, 1, &err, NULL), DP_SB_OK, "%s", err);
    snprintf(out, size, "%s", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
}

Test(alarms, a_twin_drives_the_plant_list, .init = NULL, .fini = NULL)
{
    nevs = 0;
    dp_log_set_level(DP_LOG_WARN);
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua", plant_lua);
    th_write(dir, "p1.lua", p1_lua);
    th_write(dir, "p2.lua", p2_lua);
    dp_plant_t *p = th_open(dir);
    dp_plant_on_event(p, on_event, NULL);
    dp_alarms_t *list = dp_plant_alarms(p);
    cr_assert_eq(dp_alarms_count(list), 1);
    int id = dp_alarms_find(list, "P1", "vib");
    cr_assert_geq(id, 0);

    /* Beyond the limit: activates 30 s later by the timer, without new samples. */
    set_num(p, "P1.vib", 8);
    dp_plant_run_until(p, T0 + 29 * DP_US_PER_SEC);
    cr_assert_eq(nevs, 0);
    dp_plant_run_until(p, T0 + 31 * DP_US_PER_SEC);
    cr_assert_eq(nevs, 1);
    cr_assert_str_eq(evs[0].state, "active");
    cr_assert_eq(evs[0].ts, T0 + 30 * DP_US_PER_SEC);
    cr_assert(evs[0].first_out);
    dp_alarm_info_t i;
    dp_alarms_get(list, id, &i);
    cr_assert_eq(i.state, DP_ALARM_UNACKED);
    cr_assert_eq(i.severity, DP_SEV_HIGH);
    cr_assert_eq(i.priority, 2, "priority follows severity");
    cr_assert_float_eq(i.limit, 7, 1e-12);
    dp_store_t *s = dp_plant_store(p);
    cr_assert(dp_store_get(s, dp_store_find(s, "P1.vib_alarm"))->v.u.b);

    /* Another twin sees and acknowledges it. */
    char out[256];
    call(p, "P2", "return count { active = true }", out, sizeof out);
    cr_assert_str_eq(out, "1");
    call(p, "P2", "return count { twin = 'P9' }", out, sizeof out);
    cr_assert_str_eq(out, "0");
    call(p, "P2", "return ack('P1.vib')", out, sizeof out);
    cr_assert_str_eq(out, "true");
    call(p, "P2", "return select(2, ack('P1.vib'))", out, sizeof out);
    cr_assert_str_eq(out, "alarm P1.vib needs no acknowledgement (already acknowledged)");
    call(p, "P2", "return select(2, ack('P1.none'))", out, sizeof out);
    cr_assert_str_eq(out, "no alarm \"none\" in twin P1");
    call(p, "P2", "return st('P1.vib')", out, sizeof out);
    cr_assert_str_eq(out, "acked");
    cr_assert_str_eq(evs[1].by, "twin:P2 (for op2)");

    /* Inside the hysteresis band it stays active; below it, clears after 10 s. */
    set_num(p, "P1.vib", 6.5);
    dp_plant_run_until(p, T0 + 60 * DP_US_PER_SEC);
    cr_assert_eq(nevs, 2);
    set_num(p, "P1.vib", 5);
    dp_plant_run_until(p, T0 + 69 * DP_US_PER_SEC);
    cr_assert_eq(nevs, 2);
    dp_plant_run_until(p, T0 + 71 * DP_US_PER_SEC);
    cr_assert_eq(nevs, 3);
    cr_assert_str_eq(evs[2].state, "cleared");
    cr_assert_not(dp_store_get(s, dp_store_find(s, "P1.vib_alarm"))->v.u.b);
    dp_alarms_get(list, id, &i);
    cr_assert_eq(i.state, DP_ALARM_NORMAL);

    /* Shelved from Lua; the plant's 1 s tick unshelves it on expiry. */
    call(p, "P1", "return shelve('1min')", out, sizeof out);
    cr_assert_str_eq(out, "true");
    dp_plant_run_until(p, T0 + 130 * DP_US_PER_SEC);
    dp_alarms_get(list, id, &i);
    cr_assert(i.shelved);
    dp_plant_run_until(p, T0 + 131 * DP_US_PER_SEC);
    dp_alarms_get(list, id, &i);
    cr_assert_not(i.shelved);
    cr_assert_str_eq(evs[nevs - 1].state, "unshelved");
    cr_assert_str_eq(evs[nevs - 1].by, "expiry");

    /* suppress_when: a stopped pump's vibration is not annunciated. */
    dp_value_t off = dp_bool(false);
    dp_store_write(s, dp_store_find(s, "P1.running"), &off, dp_clock_now(dp_plant_clock(p)),
                   DP_Q_GOOD);
    set_num(p, "P1.vib", 9);
    dp_plant_run_until(p, T0 + 200 * DP_US_PER_SEC);
    dp_alarms_get(list, id, &i);
    cr_assert(i.suppressed);
    cr_assert(i.active);
    cr_assert_eq(i.state, DP_ALARM_NORMAL);

    /* Bad arguments raise naming what is wrong. */
    call(p, "P2",
         "local a = require 'doppel.alarm'\n"
         "local ok, e = pcall(a.limit, { name = 'x', high = 1, low = 2 }); return e",
         out, sizeof out);
    cr_assert(strstr(out, "alarm.limit: give exactly one of high or low") != NULL, "%s", out);
    call(p, "P2",
         "local a = require 'doppel.alarm'\n"
         "local ok, e = pcall(a.shelve, 'P1.vib', -1); return e",
         out, sizeof out);
    cr_assert(strstr(out, "alarm.shelve: d must be a duration >= 0") != NULL, "%s", out);

    /* A reload keeps the list's state and does not re-raise. */
    int before = nevs;
    cr_assert_eq(dp_plant_reload(p, "P1", NULL), 0);
    cr_assert_eq(dp_alarms_count(list), 1);
    dp_alarms_get(list, id, &i);
    cr_assert(i.active);
    dp_plant_run_until(p, T0 + 300 * DP_US_PER_SEC);
    cr_assert_eq(nevs, before);

    /* A new version without the alarm retires it: gone from the Lua list. */
    th_write(dir, "p1.lua", "twin.tag('vib_alarm')\n");
    cr_assert_eq(dp_plant_reload(p, "P1", NULL), 0);
    dp_alarms_get(list, id, &i);
    cr_assert(i.retired);
    call(p, "P2", "return count()", out, sizeof out);
    cr_assert_str_eq(out, "0");
    call(p, "P2", "return st('P1.vib')", out, sizeof out);
    cr_assert_str_eq(out, "nil");

    dp_plant_free(p);
    th_rmdir(dir);
}
