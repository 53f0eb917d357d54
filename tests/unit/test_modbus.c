/* The Modbus drivers without sockets: map errors refused at load (naming
 * twin, tag and field), device settings, and a client reading this plant's
 * own modbus_server in process in virtual time (every type through the
 * server's encoder and the client's decoder). */
#include "unit/harness.h"

#include "drivers/driver.h"
#include "drivers/modbus/modbus.h"
#include "runtime/command.h"

static char *fails(const char *plant)
{
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua", plant);
    th_write(dir, "t.lua", "");
    char *err = th_open_fails(dir);
    th_rmdir(dir);
    return err;
}

static void expect_error(const char *plant, const char *needle)
{
    char *err = fails(plant);
    cr_assert_not_null(strstr(err, needle), "error \"%s\" lacks \"%s\"", err, needle);
    free(err);
}

#define DEV "device 'plc' { driver = 'modbus', host = '127.0.0.1', port = 1502 }\n"

Test(modbus, map_errors_name_twin_tag_and_field)
{
    expect_error(DEV "twin 'P1' { script = 't.lua', tags = {\n"
                     "  a = { device = 'plc', address = 10, type = 'f32' },\n"
                     "  b = { device = 'plc', address = 11 } } }\n",
                 "twin P1, tag b: address: holding 11 (u16) overlaps tag P1.a");
    expect_error(DEV "twin 'P1' { script = 't.lua', tags = {\n"
                     "  a = { device = 'plc', address = 1, type = 'float32' } } }\n",
                 "twin P1, tag a: type: unknown value \"float32\"");
    expect_error(DEV "twin 'P1' { script = 't.lua', tags = {\n"
                     "  a = { device = 'plc', address = 65535, type = 'u32' } } }\n",
                 "twin P1, tag a: address: 65535 + 2 registers");
    expect_error(DEV "twin 'P1' { script = 't.lua', tags = {\n"
                     "  a = { device = 'plc', address = 70000 } } }\n",
                 "twin P1, tag a: address:");
    expect_error(DEV "twin 'P1' { script = 't.lua', tags = {\n"
                     "  a = { device = 'plc', area = 'coil', address = 1, type = 'u16' } } }\n",
                 "twin P1, tag a: type: \"u16\" needs registers");
    expect_error(DEV "twin 'P1' { script = 't.lua', tags = {\n"
                     "  a = { device = 'plc', address = 1, type = 'string' } } }\n",
                 "twin P1, tag a: count:");
    expect_error(DEV "twin 'P1' { script = 't.lua', tags = {\n"
                     "  a = { device = 'plc', address = 1, scale = 0 } } }\n",
                 "twin P1, tag a: scale:");
    expect_error(DEV "twin 'P1' { script = 't.lua', tags = {\n"
                     "  a = { device = 'plc', address = 1, adress = 2 } } }\n",
                 "unknown field \"adress\"");
    /* Different unit ids or areas do not overlap; distinct bits share a register. */
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua",
             DEV "twin 'P1' { script = 't.lua', tags = {\n"
                 "  a = { device = 'plc', address = 10, type = 'f32' },\n"
                 "  b = { device = 'plc', address = 11, unit_id = 2 },\n"
                 "  c = { device = 'plc', address = 11, area = 'input' },\n"
                 "  d = { device = 'plc', address = 20, type = 'bit', bit = 0 },\n"
                 "  e = { device = 'plc', address = 20, type = 'bit', bit = 1 } } }\n");
    th_write(dir, "t.lua", "");
    char path[600], *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    dp_plant_opts_t o = {.path = path, .start = T0, .check_only = true};
    dp_plant_t *p = dp_plant_open(&o, &err);
    cr_assert_not_null(p, "%s", err);
    dp_plant_free(p);
    th_rmdir(dir);
}

Test(modbus, device_settings_errors)
{
    expect_error("device 'plc' { driver = 'modbus' }\n", "device plc: host: give exactly one");
    expect_error("device 'plc' { driver = 'modbus', host = 'a', device = '/dev/ttyS0' }\n",
                 "device plc: host: give exactly one");
    expect_error("device 'plc' { driver = 'modbus', host = 'a', port = 0 }\n", "device plc: port:");
    expect_error("device 'plc' { driver = 'modbus', device = '/dev/ttyS0', parity = 'mark' }\n",
                 "device plc: parity: unknown value \"mark\"");
    expect_error("device 'bus' { driver = 'modbus', device = '/dev/ttyS0', unit_id = 0 }\n"
                 "twin 'P1' { script = 't.lua', tags = { a = { device = 'bus', address = 1 } } }\n",
                 "twin P1, tag a: unit_id: 0 is broadcast");
    expect_error("device 'hmi' { driver = 'modbus_server', listen = 'localhost', map = {} }\n",
                 "device hmi: listen: expected \"host:port\"");
    expect_error("device 'hmi' { driver = 'modbus_server' }\n",
                 "device hmi: missing required field \"map\"");
    expect_error("device 'hmi' { driver = 'modbus_server', map = {\n"
                 "  { tag = 'P1.a', address = 0, type = 'f32' },\n"
                 "  { tag = 'P1.b', address = 1 } } }\n",
                 "device hmi: map: entry 2 (tag P1.b): address: holding 1 overlaps entry 1");
    expect_error("device 'hmi' { driver = 'modbus_server', map = {\n"
                 "  { address = 0 } } }\n",
                 "device hmi: map: entry 1: missing required field \"tag\"");
    expect_error("device 'hmi' { driver = 'modbus_server', map = {\n"
                 "  { tag = 'P1.a', address = 0, type = 'dword' } } }\n",
                 "entry 1: type: unknown value \"dword\"");
    expect_error("device 'hmi' { driver = 'modbus_server', map = {\n"
                 "  { tag = 'P1.nope', address = 0 } } }\n"
                 "twin 'P1' { script = 't.lua', tags = { a = {} } }\n",
                 "device hmi: map: entry 1: tag: no tag \"P1.nope\"");
    expect_error("device 'hmi' { driver = 'modbus_server', map = {} }\n"
                 "twin 'P1' { script = 't.lua', tags = { a = { device = 'hmi' } } }\n",
                 "twin P1, tag a: device: a modbus_server exposes tags through its `map`");
}

Test(modbus, tcp_needs_real_time)
{
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua",
             DEV
             "twin 'P1' { script = 't.lua', tags = { a = { device = 'plc', address = 1 } } }\n");
    th_write(dir, "t.lua", "");
    char path[600], *err = NULL;
    snprintf(path, sizeof path, "%s/plant.lua", dir);
    dp_plant_opts_t o = {.path = path, .start = T0};
    dp_plant_t *p = dp_plant_open(&o, &err);
    cr_assert_not_null(p, "%s", err);
    cr_assert_lt(dp_plant_start(p, &err), 0);
    cr_assert_not_null(strstr(err, "device plc: Modbus TCP needs real time"), "%s", err);
    free(err);
    dp_plant_free(p);
    th_rmdir(dir);
}

/* The field twin holds source values; the hmi server exposes them; the scada
 * twin's tags poll them back through the client in process. */
static const char *loopback_plant =
    "device 'hmi' { driver = 'modbus_server', listen = '127.0.0.1:0', map = {\n"
    "  { tag = 'field.u16', address = 0, type = 'u16' },\n"
    "  { tag = 'field.i32', address = 1, type = 'i32', order = 'CDAB' },\n"
    "  { tag = 'field.f32', address = 3, type = 'f32', order = 'DCBA' },\n"
    "  { tag = 'field.f64', address = 5, type = 'f64', order = 'BADC' },\n"
    "  { tag = 'field.i64', address = 9, type = 'i64', order = 'CDAB' },\n"
    "  { tag = 'field.str', address = 13, type = 'string', count = 4 },\n"
    "  { tag = 'field.scaled', area = 'input', address = 0, type = 'i16', scale = 0.1 },\n"
    "  { tag = 'field.b0', address = 20, type = 'bit', bit = 0 },\n"
    "  { tag = 'field.b5', address = 20, type = 'bit', bit = 5 },\n"
    "  { tag = 'field.coil', area = 'coil', address = 7 },\n"
    "} }\n"
    "device 'plc' { driver = 'modbus', server = 'hmi' }\n"
    "twin 'field' { script = 't.lua', tags = { u16 = {}, i32 = {}, f32 = {}, f64 = {}, i64 = {},\n"
    "  str = {}, scaled = {}, b0 = {}, b5 = {}, coil = {} } }\n"
    "twin 'scada' { script = 's.lua', tags = {\n"
    "  u16 = { device = 'plc', address = 0, every = '1s' },\n"
    "  i32 = { device = 'plc', address = 1, type = 'i32', order = 'CDAB', every = '1s' },\n"
    "  f32 = { device = 'plc', address = 3, type = 'f32', order = 'DCBA', every = '1s' },\n"
    "  f64 = { device = 'plc', address = 5, type = 'f64', order = 'BADC', every = '1s' },\n"
    "  i64 = { device = 'plc', address = 9, type = 'i64', order = 'CDAB', every = '1s' },\n"
    "  str = { device = 'plc', address = 13, type = 'string', count = 4, every = '1s' },\n"
    "  scaled = { device = 'plc', area = 'input', address = 0, type = 'i16', scale = 0.1,\n"
    "             every = '1s' },\n"
    "  word = { device = 'plc', address = 20, every = '1s' },\n"
    "  coil = { device = 'plc', area = 'coil', address = 7, every = '1s' },\n"
    "  missing = { device = 'plc', address = 300, every = '1s' },\n"
    "} }\n";

Test(modbus, virtual_time_reads_the_plant_server_in_process)
{
    char *dir = th_tmpdir();
    th_write(dir, "plant.lua", loopback_plant);
    th_write(dir, "t.lua", "");
    th_write(dir, "s.lua",
             "twin.tag('requests')\n"
             "twin.every('1s', function()\n"
             "  local st = twin.device_stats('plc')\n"
             "  tags.requests = st.requests\n"
             "end)\n");
    dp_plant_t *p = th_open(dir);
    dp_store_t *s = dp_plant_store(p);
    th_set(p, "field.u16", 54321, T0);
    th_set(p, "field.i32", -123456789, T0);
    th_set(p, "field.f32", -273.15, T0);
    th_set(p, "field.f64", 3.141592653589793, T0);
    th_set(p, "field.i64", -9007199254740992.0, T0);
    th_set(p, "field.scaled", -12.3, T0);
    dp_value_t v = dp_str("pump");
    dp_store_write(s, dp_store_find(s, "field.str"), &v, T0, DP_Q_GOOD);
    v = dp_bool(true);
    dp_store_write(s, dp_store_find(s, "field.b0"), &v, T0, DP_Q_GOOD);
    dp_store_write(s, dp_store_find(s, "field.b5"), &v, T0, DP_Q_GOOD);
    dp_store_write(s, dp_store_find(s, "field.coil"), &v, T0, DP_Q_GOOD);
    dp_plant_run_until(p, T0 + 3 * DP_US_PER_SEC);

    cr_assert_eq(th_num(p, "scada.u16"), 54321);
    cr_assert_eq(th_num(p, "scada.i32"), -123456789);
    cr_assert_eq(th_num(p, "scada.f32"), (double)-273.15f);
    cr_assert_eq(th_num(p, "scada.f64"), 3.141592653589793);
    cr_assert_eq(th_num(p, "scada.i64"), -9007199254740992.0);
    cr_assert_float_eq(th_num(p, "scada.scaled"), -12.3, 1e-9);
    cr_assert_eq(th_num(p, "scada.word"), 0x21);
    const dp_tag_t *t = dp_store_get(s, dp_store_find(s, "scada.str"));
    cr_assert_eq(t->v.type, DP_STR);
    cr_assert_str_eq(t->v.u.s, "pump");
    t = dp_store_get(s, dp_store_find(s, "scada.coil"));
    cr_assert(t->v.type == DP_BOOL && t->v.u.b);
    t = dp_store_get(s, dp_store_find(s, "scada.missing"));
    cr_assert_eq(t->quality, DP_Q_BAD);
    cr_assert_str_eq(t->reason, "exception 2: illegal data address");
    cr_assert_eq(th_eval(p, "scada",
                         "tags.missing.reason == 'exception 2: illegal data address' "
                         "and 1 or 0"),
                 1);
    cr_assert_gt(th_num(p, "scada.requests"), 5);
    cr_assert_eq(th_eval(p, "scada", "twin.device_stats('plc').exceptions > 0 and 1 or 0"), 1);
    cr_assert_eq(th_eval(p, "scada", "twin.device_stats('nope') == nil and 1 or 0"), 1);

    /* A value the server's map cannot hold reads as 0. */
    th_set(p, "field.u16", 70000, T0 + 3 * DP_US_PER_SEC);
    dp_plant_run_until(p, T0 + 5 * DP_US_PER_SEC);
    cr_assert_eq(th_num(p, "scada.u16"), 0);
    dp_plant_free(p);
    th_rmdir(dir);
}

typedef struct {
    int n;
    dp_cmd_outcome_t outcome;
    char reason[300];
} outcome_t;

static void on_cmd(const dp_cmd_t *cmd, void *ud)
{
    outcome_t *o = ud;
    if (cmd->outcome == DP_CMD_PENDING)
        return;
    o->n++;
    o->outcome = cmd->outcome;
    snprintf(o->reason, sizeof o->reason, "%s", cmd->reason);
}

static outcome_t submit(dp_plant_t *p, const char *tag, dp_value_t v)
{
    outcome_t o = {0};
    dp_guard_submit(dp_plant_guard(p), "test", tag, &v, on_cmd, &o);
    dp_plant_run_until(p, dp_clock_now(dp_plant_clock(p)) + DP_US_PER_SEC);
    cr_assert_eq(o.n, 1, "%s: %d outcomes", tag, o.n);
    return o;
}

Test(modbus, virtual_time_writes_go_through_the_plant_server)
{
    char *dir = th_tmpdir();
    th_write(
        dir, "plant.lua",
        "device 'hmi' { driver = 'modbus_server', listen = '127.0.0.1:0', map = {\n"
        "  { tag = 'field.sp', address = 0 },\n"
        "  { tag = 'field.f', address = 1, type = 'f32', order = 'CDAB' },\n"
        "  { tag = 'field.b2', address = 3, type = 'bit', bit = 2 },\n"
        "  { tag = 'field.b4', address = 3, type = 'bit', bit = 4 },\n"
        "  { tag = 'field.run', area = 'coil', address = 0 },\n"
        "  { tag = 'field.ro', address = 4 },\n"
        "} }\n"
        "device 'plc' { driver = 'modbus', server = 'hmi' }\n"
        "twin 'field' { script = 't.lua', tags = {\n"
        "  sp = { writable = true, min = 0, max = 100 }, f = { writable = true },\n"
        "  b2 = { writable = true }, b4 = { writable = true }, run = { writable = true },\n"
        "  ro = {} } }\n"
        "twin 'scada' { script = 't.lua', tags = {\n"
        "  sp = { device = 'plc', address = 0, writable = true },\n"
        "  f = { device = 'plc', address = 1, type = 'f32', order = 'CDAB', writable = true },\n"
        "  b2 = { device = 'plc', address = 3, type = 'bit', bit = 2, writable = true },\n"
        "  run = { device = 'plc', area = 'coil', address = 0, writable = true },\n"
        "  ro = { device = 'plc', address = 4, writable = true } } }\n");
    th_write(dir, "t.lua", "");
    dp_plant_t *p = th_open(dir);
    dp_store_t *s = dp_plant_store(p);
    dp_value_t t = dp_bool(true);
    dp_store_write(s, dp_store_find(s, "field.b4"), &t, T0, DP_Q_GOOD);

    outcome_t o = submit(p, "scada.sp", dp_num(42));
    cr_assert_eq(o.outcome, DP_CMD_DONE, "%s", o.reason);
    cr_assert_eq(th_num(p, "field.sp"), 42);
    o = submit(p, "scada.f", dp_num(-1.25));
    cr_assert_eq(o.outcome, DP_CMD_DONE, "%s", o.reason);
    cr_assert_eq(th_num(p, "field.f"), -1.25);
    o = submit(p, "scada.b2", dp_bool(true));
    cr_assert_eq(o.outcome, DP_CMD_DONE, "%s", o.reason);
    cr_assert(dp_store_get(s, dp_store_find(s, "field.b2"))->v.u.b);
    /* The mask write changed only bit 2: bit 4 kept its value, no command. */
    cr_assert(dp_store_get(s, dp_store_find(s, "field.b4"))->v.u.b);
    o = submit(p, "scada.run", dp_bool(true));
    cr_assert_eq(o.outcome, DP_CMD_DONE, "%s", o.reason);
    cr_assert(dp_store_get(s, dp_store_find(s, "field.run"))->v.u.b);

    /* The server's guard refuses: the client's command fails with why. */
    o = submit(p, "scada.sp", dp_num(500));
    cr_assert_eq(o.outcome, DP_CMD_FAILED);
    cr_assert_not_null(strstr(o.reason, "exception 3: illegal data value (field.sp: max"), "%s",
                       o.reason);
    cr_assert_eq(th_num(p, "field.sp"), 42);
    o = submit(p, "scada.ro", dp_num(1));
    cr_assert_eq(o.outcome, DP_CMD_FAILED);
    cr_assert_not_null(strstr(o.reason, "field.ro"), "%s", o.reason);
    dp_plant_free(p);
    th_rmdir(dir);
}
